"""Fixtures of the end-to-end suite: the session stack (tests/conftest.py), or
the shop given with --edge, and stubs on Envoy's public and internal listeners.

The stack is shared by every e2e test, so tests isolate themselves: a fresh
uuid request_id and customer_id per order, and one catalog SKU per test
wherever exact stock levels are asserted (ImportStock sets it first).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import running_edge

from .support import Shop


@pytest.fixture(scope="session")
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    """Stubs on the session stack's Envoy, or on the --edge shop's."""
    with Shop.open(running_edge(request.config) or request.getfixturevalue("stack")) as opened:
        yield opened
