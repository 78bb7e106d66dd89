"""The default local stack's configuration, committed for readers.

`make up` renders Envoy's and supervisord's configuration into .run/ at run
time. So that a reader finds them where they look, the same render of the
default stack (deploy/stack.toml's ports and implementations, no canary) is
committed as envoy/local/*.yaml and deploy/local/supervisord.conf, with this
repository's path written as /path/to/shop. tests/stack/test_committed_config.py
fails when a render differs from what is committed: whoever changes the
generator, the topology or the protos runs `make render-examples` and commits
the result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from shopstack import envoy, topology
from shopstack.stack import Stack
from shopstack.topology import ROOT

PLACEHOLDER = "/path/to/shop"
ENVOY_DIR = Path("envoy") / "local"
SUPERVISORD_CONF = Path("deploy") / "local" / "supervisord.conf"
REFRESH = "make render-examples"
_NOTE = (
    "# The default local stack as `make up` renders it into .run/, with this repository's path\n"
    f"# written as {PLACEHOLDER}. Refresh with `{REFRESH}`; tests/stack/test_committed_config.py checks it.\n"
)


def _stable(text: str) -> str:
    return text.replace(str(ROOT), PLACEHOLDER)


def render() -> dict[Path, str]:
    """Each committed file (relative to the repository) and its content, rendered now."""
    stack = Stack(run_dir=ROOT / ".run", topology=topology.load(ROOT / "deploy" / "stack.toml"), telemetry=True)
    files: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        envoy.render(stack.topology, out, stack.envoy_mode(), stack.routing)
        for path in sorted(out.glob("*.yaml")):
            header, _, body = path.read_text().partition("\n")
            files[ENVOY_DIR / path.name] = f"{header}\n{_NOTE}{_stable(body)}"
    header, _, body = stack.supervisord_conf().partition("\n")
    files[SUPERVISORD_CONF] = f"{header}\n{_NOTE.replace('#', ';')}{_stable(body)}"
    return files


def write(root: Path = ROOT) -> list[Path]:
    """Write every committed file; returns the ones that changed."""
    changed = []
    for relative, text in render().items():
        path = root / relative
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(relative)
    return changed
