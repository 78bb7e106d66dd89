"""Contract suite for shop.orders.v1.OrderService (protos/shop/orders/v1).

PlaceOrder's saga calls the catalog, inventory and payments services through
Envoy's internal listener, so this suite needs a whole stack behind the orders
address. With the session's stack it also restocks the SKUs it orders (so it
can assert stock deltas exactly) and slows payments down through Envoy's fault
filter to watch a saga in flight and to make a deadline pass; under --target
those tests skip and the rest assert only what the orders API shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as inv_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inv_pbg
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pbg
from shopstack.stack import Stack

from .support import (
    OVERSIZED_BYTES,
    assert_bad_request,
    assert_code,
    assert_deadline_ended,
    assert_error_info,
    check_malformed,
    check_unknown_method,
    fails,
    money,
    seed,
    seed_money,
    unique,
)

SERVICE = "orders"
FULL_NAME = "shop.orders.v1.OrderService"
DOMAIN = "orders.shop.example"
PRODUCTS = {p["id"]: p for p in seed()["products"]}
CURRENCY = seed()["currency_code"]
# Ordered in the happy paths and restocked to RESTOCK first (when the stack is ours).
SKU_A, SKU_B = "sku-paper-filters-100", "sku-gift-card-25"
RESTOCK = 100_000
# Seeded with 3 units: 999 of them is out of stock unless someone restocks it.
SCARCE = "sku-limited-geisha-100g"
# Long enough for every saga on a loaded 2-core machine.
SAGA_TIMEOUT = 20.0
TERMINAL = {pb.ORDER_STATE_CONFIRMED, pb.ORDER_STATE_FAILED}


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pbg.OrderServiceStub:
    return pbg.OrderServiceStub(channel)


@pytest.fixture(scope="module")
def inventory(full_stack: Stack | None) -> Iterator[inv_pbg.InventoryServiceStub | None]:
    """The stack's inventory through Envoy's internal listener, restocked; None under --target."""
    if full_stack is None:
        yield None
        return
    with full_stack.internal_channel() as chan:
        inv = inv_pbg.InventoryServiceStub(chan)
        inv.ImportStock(
            iter([inv_pb.ImportStockRequest(sku=s, on_hand=RESTOCK) for s in (SKU_A, SKU_B)]),
            timeout=15,
        )
        yield inv


def on_hand(inventory: inv_pbg.InventoryServiceStub | None, sku: str) -> tuple[int, int] | None:
    """(on_hand, reserved), or None when the suite has no inventory to look at."""
    if inventory is None:
        return None
    (level,) = inventory.GetStock(inv_pb.GetStockRequest(skus=[sku]), timeout=15).levels
    return level.on_hand, level.reserved


def order_request(
    token: str = "tok_success", lines: list[tuple[str, int]] | None = None, **fields: str
) -> pb.PlaceOrderRequest:
    values = {"request_id": unique("req"), "customer_id": unique("cust"), "payment_token": token}
    values.update(fields)
    return pb.PlaceOrderRequest(
        lines=[pb.OrderLine(product_id=p, quantity=q) for p, q in (lines or [(SKU_A, 2), (SKU_B, 1)])],
        **values,
    )


def place(stub: pbg.OrderServiceStub, request: pb.PlaceOrderRequest) -> pb.Order:
    return stub.PlaceOrder(request, timeout=SAGA_TIMEOUT).order


def assert_failed(order: pb.Order, reason: int) -> None:
    assert (order.state, order.failure_reason) == (pb.ORDER_STATE_FAILED, reason), (
        f"expected FAILED/{pb.OrderFailureReason.Name(reason)}, got "
        f"{pb.OrderState.Name(order.state)}/{pb.OrderFailureReason.Name(order.failure_reason)}: "
        f"{order.failure_message!r}"
    )
    assert order.failure_message.strip()


# -- PlaceOrder ---------------------------------------------------------------


def test_place_order_confirms_a_priced_order_and_deducts_the_stock(
    stub: pbg.OrderServiceStub, inventory: inv_pbg.InventoryServiceStub | None
) -> None:
    before = on_hand(inventory, SKU_A)
    request = order_request()
    order = place(stub, request)
    assert order.state == pb.ORDER_STATE_CONFIRMED, order
    assert order.order_id and order.reservation_id and order.payment_id
    assert (order.request_id, order.customer_id) == (request.request_id, request.customer_id)
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_UNSPECIFIED and order.failure_message == ""
    assert [(x.product_id, x.quantity) for x in order.lines] == [(SKU_A, 2), (SKU_B, 1)]
    total = Decimal(0)
    for line in order.lines:
        unit = seed_money(PRODUCTS[line.product_id]["price"])
        assert money(line.unit_price) == unit
        assert money(line.line_total) == (CURRENCY, unit[1] * line.quantity)
        total += unit[1] * line.quantity
    assert money(order.total) == (CURRENCY, total)
    assert order.create_time.seconds > 0 and order.update_time.ToDatetime() >= order.create_time.ToDatetime()
    if before is not None:
        assert on_hand(inventory, SKU_A) == (before[0] - 2, before[1])


def test_place_order_repeated_returns_the_same_order_and_runs_one_saga(
    stub: pbg.OrderServiceStub, inventory: inv_pbg.InventoryServiceStub | None
) -> None:
    before = on_hand(inventory, SKU_A)
    request = order_request()
    first = place(stub, request)
    second = place(stub, request)
    assert second.order_id == first.order_id
    assert second.state == first.state == pb.ORDER_STATE_CONFIRMED
    assert second.payment_id == first.payment_id
    if before is not None:
        assert on_hand(inventory, SKU_A) == (before[0] - 2, before[1])


def test_place_order_request_id_reused_for_another_order_is_already_exists(
    stub: pbg.OrderServiceStub,
) -> None:
    request = order_request()
    place(stub, request)
    other = order_request(lines=[(SKU_A, 3)], request_id=request.request_id, customer_id=request.customer_id)
    seen = fails(lambda: place(stub, other))
    assert_error_info(seen, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED", DOMAIN)


def test_place_order_unknown_product_fails_the_order(stub: pbg.OrderServiceStub) -> None:
    order = place(stub, order_request(lines=[(SKU_A, 1), (unique("sku-missing"), 1)]))
    assert_failed(order, pb.ORDER_FAILURE_REASON_UNKNOWN_PRODUCT)
    assert order.reservation_id == "" and order.payment_id == ""


def test_place_order_out_of_stock_fails_the_order_and_reserves_nothing(
    stub: pbg.OrderServiceStub, inventory: inv_pbg.InventoryServiceStub | None
) -> None:
    before = on_hand(inventory, SKU_A)
    order = place(stub, order_request(lines=[(SKU_A, 1), (SCARCE, 999)]))
    assert_failed(order, pb.ORDER_FAILURE_REASON_OUT_OF_STOCK)
    assert order.payment_id == ""
    if before is not None:
        assert on_hand(inventory, SKU_A) == before


def test_place_order_declined_card_fails_the_order_and_releases_the_stock(
    stub: pbg.OrderServiceStub, inventory: inv_pbg.InventoryServiceStub | None
) -> None:
    before = on_hand(inventory, SKU_A)
    order = place(stub, order_request("tok_declined"))
    assert_failed(order, pb.ORDER_FAILURE_REASON_CARD_DECLINED)
    if before is not None:
        assert on_hand(inventory, SKU_A) == before


def test_place_order_flaky_card_is_retried_and_confirms(stub: pbg.OrderServiceStub) -> None:
    assert place(stub, order_request("tok_flaky")).state == pb.ORDER_STATE_CONFIRMED


def _line(product_id: str, quantity: int) -> pb.OrderLine:
    return pb.OrderLine(product_id=product_id, quantity=quantity)


@pytest.mark.parametrize(
    ("fields", "lines", "paths"),
    [
        ({"request_id": ""}, None, ["request_id"]),
        ({"request_id": "r" * 129}, None, ["request_id"]),
        ({"customer_id": ""}, None, ["customer_id"]),
        ({"customer_id": "c" * 129}, None, ["customer_id"]),
        ({"payment_token": ""}, None, ["payment_token"]),
        ({}, [], ["lines"]),
        ({}, [_line(f"sku-{i}", 1) for i in range(51)], ["lines"]),
        ({}, [_line(SKU_A, 1), _line("", 1)], ["lines[1].product_id"]),
        ({}, [_line(SKU_A, 1), _line(SKU_B, 0)], ["lines[1].quantity"]),
        ({}, [_line(SKU_A, 1000)], ["lines[0].quantity"]),
        ({}, [_line(SKU_A, 1), _line(SKU_B, 1), _line(SKU_A, 2)], ["lines[2].product_id"]),
        (
            {"request_id": "", "payment_token": ""},
            [_line(SKU_A, -1)],
            ["request_id", "payment_token", "lines[0].quantity"],
        ),
    ],
    ids=[
        "empty-request-id",
        "request-id-129-chars",
        "empty-customer-id",
        "customer-id-129-chars",
        "empty-token",
        "no-lines",
        "51-lines",
        "empty-product-id",
        "zero-quantity",
        "quantity-1000",
        "repeated-product",
        "three-problems",
    ],
)
def test_place_order_bad_input_is_invalid_argument_naming_each_field(
    stub: pbg.OrderServiceStub,
    fields: dict[str, str],
    lines: list[pb.OrderLine] | None,
    paths: list[str],
) -> None:
    request = order_request()
    for name, value in fields.items():
        setattr(request, name, value)
    if lines is not None:
        del request.lines[:]
        request.lines.extend(lines)
    assert_bad_request(fails(lambda: place(stub, request)), *paths)


# -- GetOrder and ListOrders --------------------------------------------------


def test_get_order_returns_the_placed_order(stub: pbg.OrderServiceStub) -> None:
    order = place(stub, order_request())
    assert stub.GetOrder(pb.GetOrderRequest(order_id=order.order_id)).order == order


def test_get_order_unknown_id_is_order_not_found(stub: pbg.OrderServiceStub) -> None:
    seen = fails(lambda: stub.GetOrder(pb.GetOrderRequest(order_id=unique("ord-missing"))))
    assert_error_info(seen, grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", DOMAIN)


def test_get_order_without_an_id_is_invalid_argument(stub: pbg.OrderServiceStub) -> None:
    assert_bad_request(fails(lambda: stub.GetOrder(pb.GetOrderRequest())), "order_id")


@pytest.fixture(scope="module")
def customer_orders(stub: pbg.OrderServiceStub) -> tuple[str, list[str]]:
    """A customer with five orders (one of them FAILED), oldest first."""
    customer = unique("cust")
    ids = []
    for i in range(5):
        token = "tok_declined" if i == 2 else "tok_success"
        ids.append(place(stub, order_request(token, lines=[(SKU_A, 1)], customer_id=customer)).order_id)
    return customer, ids


def test_list_orders_pages_one_customer_newest_first(
    stub: pbg.OrderServiceStub, customer_orders: tuple[str, list[str]]
) -> None:
    customer, ids = customer_orders
    seen: list[str] = []
    token = ""
    for _ in range(5):
        reply = stub.ListOrders(pb.ListOrdersRequest(customer_id=customer, page_size=2, page_token=token))
        assert len(reply.orders) <= 2
        assert all(o.customer_id == customer for o in reply.orders)
        seen += [o.order_id for o in reply.orders]
        token = reply.next_page_token
        if not token:
            break
    assert token == ""
    assert seen == ids[::-1]


def test_list_orders_default_page_size_holds_all_five(
    stub: pbg.OrderServiceStub, customer_orders: tuple[str, list[str]]
) -> None:
    customer, ids = customer_orders
    reply = stub.ListOrders(pb.ListOrdersRequest(customer_id=customer))
    assert [o.order_id for o in reply.orders] == ids[::-1] and reply.next_page_token == ""


def test_list_orders_without_filter_is_newest_first_with_default_page_of_20(
    stub: pbg.OrderServiceStub, customer_orders: tuple[str, list[str]]
) -> None:
    reply = stub.ListOrders(pb.ListOrdersRequest())
    assert 5 <= len(reply.orders) <= 20
    times = [o.create_time.ToDatetime() for o in reply.orders]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("page_size", [-1, 101])
def test_list_orders_page_size_out_of_bounds_is_invalid_argument(stub: pbg.OrderServiceStub, page_size: int) -> None:
    assert_bad_request(fails(lambda: stub.ListOrders(pb.ListOrdersRequest(page_size=page_size))), "page_size")


def test_list_orders_garbage_token_is_invalid_page_token(stub: pbg.OrderServiceStub) -> None:
    seen = fails(lambda: stub.ListOrders(pb.ListOrdersRequest(page_token="not-a-token")))
    assert_error_info(seen, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", DOMAIN)


def test_list_orders_token_of_another_customer_is_invalid_page_token(
    stub: pbg.OrderServiceStub, customer_orders: tuple[str, list[str]]
) -> None:
    customer, _ = customer_orders
    token = stub.ListOrders(pb.ListOrdersRequest(customer_id=customer, page_size=2)).next_page_token
    assert token
    seen = fails(
        lambda: stub.ListOrders(pb.ListOrdersRequest(customer_id=unique("cust"), page_size=2, page_token=token))
    )
    assert_error_info(seen, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", DOMAIN)


# -- WatchOrder ---------------------------------------------------------------


def test_watch_order_of_a_finished_order_sends_it_and_ends_ok(stub: pbg.OrderServiceStub) -> None:
    order = place(stub, order_request())
    messages = list(stub.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=SAGA_TIMEOUT))
    assert [m.order for m in messages] == [order]


def test_watch_order_unknown_id_is_not_found_before_any_message(stub: pbg.OrderServiceStub) -> None:
    received: list[pb.WatchOrderResponse] = []

    def drain() -> None:
        received.extend(stub.WatchOrder(pb.WatchOrderRequest(order_id=unique("ord-missing"))))

    assert_error_info(fails(drain), grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", DOMAIN)
    assert received == []


def test_watch_order_without_an_id_is_invalid_argument(stub: pbg.OrderServiceStub) -> None:
    assert_bad_request(fails(lambda: list(stub.WatchOrder(pb.WatchOrderRequest()))), "order_id")


@contextmanager
def slow_payments(full_stack: Stack | None, delay_ms: int) -> Iterator[None]:
    """Delay every call to payments on Envoy's internal listener (the saga's route)."""
    if full_stack is None or not hasattr(full_stack, "set_runtime"):
        pytest.skip("needs the session's stack (Envoy's fault filter)")
    full_stack.set_runtime(fault__payments__delay_percent=100, fault__payments__delay_ms=delay_ms)
    try:
        yield
    finally:
        full_stack.set_runtime(fault__payments__delay_percent=0, fault__payments__delay_ms=0)


class InFlight:
    """A PlaceOrder running in a thread, and its order id once it is recorded."""

    def __init__(self, stub: pbg.OrderServiceStub, request: pb.PlaceOrderRequest, timeout: float) -> None:
        self.request = request
        self.error: grpc.RpcError | None = None
        self.reply: pb.PlaceOrderResponse | None = None

        def run() -> None:
            try:
                self.reply = stub.PlaceOrder(request, timeout=timeout)
            except grpc.RpcError as err:
                self.error = err

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def order_id(self, stub: pbg.OrderServiceStub) -> str:
        """The order's id, from ListOrders as soon as it is recorded (before the saga ends)."""
        for _ in range(2000):
            listed = stub.ListOrders(pb.ListOrdersRequest(customer_id=self.request.customer_id)).orders
            if listed:
                return listed[0].order_id
            if not self.thread.is_alive():
                break
        raise AssertionError(f"the order never showed in ListOrders (error: {self.error})")


def test_watch_order_streams_every_state_forward_until_confirmed(
    stub: pbg.OrderServiceStub, full_stack: Stack | None
) -> None:
    with slow_payments(full_stack, 1500):
        flight = InFlight(stub, order_request(), SAGA_TIMEOUT)
        order_id = flight.order_id(stub)
        states = [m.order.state for m in stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id), timeout=SAGA_TIMEOUT)]
        flight.thread.join(SAGA_TIMEOUT)
    names = [pb.OrderState.Name(s) for s in states]
    assert states == sorted(states), f"states went backwards: {names}"
    assert len(set(states)) == len(states), f"a state was sent twice: {names}"
    assert states[-1] == pb.ORDER_STATE_CONFIRMED and len(states) >= 2, names
    assert flight.reply is not None and flight.reply.order.order_id == order_id, flight.error


def test_watch_order_in_flight_ends_with_deadline_exceeded_or_cancelled(
    stub: pbg.OrderServiceStub, full_stack: Stack | None
) -> None:
    with slow_payments(full_stack, 1500):
        flight = InFlight(stub, order_request(), SAGA_TIMEOUT)
        order_id = flight.order_id(stub)
        short = stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id), timeout=0.5)
        assert_deadline_ended(fails(lambda: list(short)))
        cancelled = stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id), timeout=SAGA_TIMEOUT)
        assert next(cancelled).order.order_id == order_id
        cancelled.cancel()  # type: ignore[attr-defined]
        assert_code(fails(lambda: next(cancelled)), grpc.StatusCode.CANCELLED)
        flight.thread.join(SAGA_TIMEOUT)
    assert flight.reply is not None and flight.reply.order.state == pb.ORDER_STATE_CONFIRMED


def test_place_order_past_its_deadline_is_deadline_exceeded_and_the_order_still_completes(
    stub: pbg.OrderServiceStub,
    full_stack: Stack | None,
    inventory: inv_pbg.InventoryServiceStub | None,
) -> None:
    """The proto: a caller whose deadline passes has only stopped waiting; the
    order ends on its merits (here CONFIRMED), and a retry with the same
    request_id returns that outcome."""
    before = on_hand(inventory, SKU_A)
    request = order_request()
    with slow_payments(full_stack, 1500):
        seen = fails(lambda: stub.PlaceOrder(request, timeout=0.5))
        assert_deadline_ended(seen)
        listed = stub.ListOrders(pb.ListOrdersRequest(customer_id=request.customer_id)).orders
        assert len(listed) == 1, listed
        last = list(stub.WatchOrder(pb.WatchOrderRequest(order_id=listed[0].order_id), timeout=SAGA_TIMEOUT))[-1]
    assert last.order.state == pb.ORDER_STATE_CONFIRMED, last.order
    again = stub.PlaceOrder(request, timeout=SAGA_TIMEOUT).order
    assert (again.order_id, again.state) == (last.order.order_id, pb.ORDER_STATE_CONFIRMED), again
    if before is not None:
        assert on_hand(inventory, SKU_A) == (before[0] - 2, before[1])


# -- the wire -----------------------------------------------------------------


def test_oversized_request_is_resource_exhausted_and_the_service_carries_on(
    stub: pbg.OrderServiceStub,
) -> None:
    huge = pb.GetOrderRequest(order_id="x" * OVERSIZED_BYTES)
    assert_code(fails(lambda: stub.GetOrder(huge)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert stub.ListOrders(pb.ListOrdersRequest(page_size=1)) is not None


def test_malformed_request_is_refused_and_the_service_carries_on(
    channel: grpc.Channel, stub: pbg.OrderServiceStub
) -> None:
    check_malformed(channel, f"/{FULL_NAME}/GetOrder")
    assert stub.ListOrders(pb.ListOrdersRequest(page_size=1)) is not None


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    check_unknown_method(channel, FULL_NAME)


@pytest.mark.disruptive
def test_place_order_with_the_card_network_down_fails_dependency_unavailable(
    stub: pbg.OrderServiceStub, inventory: inv_pbg.InventoryServiceStub | None
) -> None:
    before = on_hand(inventory, SKU_A)
    order = place(stub, order_request("tok_unavailable"))
    assert_failed(order, pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE)
    if before is not None:
        assert on_hand(inventory, SKU_A) == before
