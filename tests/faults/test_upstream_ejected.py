"""Envoy takes a failing upstream out of rotation and fails fast, then takes it back.

The catalog process is frozen with SIGSTOP: it keeps its socket open but
answers nothing, the worst kind of failure (a crash at least refuses
connections). Envoy's gRPC health checks time out, the host is marked
unhealthy, and with one host per cluster (and panic routing off) every call
is refused at once with UNAVAILABLE "no healthy upstream" instead of hanging.
SIGCONT thaws it and the next health check brings it back.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import grpc
from e2e.support import Shop, describe_order, wait_for
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.stack import Stack

CLUSTER = "catalog-go"


def _host_flags(stack: Stack, cluster: str) -> dict[str, object]:
    """The health_status flags Envoy's admin /clusters shows for the cluster's host."""
    with urllib.request.urlopen(f"{stack.admin_url}/clusters?format=json", timeout=5) as resp:
        data = json.load(resp)
    for status in data.get("cluster_statuses", []):
        if status["name"] == cluster:
            return dict(status["host_statuses"][0]["health_status"])
    raise AssertionError(f"Envoy has no cluster {cluster}")


def test_a_frozen_upstream_is_ejected_calls_fail_fast_and_it_comes_back(private_stack: Stack, shop: Shop) -> None:
    product = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    shop.catalog.GetProduct(product, timeout=10)
    stats_before = private_stack.envoy_stats(f"cluster.{CLUSTER}.")
    pid = private_stack.pid_of(CLUSTER)
    assert pid is not None

    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(
            f"Envoy to mark {CLUSTER} unhealthy",
            lambda: private_stack.envoy_clusters().get(CLUSTER) == "UNHEALTHY",
            timeout=30,
        )
        flags = _host_flags(private_stack, CLUSTER)
        assert flags.get("failed_active_health_check") is True, flags
        stats = private_stack.envoy_stats(f"cluster.{CLUSTER}.")
        failures = f"cluster.{CLUSTER}.health_check.failure"
        assert stats[failures] > stats_before.get(failures, 0), {k: v for k, v in stats.items() if "health" in k}

        # Fail fast: Envoy refuses the call itself (no healthy upstream); a
        # 10 s deadline is never what ends it.
        none_healthy = f"cluster.{CLUSTER}.upstream_cx_none_healthy"
        for _ in range(3):
            try:
                reply = shop.catalog.GetProduct(product, timeout=10)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{err.code().name}: {err.details()}"
                assert "no healthy upstream" in (err.details() or ""), err.details()
            else:
                raise AssertionError(f"GetProduct succeeded against a frozen catalog: {reply}")
        assert private_stack.envoy_stats(none_healthy)[none_healthy] >= stats_before.get(none_healthy, 0) + 3

        # The saga sees the same fast refusal and fails cleanly.
        order = shop.place(shop.order_request("sku-aeropress"), timeout=20)
        assert order.state == orders_pb.ORDER_STATE_FAILED, describe_order(order)
        assert order.failure_reason == orders_pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, describe_order(order)
        assert not order.reservation_id and not order.payment_id, describe_order(order)
    finally:
        os.kill(pid, signal.SIGCONT)

    wait_for(
        f"Envoy to see {CLUSTER} healthy again",
        lambda: private_stack.envoy_clusters().get(CLUSTER) == "HEALTHY",
        timeout=30,
    )
    assert private_stack.pid_of(CLUSTER) == pid, "the thawed process should serve again, not a restarted one"
    # Admin's host flags flip before Envoy routes to the host again (about a
    # second later, see Shop.wait_routable), so wait on the calls themselves.
    shop.wait_routable(timeout=15)
    assert shop.catalog.GetProduct(product, timeout=10).product.id == "sku-aeropress"
    order = shop.place(shop.order_request("sku-aeropress"), timeout=20)
    assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
