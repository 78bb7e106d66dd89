"""`make demo` runs its whole tour against a running stack, here the session's.

The tour checks each answer itself (deploy/shopstack/demo.py) and exits
non-zero at the first that is not as promised, so the commands it prints,
which the README shows, keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from shopstack.stack import Stack
from shopstack.topology import ROOT


def test_the_demo_tour_runs_every_step_against_the_running_stack(stack: Stack) -> None:
    routing = {name: dict(weights) for name, weights in stack.routing.items()}
    result = subprocess.run(
        [sys.executable, "-m", "shopstack", "demo"],
        cwd=ROOT,
        env={**os.environ, "SHOP_RUN_DIR": str(stack.run_dir), "PYTHONPATH": str(ROOT / "deploy")},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for step in (
        "list",
        "describe",
        "ListProducts",
        "PlaceOrder",
        "WatchOrder",
        "/v1/products",
        "make canary",
        "grep -h",
    ):
        assert step in output, f"the tour did not show {step!r}:\n{output}"
    assert "The tour is over" in output, output
    # The tour puts back what it changed: the canary's weights.
    state = json.loads(stack.state_file.read_text())
    assert state["routing"] == routing
