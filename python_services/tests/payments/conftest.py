"""Fixtures: a real payments server on 127.0.0.1 port 0 and a client channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shop.payments.v1 import payment_service_pb2_grpc

from payments.support import PaymentsHarness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[PaymentsHarness]:
    harness = PaymentsHarness(tmp_path / "payments.db")
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
def payments(harness: PaymentsHarness) -> payment_service_pb2_grpc.PaymentServiceAsyncStub:
    assert harness.stub is not None
    return harness.stub
