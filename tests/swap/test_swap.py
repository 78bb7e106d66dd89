"""Swapping a service's implementation live, and canarying one.

A private stack (the swaps would disturb the session's) runs under a steady
mixed load of about 200 RPC/s through Envoy's public listener (catalog and
inventory reads plus PlaceOrders, whose sagas reserve and commit stock in
whichever inventory is in place). While it runs, inventory is swapped
node -> python -> go -> node with `shopstack.swap`, the code behind
`make swap`. No call may fail, every implementation must have served calls,
and the stock must add up afterwards: every implementation works on the same
database file with the same schema (data/inventory_schema.sql), so nothing is
migrated and nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import make_stack
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_grpc
from shopstack import swap
from shopstack.stack import Stack

IMPLS = ["node", "python", "go"]
SKU = "sku-gift-card-25"
RATE_PER_SECOND = 200
ORDER_EVERY = 10  # one call in ten is a PlaceOrder; the rest are reads
CALL_TIMEOUT = 10.0


def available_impls() -> list[str]:
    """The inventory implementations built on this checkout."""
    root = Path(__file__).resolve().parents[2]
    found = ["node", "python"]
    if (root / ".tmp" / "bin" / "shop-inventory").exists() or shutil.which("shop-inventory"):
        found.append("go")
    return [impl for impl in IMPLS if impl in found]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(tmp_path_factory.mktemp("swap"))
    try:
        stack.up(timeout=120)
        yield stack
    finally:
        stack.down()


def import_stock(stack: Stack, sku: str, on_hand: int) -> None:
    with stack.internal_channel() as channel:
        stub = inventory_grpc.InventoryServiceStub(channel)
        stub.ImportStock(iter([inventory_pb.ImportStockRequest(sku=sku, on_hand=on_hand)]), timeout=CALL_TIMEOUT)


def stock_of(stack: Stack, sku: str, metadata: tuple[tuple[str, str], ...] = ()) -> inventory_pb.StockLevel:
    with stack.public_channel() as channel:
        stub = inventory_grpc.InventoryServiceStub(channel)
        reply = stub.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT, metadata=metadata)
    return reply.levels[0]


class Load:
    """An open-loop mixed load at a fixed rate, counting outcomes per kind."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        # The load's one customer, signed in once.
        self.auth = (("authorization", f"Bearer {stack.token('swap-load')}"),)
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.failures: list[str] = []
        self.confirmed_units = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the load generator did not stop"

    async def _run(self) -> None:
        async with self.stack.aio_channel(self.stack.public_addr, identity=None) as channel:
            catalog = catalog_grpc.CatalogServiceStub(channel)
            inventory = inventory_grpc.InventoryServiceStub(channel)
            orders = orders_grpc.OrderServiceStub(channel)
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / RATE_PER_SECOND
            next_at = time.monotonic()
            n = 0
            while not self._stop.is_set():
                n += 1
                if n % ORDER_EVERY == 0:
                    call = self._order(orders)
                elif n % 2:
                    call = self._read(
                        "GetProduct",
                        catalog.GetProduct(catalog_pb.GetProductRequest(product_id=SKU), timeout=CALL_TIMEOUT),
                    )
                else:
                    call = self._read(
                        "GetStock", inventory.GetStock(inventory_pb.GetStockRequest(skus=[SKU]), timeout=CALL_TIMEOUT)
                    )
                task = asyncio.create_task(call)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)

    async def _read(self, kind: str, call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as err:
            self.failures.append(f"{kind}: {err.code().name} {err.details()}")
            self.outcomes[(kind, err.code().name)] += 1
        else:
            self.outcomes[(kind, "OK")] += 1

    async def _order(self, orders: orders_grpc.OrderServiceStub) -> None:
        request = orders_pb.PlaceOrderRequest(
            request_id=f"swap-{uuid.uuid4()}",
            customer_id="swap-load",
            payment_token="tok_success",
            lines=[orders_pb.OrderLine(product_id=SKU, quantity=1)],
        )
        try:
            reply = await orders.PlaceOrder(request, timeout=CALL_TIMEOUT, metadata=self.auth)
        except grpc.aio.AioRpcError as err:
            self.failures.append(f"PlaceOrder: {err.code().name} {err.details()}")
            self.outcomes[("PlaceOrder", err.code().name)] += 1
            return
        state = orders_pb.OrderState.Name(reply.order.state)
        self.outcomes[("PlaceOrder", state)] += 1
        if reply.order.state == orders_pb.ORDER_STATE_CONFIRMED:
            self.confirmed_units += 1
        else:
            reason = orders_pb.OrderFailureReason.Name(reply.order.failure_reason)
            self.failures.append(f"PlaceOrder ended {state} ({reason}): {reply.order.failure_message}")


def served(stack: Stack, impl: str) -> int:
    cluster = f"inventory-{impl}"
    return stack.envoy_stats(f"cluster.{cluster}.upstream_rq_total").get(f"cluster.{cluster}.upstream_rq_total", 0)


def test_live_swaps_under_load_fail_no_call_and_keep_the_stock(shop: Stack) -> None:
    impls = available_impls()
    import_stock(shop, SKU, 100_000)
    before = stock_of(shop, SKU)
    load = Load(shop)
    load.start()
    served_by: dict[str, int] = {}
    try:
        current = impls[0]
        for impl in [*impls[1:], impls[0]]:
            time.sleep(1.5)  # let the current implementation take load for a while
            served_by[current] = served(shop, current)
            swap.swap(shop, "inventory", impl)
            assert shop.routing["inventory"] == {impl: 100}
            assert shop.service_health(shop.topology.impl_of("inventory", impl)) == "SERVING"
            current = impl
        time.sleep(1.5)
    finally:
        load.stop()
    assert all(served_by[impl] > 0 for impl in impls), served_by
    total = sum(load.outcomes.values())
    assert not load.failures, f"{len(load.failures)} of {total} calls failed, first: {load.failures[:5]}"
    assert total > RATE_PER_SECOND * 3, load.outcomes  # the load really ran
    after = stock_of(shop, SKU)
    # Nothing lost or double-counted across four implementations' hands.
    assert after.reserved == 0, after
    assert after.on_hand == before.on_hand - load.confirmed_units, (before, after, load.confirmed_units)
    # Only the last implementation still runs.
    programs = shop.ctl("status", check=False)
    for impl in impls:
        assert (f"inventory-{impl}" in programs) == (impl == impls[0]), programs


def test_stock_carries_over_a_swap(shop: Stack) -> None:
    sku = f"sku-swap-{uuid.uuid4().hex[:8]}"
    import_stock(shop, sku, 42)
    start = next(iter(shop.routing["inventory"]))
    for impl in [i for i in available_impls() if i != start] + [start]:
        swap.swap(shop, "inventory", impl)
        level = stock_of(shop, sku)
        assert (level.on_hand, level.available) == (42, 42), (impl, level)


def test_a_canary_splits_by_weight_and_the_header_pins_one_implementation(shop: Stack) -> None:
    base = next(iter(shop.routing["inventory"]))
    canary = next(i for i in available_impls() if i != base)
    swap.canary(shop, "inventory", canary, 30)
    try:
        assert shop.routing["inventory"] == {base: 70, canary: 30}
        start = {impl: served(shop, impl) for impl in (base, canary)}
        for _ in range(200):
            stock_of(shop, SKU)
        split = {impl: served(shop, impl) - start[impl] for impl in (base, canary)}
        assert sum(split.values()) >= 200, split
        # 30% of 200 calls: far inside these bounds unless the split is broken.
        assert 20 <= split[canary] <= 100, split

        # At the public edge the pin needs an operator's token.
        operator = ("authorization", f"Bearer {shop.operator_token()}")
        start = {impl: served(shop, impl) for impl in (base, canary)}
        for _ in range(20):
            stock_of(shop, SKU, metadata=(("x-shop-impl", canary), operator))
        pinned = {impl: served(shop, impl) - start[impl] for impl in (base, canary)}
        assert pinned[canary] >= 20 and pinned[base] == 0, pinned
    finally:
        swap.swap(shop, "inventory", base)
    assert shop.routing["inventory"] == {base: 100}
