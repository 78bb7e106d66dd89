"""Fixtures of the end-to-end suite: the session stack (tests/conftest.py) and
stubs on Envoy's public and internal listeners.

The stack is shared by every e2e test, so tests isolate themselves: a fresh
uuid request_id and customer_id per order, and one catalog SKU per test
wherever exact stock levels are asserted (ImportStock sets it first).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shopstack.stack import Stack

from .support import Shop


@pytest.fixture(scope="session")
def shop(stack: Stack) -> Iterator[Shop]:
    opened = Shop.open(stack)
    yield opened
    opened.close()
