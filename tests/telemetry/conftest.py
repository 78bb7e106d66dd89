"""Fixtures of the telemetry suite: the session stack (tests/conftest.py),
which runs Zipkin and Prometheus beside the shop, and clients of both.

The session starts the backends with the services and does not wait for
them, so the other suites start at once; these tests wait here until Zipkin
and Prometheus answer (Zipkin takes about 20 s to start).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.support import Shop
from shopstack.stack import Stack

from ._backends import Prometheus, Zipkin


@pytest.fixture(scope="session")
def backends(stack: Stack) -> tuple[Zipkin, Prometheus]:
    stack.wait_telemetry(timeout=150)
    return Zipkin(stack), Prometheus(stack)


@pytest.fixture(scope="session")
def zipkin(backends: tuple[Zipkin, Prometheus]) -> Zipkin:
    return backends[0]


@pytest.fixture(scope="session")
def prometheus(backends: tuple[Zipkin, Prometheus]) -> Prometheus:
    return backends[1]


@pytest.fixture(scope="session")
def telemetry_shop(stack: Stack) -> Iterator[Shop]:
    with Shop.open(stack) as opened:
        yield opened
