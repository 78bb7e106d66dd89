"""One trace per request, across Envoy and every language, read back from
Zipkin's query API (docs/observability.md).

Each test makes its own calls with fresh ids and finds its trace by the id
Envoy returns in x-trace-id (or by the traceparent the test itself sent).
"""

from __future__ import annotations

import json
import os
import uuid

import grpc
import pytest
from e2e.support import CALL_TIMEOUT, ORDER_TIMEOUT, Shop, describe_order
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.envoy import IMPL_HEADER
from shopstack.envoy.bootstrap import TRACE_ID_HEADER
from shopstack.stack import Stack

from ._backends import ENVOY_SERVICE, Span, Trace, Zipkin

SERVICES = {ENVOY_SERVICE, "orders", "catalog", "inventory", "payments"}
FORWARD_STEPS = ["saga price", "saga reserve", "saga charge", "saga commit"]
# Which service's server span each step's call reaches.
STEP_SERVICE = {
    "saga price": "catalog",
    "saga reserve": "inventory",
    "saga charge": "payments",
    "saga commit": "inventory",
    "saga compensate release": "inventory",
    "saga compensate refund": "payments",
}


def place(shop: Shop, sku: str, token: str) -> tuple[orders_pb.Order, str]:
    """PlaceOrder through the public listener; the order and the trace id Envoy answered with."""
    request = shop.order_request(sku, quantity=1, token=token)
    reply, call = shop.orders.PlaceOrder.with_call(request, timeout=ORDER_TIMEOUT)
    headers = dict(call.initial_metadata())
    assert TRACE_ID_HEADER in headers, f"no {TRACE_ID_HEADER} in the response headers: {headers}"
    return reply.order, str(headers[TRACE_ID_HEADER])


def descendants(trace: Trace, span: Span) -> list[Span]:
    found, todo = [], [span]
    while todo:
        kids = trace.children(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def orders_server_span(trace: Trace) -> Span:
    spans = [s for s in trace.by_service("orders") if s.kind == "SERVER" and s.name.endswith("/placeorder")]
    assert len(spans) == 1, f"expected one PlaceOrder server span of orders:\n  {trace.describe()}"
    return spans[0]


def saga_steps(trace: Trace) -> list[str]:
    """The saga's step spans under orders' PlaceOrder span, in order ([] until it arrived)."""
    roots = [s for s in trace.by_service("orders") if s.kind == "SERVER" and s.name.endswith("/placeorder")]
    if len(roots) != 1:
        return []
    return [s.name for s in trace.children(roots[0]) if s.name.startswith("saga ")]


def steps_complete(trace: Trace, expected: list[str]) -> bool:
    """The saga's steps are these, in order, and every one's call reached its
    service through Envoy (Envoy and each service send their spans on their
    own schedule, so a trace fills in over a second or two)."""
    if saga_steps(trace) != expected or not any(s.parent is None for s in trace):
        return False
    steps = [s for s in trace.children(orders_server_span(trace)) if s.name.startswith("saga ")]
    return all(
        {ENVOY_SERVICE, STEP_SERVICE[step.name]} <= {s.service for s in descendants(trace, step)} for step in steps
    )


def assert_step_reaches_its_service(trace: Trace, step: Span) -> None:
    service = STEP_SERVICE[step.name]
    reached = [s for s in descendants(trace, step) if s.service == service and s.kind == "SERVER"]
    assert reached, f"{step} has no {service} server span below it:\n  {trace.describe()}"
    via_envoy = [s for s in descendants(trace, step) if s.service == ENVOY_SERVICE]
    assert via_envoy, f"{step} did not go through Envoy's internal listener:\n  {trace.describe()}"


def test_a_placed_order_is_one_trace_across_envoy_and_every_service_with_the_saga_steps_in_order(
    telemetry_shop: Shop, zipkin: Zipkin, stack: Stack
) -> None:
    order, trace_id = place(telemetry_shop, "sku-aeropress", "tok_success")
    assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)

    trace = zipkin.wait_trace(
        trace_id,
        # Every step's chain through Envoy too: Envoy's two workers flush
        # their spans on their own schedule, so one hop may come a second later.
        lambda t: {s.service for s in t} >= SERVICES and steps_complete(t, FORWARD_STEPS),
        f"spans from {sorted(SERVICES)}, the saga's four steps each through Envoy, and Envoy's root span",
    )
    root = [s for s in trace if s.parent is None]
    assert len(root) == 1 and root[0].service == ENVOY_SERVICE, f"one root, Envoy's:\n  {trace.describe()}"
    orders_span = orders_server_span(trace)
    parent = next(s for s in trace if s.id == orders_span.parent)
    assert parent.service == ENVOY_SERVICE, f"orders' span hangs under {parent}"
    for step in (s for s in trace.children(orders_span) if s.name.startswith("saga ")):
        assert step.tags.get("order_id") == order.order_id, step
        assert step.tags.get("outcome") == "succeeded", step
        assert step.tags.get("step") == step.name.split()[-1], step
        assert_step_reaches_its_service(trace, step)

    # The orders log lines of this call carry the trace id beside the request id.
    lines = [json.loads(line) for line in stack.log_of("orders-python").read_text().splitlines() if trace_id in line]
    rpc = [line for line in lines if line.get("msg") == "rpc" and line.get("method", "").endswith("/PlaceOrder")]
    assert rpc and rpc[0]["trace_id"] == trace_id and rpc[0]["span_id"] and rpc[0].get("request_id"), lines
    steps_logged = {line.get("step") for line in lines if line.get("msg") == "saga step"}
    assert {"price", "reserve", "charge", "commit"} <= steps_logged, lines


def test_a_declined_card_trace_shows_the_failed_charge_and_the_release_compensation(
    telemetry_shop: Shop, zipkin: Zipkin
) -> None:
    sku = "sku-tote-bag"
    telemetry_shop.import_stock({sku: telemetry_shop.stock(sku).reserved + 50})
    order, trace_id = place(telemetry_shop, sku, "tok_declined")
    assert order.state == orders_pb.ORDER_STATE_FAILED, describe_order(order)

    expected = ["saga price", "saga reserve", "saga charge", "saga compensate release"]
    trace = zipkin.wait_trace(trace_id, lambda t: steps_complete(t, expected), f"the steps {expected}")
    steps = {s.name: s for s in trace.children(orders_server_span(trace)) if s.name.startswith("saga ")}
    charge = steps["saga charge"]
    assert charge.tags.get("outcome") == "failed" and "error" in charge.tags, charge
    release = steps["saga compensate release"]
    assert release.tags.get("kind") == "compensate" and release.tags.get("outcome") == "succeeded", release
    assert_step_reaches_its_service(trace, release)
    # Nothing was charged, so there is nothing to refund: the saga makes no Refund call.
    assert not order.payment_id, describe_order(order)
    assert "saga compensate refund" not in steps, trace.describe()


@pytest.mark.parametrize("lang", ["node", "go", "python"])
def test_a_callers_traceparent_continues_through_envoy_into_each_inventory_implementation(
    telemetry_shop: Shop, zipkin: Zipkin, stack: Stack, lang: str
) -> None:
    trace_id = uuid.uuid4().hex
    parent_id = os.urandom(8).hex()
    traceparent = f"00-{trace_id}-{parent_id}-01"
    reply, call = telemetry_shop.inventory.GetStock.with_call(
        inventory_pb.GetStockRequest(skus=["sku-aeropress"]),
        timeout=CALL_TIMEOUT,
        # Pinning an implementation at the edge takes an operator's token.
        metadata=(
            ("traceparent", traceparent),
            (IMPL_HEADER, lang),
            ("authorization", f"Bearer {stack.operator_token()}"),
        ),
    )
    assert reply.levels
    assert dict(call.initial_metadata()).get(TRACE_ID_HEADER) == trace_id

    def served(t: Trace) -> bool:
        edge = any(s.service == ENVOY_SERVICE and s.parent == parent_id for s in t)
        return edge and any(s.service == "inventory" and s.kind == "SERVER" for s in t)

    trace = zipkin.wait_trace(trace_id, served, f"Envoy's span under the caller's and inventory-{lang}'s server span")
    edge = [s for s in trace if s.service == ENVOY_SERVICE and s.parent == parent_id]
    assert edge, f"Envoy's span is not a child of the caller's span {parent_id}:\n  {trace.describe()}"
    server = next(s for s in trace if s.service == "inventory" and s.kind == "SERVER")
    assert server.tags.get("shop.impl") == lang, server
    assert server.name.endswith("/getstock"), server
    assert any(s.id == server.parent and s.service == ENVOY_SERVICE for s in trace), trace.describe()


def test_a_not_found_answer_is_a_span_with_its_grpc_status(telemetry_shop: Shop, zipkin: Zipkin) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        telemetry_shop.catalog.GetProduct.with_call(
            catalog_pb.GetProductRequest(product_id=f"sku-missing-{uuid.uuid4()}"), timeout=CALL_TIMEOUT
        )
    error = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    # An error without a message is a trailers-only response: the header is among the trailers.
    headers = {**dict(error.initial_metadata()), **dict(error.trailing_metadata())}  # type: ignore[attr-defined]
    trace_id = headers.get(TRACE_ID_HEADER)
    assert trace_id, f"a failed call gets its trace id too: {headers}"

    def answered(t: Trace) -> bool:
        return any(s.service == "catalog" and s.kind == "SERVER" for s in t)

    trace = zipkin.wait_trace(str(trace_id), answered, "catalog's server span")
    server = next(s for s in trace if s.service == "catalog" and s.kind == "SERVER")
    assert server.tags.get("rpc.grpc.status_code") == "5" or server.tags.get("rpc.response.status_code") in (
        "5",
        "NOT_FOUND",
    ), server
