"""One public client asking too much cannot stop checkout.

- Streams: a single client opens WatchStock streams through the public
  listener until Envoy refuses one. The refusal is RESOURCE_EXHAUSTED with a
  message naming the limit, at once; while every stream stays open, orders
  still confirm (their saga's Reserve and Commit use the internal listener's
  own budget on inventory) and the internal listener still serves GetStock.
  Once the streams close, public GetStock works again.
- Rate: a burst of calls past the public listener's token bucket gets
  RESOURCE_EXHAUSTED for the excess, the internal listener is never rate
  limited, and the public listener serves again a second later.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

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


def test_a_client_opening_streams_until_refused_cannot_fail_checkout(shop: Shop) -> None:
    limit = shop.stack.topology.limits.public.max_requests_per_cluster
    # Each inventory implementation taking traffic is its own cluster with its own limit.
    clusters = sum(1 for weight in shop.stack.routing["inventory"].values() if weight > 0)
    most = limit * clusters + 10
    if most > 1600:
        pytest.skip(f"the public limit ({limit} streams x {clusters}) is more than this test opens from one process")
    sku = "sku-tea-infuser"
    shop.import_stock({sku: 10_000})
    channels = [shop.stack.public_channel(OWN_CONNECTION) for _ in range(math.ceil(most / _STREAMS_PER_CONNECTION))]
    streams = []
    refused: grpc.RpcError | None = None
    started = time.monotonic()
    try:
        for n in range(most):
            stub = inventory_pbg.InventoryServiceStub(channels[n // _STREAMS_PER_CONNECTION])
            stream = stub.WatchStock(inventory_pb.WatchStockRequest(skus=[sku]), timeout=120)
            try:
                next(stream)  # the current level: the stream is open
            except grpc.RpcError as err:
                refused = err
                break
            streams.append(stream)
        refused_after = time.monotonic() - started
        assert refused is not None, f"{len(streams)} public WatchStock streams and none refused ({limit} x {clusters})"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{refused.code()}: {refused.details()}"  # type: ignore[attr-defined]
        assert "limits.public" in (refused.details() or ""), refused.details()  # type: ignore[attr-defined]
        assert len(streams) >= limit * 0.9, f"refused after only {len(streams)} streams (limit {limit})"

        # Every stream still open: checkout works, and so does the internal listener.
        orders = [shop.place(shop.order_request(sku, quantity=1), timeout=30) for _ in range(3)]
        for order in orders:
            assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
        shop.inventory_internal.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT)
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()
    wait_for("public GetStock to be served again", lambda: shop.stock(sku), timeout=30)
    record(
        Outcome(
            "one public client opens WatchStock streams until refused",
            f"{len(streams)} streams held open on {len(channels)} connections",
            "refused with RESOURCE_EXHAUSTED; 3 of 3 concurrent orders CONFIRMED",
            f"the {len(streams) + 1}th stream refused {refused_after:.1f} s into the flood "
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
