"""Shared support of the orders tests: the harness, request builders, watchers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc

from orders.fakes import Fakes
from shop_services.orders import Dependencies, OrdersServer, SagaSettings, create_orders_server
from support import DEADLINE, wait_serving

# Short backoffs and a quick recovery loop keep the tests fast.
SETTINGS = SagaSettings(step_timeout=20.0, retry_backoff=0.01, recovery_interval=0.2)


def dependencies(fakes: Fakes) -> Dependencies:
    return Dependencies(
        catalog=fakes.addresses["catalog"],
        inventory=fakes.addresses["inventory"],
        payments=fakes.addresses["payments"],
    )


def order_request(
    request_id: str,
    *,
    token: str = "tok_success",
    customer_id: str = "cust-1",
    lines: Sequence[tuple[str, int]] = (("sku-espresso-1kg", 2), ("sku-mug", 1)),
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        request_id=request_id,
        customer_id=customer_id,
        payment_token=token,
        lines=[pb.OrderLine(product_id=p, quantity=q) for p, q in lines],
    )


async def watch_to_end(stub: pb_grpc.OrderServiceAsyncStub, order_id: str) -> list[pb.Order]:
    """Every order WatchOrder sends until the stream ends at a terminal state."""
    call = stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id), timeout=DEADLINE)
    return [message.order async for message in call]


class OrdersHarness:
    """An in-process orders server on the fakes, restartable on the same database."""

    def __init__(self, db_path: Path, fakes: Fakes, settings: SagaSettings = SETTINGS) -> None:
        self.db_path = db_path
        self.fakes = fakes
        self.settings = settings
        self.server: OrdersServer | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> pb_grpc.OrderServiceAsyncStub:
        self.server = await create_orders_server(
            "127.0.0.1:0", self.db_path, dependencies(self.fakes), settings=self.settings
        )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        await wait_serving(self.channel, "shop.orders.v1.OrderService")
        return self.stub

    @property
    def stub(self) -> pb_grpc.OrderServiceAsyncStub:
        assert self.channel is not None
        return pb_grpc.OrderServiceStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.server is not None:
            await self.server.stop(grace=1)
            self.server = None
