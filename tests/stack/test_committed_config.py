"""The committed configuration of the default local stack is what the generator renders.

envoy/local/ (Envoy's bootstrap and dynamic files) and
deploy/local/supervisord.conf are there for readers; they must never drift
from what `make up` actually runs.
"""

from __future__ import annotations

import difflib

import pytest
from shopstack import examples
from shopstack.topology import ROOT

RENDERED = examples.render()


@pytest.mark.parametrize("relative", sorted(RENDERED), ids=str)
def test_the_committed_configuration_is_what_the_generator_renders(relative) -> None:
    path = ROOT / relative
    committed = path.read_text() if path.exists() else ""
    rendered = RENDERED[relative]
    if committed != rendered:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                f"{relative} (committed)",
                f"{relative} (rendered now)",
                n=2,
            )
        )
        pytest.fail(
            f"{relative} differs from what the generator renders now. If the change is meant, "
            f"run `{examples.REFRESH}` and commit the result.\n{diff[:6000]}"
        )


def test_every_committed_file_has_a_generated_header() -> None:
    for relative, text in RENDERED.items():
        assert "do not edit" in text.splitlines()[0], relative
        assert examples.REFRESH in text, relative
        assert str(ROOT) not in text or str(ROOT) == examples.PLACEHOLDER, relative
