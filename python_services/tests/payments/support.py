"""Shared support of the payments tests: a restartable in-process server."""

from __future__ import annotations

from pathlib import Path

import grpc
from shop.payments.v1 import payment_service_pb2_grpc

from shop_services.payments import PaymentsServer, create_payments_server
from support import wait_serving


class PaymentsHarness:
    """Starts and restarts an in-process payments server on one database file."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.server: PaymentsServer | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: payment_service_pb2_grpc.PaymentServiceAsyncStub | None = None

    async def start(self) -> payment_service_pb2_grpc.PaymentServiceAsyncStub:
        self.server = await create_payments_server("127.0.0.1:0", self.db_path)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        await wait_serving(self.channel, "shop.payments.v1.PaymentService")
        self.stub = payment_service_pb2_grpc.PaymentServiceStub(self.channel)
        return self.stub

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.server is not None:
            await self.server.stop(grace=5)
            self.server = None

    async def restart(self) -> payment_service_pb2_grpc.PaymentServiceAsyncStub:
        await self.stop()
        return await self.start()
