"""A stack read back from its state.json renders every program as it runs.

`make swap`, `make canary` and `make demo` find a running stack through
state.json (shopstack.stack.default_stack) and rewrite supervisord's
configuration; supervisord restarts every program whose configuration
changed. So whatever a test stack runs with that stack.toml does not say
(free ports, every trace sampled, a faster scrape) must come back from
state.json, or a canary restarts the whole stack under the test's feet.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_stack
from shopstack.stack import default_stack


def test_a_running_stack_read_back_renders_the_same_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack(tmp_path / "run")
    stack.render()
    # default_stack keeps a stack's ports only while its supervisord runs:
    # stand in for it with this process.
    (stack.run_dir / "supervisord.pid").write_text(f"{os.getpid()}\n")
    monkeypatch.setenv("SHOP_RUN_DIR", str(stack.run_dir))

    again = default_stack()

    assert again.topology.telemetry == stack.topology.telemetry
    assert again.supervisord_conf() == stack.supervisord_conf()
