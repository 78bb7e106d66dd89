"""One public client asking too much cannot stop checkout.

- Streams, one client: a single anonymous client opens WatchStock streams
  through the public listener until one is refused. The services' per-client
  cap (SHOP_MAX_STREAMS_PER_CLIENT; the client is the address Envoy saw) answers
  RESOURCE_EXHAUSTED naming it, at once; while every stream stays open, three
  concurrent orders confirm, the internal listener serves GetStock, and another
  client (a signed-in customer) still watches.
- Streams, many clients: signed-in customers, each under the cap, fill the
  public budget of every inventory implementation: Envoy refuses with
  RESOURCE_EXHAUSTED naming [limits.public], and orders still confirm (their
  saga's Reserve and Commit use the internal listener's own budget). Once the
  streams close, public GetStock works again.
- Rate: a burst of calls past the public listener's token bucket gets
  RESOURCE_EXHAUSTED for the excess, the internal listener is never rate
  limited, and the public listener serves again a second later.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from e2e.support import CALL_TIMEOUT, OWN_CONNECTION, Shop, describe_order, wait_for
from reliability import Outcome, record
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_pbg
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_pbg
from shop.orders.v1 import order_service_pb2 as orders_pb

# Streams one client connection carries before the flood opens another.
_STREAMS_PER_CONNECTION = 90
# The most streams a flood here opens from one test process.
_MOST_STREAMS = 1600


class _Flood:
    """Public WatchStock streams, opened one by one until one is refused, each held open."""

    def __init__(self, shop: Shop, sku: str, most: int) -> None:
        self.channels = [
            shop.stack.public_channel(OWN_CONNECTION) for _ in range(math.ceil(most / _STREAMS_PER_CONNECTION))
        ]
        self.streams: list[Any] = []
        self.refused: grpc.RpcError | None = None
        self._sku = sku
        self._opened = 0

    def open(self, count: int, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        """Open up to count more streams, stopping at the first refusal.

        A refusal by the public token bucket (the other test's subject) is
        waited out: the flood is about concurrent streams, not their rate."""
        opened = 0
        while opened < count:
            channel = self.channels[min(self._opened // _STREAMS_PER_CONNECTION, len(self.channels) - 1)]
            self._opened += 1
            stub = inventory_pbg.InventoryServiceStub(channel)
            stream = stub.WatchStock(inventory_pb.WatchStockRequest(skus=[self._sku]), metadata=metadata, timeout=120)
            try:
                next(stream)  # the current level: the stream is open
            except grpc.RpcError as err:
                if _rate_limited(err):
                    time.sleep(0.2)
                    continue
                self.refused = err
                return
            self.streams.append(stream)
            opened += 1

    def close(self) -> None:
        for stream in self.streams:
            stream.cancel()
        for channel in self.channels:
            channel.close()


def _rate_limited(err: grpc.RpcError) -> bool:
    sent = [*(err.initial_metadata() or ()), *(err.trailing_metadata() or ())]  # type: ignore[attr-defined]
    return ("x-shop-rate-limited", "true") in [(key, value) for key, value in sent]


def _bearer(shop: Shop, customer: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {shop.tokens.token(customer)}"),)


def test_a_client_opening_streams_until_refused_cannot_fail_checkout(shop: Shop) -> None:
    """One anonymous client floods WatchStock: the services' per-client cap refuses it
    (it is known by the address Envoy saw); checkout and other watchers carry on."""
    cap = shop.stack.topology.limits.max_streams_per_client
    # Each inventory implementation taking traffic counts the client's streams on its own.
    clusters = sum(1 for weight in shop.stack.routing["inventory"].values() if weight > 0)
    most = cap * clusters + 10
    if most > _MOST_STREAMS:
        pytest.skip(f"the per-client cap ({cap} streams x {clusters}) is more than this test opens from one process")
    sku = "sku-tea-infuser"
    shop.import_stock({sku: 10_000})
    flood = _Flood(shop, sku, most)
    started = time.monotonic()
    try:
        flood.open(most)
        refused_after = time.monotonic() - started
        refused = flood.refused
        assert refused is not None, f"{len(flood.streams)} WatchStock streams from one client and none refused"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{refused.code()}: {refused.details()}"  # type: ignore[attr-defined]
        assert "SHOP_MAX_STREAMS_PER_CLIENT" in (refused.details() or ""), refused.details()  # type: ignore[attr-defined]
        assert len(flood.streams) >= cap, f"refused after only {len(flood.streams)} streams (cap {cap})"

        # Every stream still open: checkout works, concurrently, and so does the internal listener.
        with ThreadPoolExecutor(max_workers=3) as pool:
            orders = list(pool.map(lambda _: shop.place(shop.order_request(sku, quantity=1), timeout=30), range(3)))
        for order in orders:
            assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
        shop.inventory_internal.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT)
        # Another client (a signed-in customer) still watches.
        other = inventory_pbg.InventoryServiceStub(shop.public).WatchStock(
            inventory_pb.WatchStockRequest(skus=[sku]), metadata=_bearer(shop, "watcher-abuse"), timeout=30
        )
        assert next(other).level.sku == sku
        other.cancel()
    finally:
        flood.close()
    wait_for("public GetStock to be served again", lambda: shop.stock(sku), timeout=30)
    record(
        Outcome(
            "one public client opens WatchStock streams until refused",
            f"{len(flood.streams)} streams held open",
            "refused with RESOURCE_EXHAUSTED (per-client cap); 3 of 3 concurrent orders CONFIRMED; "
            "another client still watches",
            f"stream {len(flood.streams) + 1} refused {refused_after:.1f} s into the flood "
            f"(cap {cap} per client per process, {clusters} implementations taking inventory traffic); "
            "internal GetStock unaffected",
        )
    )


def test_many_clients_filling_the_public_budget_cannot_fail_checkout(shop: Shop) -> None:
    """Many signed-in clients, each under its cap, fill the public budget of every inventory
    implementation: Envoy refuses with RESOURCE_EXHAUSTED naming the limit; checkout,
    whose calls use the internal listener's own budget, carries on."""
    limit = shop.stack.topology.limits.public.max_requests_per_cluster
    cap = shop.stack.topology.limits.max_streams_per_client
    clusters = sum(1 for weight in shop.stack.routing["inventory"].values() if weight > 0)
    most = limit * clusters + 10
    if most > _MOST_STREAMS:
        pytest.skip(f"the public limit ({limit} streams x {clusters}) is more than this test opens from one process")
    sku = "sku-tea-infuser"
    shop.import_stock({sku: 10_000})
    flood = _Flood(shop, sku, most)
    started = time.monotonic()
    clients = 0
    try:
        # Each client opens fewer streams than its cap, so only Envoy's budget can refuse one.
        while flood.refused is None and len(flood.streams) < most:
            flood.open(max(cap - 1, 1), _bearer(shop, f"flooder-{clients}"))
            clients += 1
        refused_after = time.monotonic() - started
        refused = flood.refused
        assert refused is not None, f"{len(flood.streams)} public WatchStock streams and none refused"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{refused.code()}: {refused.details()}"  # type: ignore[attr-defined]
        assert "limits.public" in (refused.details() or ""), refused.details()  # type: ignore[attr-defined]
        assert len(flood.streams) >= limit * 0.9, f"refused after only {len(flood.streams)} streams (limit {limit})"
        orders = [shop.place(shop.order_request(sku, quantity=1), timeout=30) for _ in range(3)]
        for order in orders:
            assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
        shop.inventory_internal.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT)
    finally:
        flood.close()
    wait_for("public GetStock to be served again", lambda: shop.stock(sku), timeout=30)
    record(
        Outcome(
            "many public clients fill the public stream budget",
            f"{len(flood.streams)} streams held open by {clients} clients",
            "refused with RESOURCE_EXHAUSTED (public budget); 3 of 3 orders CONFIRMED",
            f"stream {len(flood.streams) + 1} refused {refused_after:.1f} s into the flood "
            f"(public limit {limit} per implementation, {clusters} taking inventory traffic); "
            "internal GetStock unaffected",
        )
    )


def test_a_burst_past_the_public_rate_limit_is_resource_exhausted_for_the_excess(shop: Shop) -> None:
    limits = shop.stack.topology.limits.public
    if limits.burst > 500:
        pytest.skip(f"the public bucket ({limits.burst}) is more than this test sends from one process")
    calls = 3 * limits.burst
    request = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    stub = catalog_pbg.CatalogServiceStub(shop.public)

    def one(_: int) -> grpc.StatusCode:
        try:
            stub.GetProduct(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[attr-defined,no-any-return]
        return grpc.StatusCode.OK

    wait_for("the public listener to serve", lambda: one(0) == grpc.StatusCode.OK, timeout=10)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(one, range(calls)))
    took = time.monotonic() - started
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    others = {c.name for c in codes} - {"OK", "RESOURCE_EXHAUSTED"}
    assert not others, f"a rate-limited burst answered {others}"
    assert limited > 0, (
        f"{calls} calls in {took:.1f} s and none limited (bucket {limits.burst}, {limits.requests_per_second}/s)"
    )
    # What the bucket held when the burst began (earlier tests may have drawn on it) was served.
    assert codes.count(grpc.StatusCode.OK) > 0
    # The internal listener has no rate limit: the saga's calls are never refused for it.
    internal = catalog_pbg.CatalogServiceStub(shop.internal)
    for _ in range(20):
        internal.GetProduct(request, timeout=CALL_TIMEOUT)
    wait_for("the public bucket to refill", lambda: stub.GetProduct(request, timeout=CALL_TIMEOUT), timeout=10)
    record(
        Outcome(
            "one client bursts GetProduct past the public rate limit",
            f"{calls} calls in {took:.1f} s from 16 threads",
            "the excess RESOURCE_EXHAUSTED, the rest OK",
            f"{limited} refused, {codes.count(grpc.StatusCode.OK)} served (bucket {limits.burst}, "
            f"{limits.requests_per_second}/s); internal listener never limited",
        )
    )
