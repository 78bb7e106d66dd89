"""The shop does not depend on its tracing backend: with Zipkin stopped,
every call still succeeds and no service logs an error. (How much time the
exporters cost is measured by `make bench`, not asserted here.)"""

from __future__ import annotations

import json

from e2e._shop import CALL_TIMEOUT, Shop, describe_order
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.stack import ZIPKIN_PROGRAM, Stack

from ._backends import Zipkin


def error_lines(stack: Stack, offsets: dict[str, int]) -> list[str]:
    found = []
    for impl in stack.running_impls():
        with stack.log_of(impl.cluster).open() as log:
            log.seek(offsets[impl.cluster])
            for line in log:
                try:
                    if json.loads(line).get("level") == "error":
                        found.append(f"{impl.cluster}: {line.strip()}")
                except ValueError:
                    found.append(f"{impl.cluster} (not JSON): {line.strip()}")
    return found


def test_calls_succeed_and_nothing_logs_an_error_while_zipkin_is_down(
    stack: Stack, telemetry_shop: Shop, zipkin: Zipkin
) -> None:
    sku = "sku-aeropress"
    telemetry_shop.import_stock({sku: telemetry_shop.stock(sku).reserved + 50})
    stack.stop_program(ZIPKIN_PROGRAM)
    try:
        offsets = {impl.cluster: stack.log_of(impl.cluster).stat().st_size for impl in stack.running_impls()}
        for _ in range(5):
            order = telemetry_shop.place(telemetry_shop.order_request(sku, token="tok_success"))
            assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
            telemetry_shop.catalog.GetProduct(catalog_pb.GetProductRequest(product_id=sku), timeout=CALL_TIMEOUT)
        declined = telemetry_shop.place(telemetry_shop.order_request(sku, token="tok_declined"))
        assert declined.state == orders_pb.ORDER_STATE_FAILED, describe_order(declined)
        assert error_lines(stack, offsets) == []
    finally:
        # Started again for whoever looks next; this suite's other tests have run.
        stack.start_program(ZIPKIN_PROGRAM)
