"""Fixtures of the abuse suites: stubs on the reliability stack (tests/conftest.py).

That stack's public listener has small limits (RELIABILITY_PUBLIC_LIMITS), so
a flood that fills them takes a few dozen streams; with `--running-stack` the
running stack's own limits apply.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.support import Shop
from shopstack.stack import Stack


@pytest.fixture(scope="module")
def shop(reliability_stack: Stack) -> Iterator[Shop]:
    with Shop.open(reliability_stack) as opened:
        yield opened
