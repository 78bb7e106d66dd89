"""Prometheus: every process scraped, the per-RPC series by method and code
from every language and from Envoy, the saga's series, and the rules
checked by promtool (docs/observability.md)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import grpc
import pytest
from e2e.support import CALL_TIMEOUT, Shop, wait_for
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shopstack.stack import PROMETHEUS_RULES, Stack

from ._backends import Prometheus

PROMTOOL = "/usr/bin/promtool"


def test_prometheus_scrapes_every_service_envoy_and_zipkin(stack: Stack, prometheus: Prometheus) -> None:
    expected = {f"{impl.service}-{impl.lang}" for impl in stack.running_impls()} | {"envoy", "zipkin", "prometheus"}

    def all_up() -> set[str] | None:
        seen = {
            (f"{r['metric']['service']}-{r['metric']['impl']}" if r["metric"]["job"] == "shop" else r["metric"]["job"])
            for r in prometheus.query("up == 1")
        }
        return seen if expected <= seen else None

    wait_for(f"targets {sorted(expected)} up", all_up, timeout=30)


def test_a_not_found_call_is_counted_under_its_method_with_code_not_found(
    telemetry_shop: Shop, prometheus: Prometheus
) -> None:
    method = 'grpc_service="shop.catalog.v1.CatalogService",grpc_method="GetProduct"'
    services = f'sum(grpc_server_handled_total{{{method},grpc_code="NotFound"}})'
    # Envoy's grpc_stats filter: per cluster, method and gRPC status (5 is NOT_FOUND).
    edge = (
        'sum(envoy_cluster_grpc_5{envoy_grpc_bridge_service="shop_catalog_v1_CatalogService",'
        'envoy_grpc_bridge_method="GetProduct"})'
    )
    before = {q: prometheus.value(q) or 0.0 for q in (services, edge)}
    with pytest.raises(grpc.RpcError) as raised:
        telemetry_shop.catalog.GetProduct(
            catalog_pb.GetProductRequest(product_id=f"sku-missing-{uuid.uuid4()}"), timeout=CALL_TIMEOUT
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    for query in (services, edge):
        wait_for(
            f"{query} to go up from {before[query]:g}",
            lambda q=query: (prometheus.value(q) or 0.0) > before[q],
            timeout=20,
            interval=0.5,
        )


def test_the_saga_counts_orders_by_outcome_and_compensations(telemetry_shop: Shop, prometheus: Prometheus) -> None:
    sku = "sku-tote-bag"
    telemetry_shop.import_stock({sku: telemetry_shop.stock(sku).reserved + 50})
    queries = {
        "confirmed": 'sum(shop_orders_total{outcome="confirmed"})',
        "declined": 'sum(shop_orders_total{outcome="failed",reason="ORDER_FAILURE_REASON_CARD_DECLINED"})',
        "released": 'sum(shop_saga_compensations_total{step="release",outcome="succeeded"})',
        "charge latency": 'sum(shop_saga_step_seconds_count{step="charge",kind="forward"})',
    }
    before = {name: prometheus.value(q) or 0.0 for name, q in queries.items()}
    telemetry_shop.place(telemetry_shop.order_request(sku, token="tok_success"))
    telemetry_shop.place(telemetry_shop.order_request(sku, token="tok_declined"))
    for name, query in queries.items():
        wait_for(
            f"{name} ({query}) to go up from {before[name]:g}",
            lambda q=query, n=name: (prometheus.value(q) or 0.0) > before[n],
            timeout=20,
            interval=0.5,
        )


def test_the_recording_rules_answer_per_method(telemetry_shop: Shop, prometheus: Prometheus) -> None:
    telemetry_shop.catalog.ListProducts(catalog_pb.ListProductsRequest(page_size=2), timeout=CALL_TIMEOUT)
    wait_for(
        "shop:grpc_server_requests:rate1m for ListProducts",
        lambda: prometheus.query('shop:grpc_server_requests:rate1m{grpc_method="ListProducts"} > 0'),
        timeout=30,
        interval=0.5,
    )


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    rules_dir = Path(PROMETHEUS_RULES).parent
    for args in (["check", "rules", str(PROMETHEUS_RULES)], ["test", "rules", "rules_test.yml"]):
        result = subprocess.run(
            [PROMTOOL, *args], cwd=rules_dir, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
