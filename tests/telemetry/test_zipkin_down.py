"""The shop does not depend on its tracing backend: with Zipkin stopped,
every call still succeeds and no service logs an error (a failed export is
one warning). (How much time the
exporters cost is measured by `make bench`, not asserted here.)"""

from __future__ import annotations

import json

from e2e.support import CALL_TIMEOUT, Shop, describe_order, wait_for
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.stack import ZIPKIN_PROGRAM, Stack

from ._backends import Zipkin


def lines_since(stack: Stack, program: str, offset: int) -> list[str]:
    with stack.log_of(program).open() as log:
        log.seek(offset)
        return log.readlines()


def error_lines(stack: Stack, offsets: dict[str, int]) -> list[str]:
    found = []
    for impl in stack.running_impls():
        for line in lines_since(stack, impl.cluster, offsets[impl.cluster]):
            try:
                if json.loads(line).get("level") == "error":
                    found.append(f"{impl.cluster}: {line.strip()}")
            except ValueError:
                found.append(f"{impl.cluster} (not JSON): {line.strip()}")
    return found


def export_failed(stack: Stack, program: str, offset: int) -> bool:
    """The program's exporter tried Zipkin and said so, as a warning."""
    for line in lines_since(stack, program, offset):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # error_lines reports it
        if record.get("msg") == "telemetry export failed" and record.get("level") == "warn":
            return True
    return False


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
        # The exporters have tried (Go's and Python's say so in one warning
        # per failed batch; Node's stay silent), and nobody logged an error.
        for program in ("catalog-go", "orders-python", "payments-python"):
            wait_for(
                f"{program} to warn that its export failed",
                lambda p=program: export_failed(stack, p, offsets[p]),
                timeout=20,
                interval=0.2,
            )
        assert error_lines(stack, offsets) == []
    finally:
        # Started again for whoever looks next; this suite's other tests have run.
        stack.start_program(ZIPKIN_PROGRAM)
