"""Fixtures for the orders tests: the three fakes and an in-process orders server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc

from orders.fakes import Fakes
from orders.support import OrdersHarness


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started = await Fakes.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def harness(tmp_path: Path, fakes: Fakes) -> AsyncIterator[OrdersHarness]:
    harness = OrdersHarness(tmp_path / "orders.db", fakes)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
def orders(harness: OrdersHarness) -> pb_grpc.OrderServiceAsyncStub:
    return harness.stub
