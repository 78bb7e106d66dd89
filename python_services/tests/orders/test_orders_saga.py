"""The PlaceOrder saga against fake Catalog, Inventory and Payments servers."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc
from shop.payments.v1 import payment_service_pb2 as payments_pb

from orders.fakes import Fakes
from orders.support import order_request, watch_to_end
from shop_services.common.errors import error_info, error_reason
from support import DEADLINE


def assert_nothing_left(fakes: Fakes) -> None:
    """No stock still held and no money still taken."""
    assert fakes.inventory.held() == [], fakes.inventory.reservations
    assert fakes.payments.succeeded() == [], fakes.payments.payments


async def test_happy_path_confirms_and_prices_the_order(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    response = await orders.PlaceOrder(order_request("r-happy"), timeout=DEADLINE)
    order = response.order

    assert order.state == pb.ORDER_STATE_CONFIRMED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_UNSPECIFIED
    assert [(line.product_id, line.unit_price.units, line.line_total.units) for line in order.lines] == [
        ("sku-espresso-1kg", 12, 25),
        ("sku-mug", 8, 8),
    ]
    assert (order.total.currency_code, order.total.units, order.total.nanos) == ("USD", 33, 0)
    reservation = fakes.inventory.reservations[order.reservation_id]
    assert reservation.state == inventory_pb.RESERVATION_STATE_COMMITTED
    payment = fakes.payments.payments[order.payment_id]
    assert payment.state == payments_pb.PAYMENT_STATE_SUCCEEDED
    assert payment.amount == ("USD", 33, 0)
    # The steps' request ids are derived from the order.
    assert reservation.request_id == f"{order.order_id}/reserve"
    assert payment.request_id == f"{order.order_id}/charge"
    got = await orders.GetOrder(pb.GetOrderRequest(order_id=order.order_id), timeout=DEADLINE)
    assert got.order == order


async def test_x_request_id_flows_to_every_downstream_call(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    await orders.PlaceOrder(order_request("r-trace"), timeout=DEADLINE, metadata=(("x-request-id", "trace-42"),))
    calls = fakes.catalog.calls + fakes.inventory.calls + fakes.payments.calls
    assert sorted({c.method for c in calls}) == ["BatchGetProducts", "Charge", "Commit", "Reserve"]
    assert {c.request_id for c in calls} == {"trace-42"}


async def test_a_request_id_is_generated_when_the_caller_sends_none(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    await orders.PlaceOrder(order_request("r-notrace"), timeout=DEADLINE)
    ids = {c.request_id for c in fakes.catalog.calls + fakes.inventory.calls + fakes.payments.calls}
    assert len(ids) == 1 and None not in ids and "" not in ids, ids


async def test_unknown_product_fails_before_anything_is_reserved(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    request = order_request("r-unknown", lines=[("sku-espresso-1kg", 1), ("sku-nope", 1)])
    order = (await orders.PlaceOrder(request, timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_UNKNOWN_PRODUCT
    assert "sku-nope" in order.failure_message
    assert fakes.inventory.calls == [] and fakes.payments.calls == []


async def test_out_of_stock_fails_without_charging(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    fakes.inventory.available["sku-mug"] = 0
    order = (await orders.PlaceOrder(order_request("r-oos"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_OUT_OF_STOCK
    assert order.reservation_id == ""
    assert fakes.payments.calls == []
    assert fakes.inventory.seen("Release") == []
    assert_nothing_left(fakes)


async def test_declined_card_releases_the_reservation_once(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    order = (await orders.PlaceOrder(order_request("r-declined", token="tok_declined"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_CARD_DECLINED
    assert fakes.inventory.reservations[order.reservation_id].state == inventory_pb.RESERVATION_STATE_RELEASED
    assert len(fakes.inventory.seen("Release")) == 1
    assert fakes.inventory.available["sku-espresso-1kg"] == 100
    assert fakes.payments.payments == {}


async def test_payments_unavailable_fails_fast_with_dependency_unavailable(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    order = (await orders.PlaceOrder(order_request("r-unavail", token="tok_unavailable"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE
    # One quick retry, same request id; PROCESSOR_UNAVAILABLE means nothing was charged, so no replay.
    charges = fakes.payments.seen("Charge")
    assert [c.request.request_id for c in charges] == [f"{order.order_id}/charge"] * 2
    assert fakes.payments.seen("Refund") == []
    assert len(fakes.inventory.seen("Release")) == 1
    assert_nothing_left(fakes)


async def test_a_flaky_charge_is_retried_with_the_same_request_id(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    order = (await orders.PlaceOrder(order_request("r-flaky", token="tok_flaky"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_CONFIRMED, order
    charges = fakes.payments.seen("Charge")
    assert len(charges) == 2 and charges[0].request == charges[1].request
    assert len(fakes.payments.payments) == 1


async def test_commit_is_retried_after_the_charge(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    unavailable = error_info(grpc.StatusCode.UNAVAILABLE, "busy", reason="BUSY", domain="inventory.shop.example")
    fakes.inventory.commit_errors = [unavailable, unavailable, unavailable]
    order = (await orders.PlaceOrder(order_request("r-commit-retry"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_CONFIRMED, order
    assert len(fakes.inventory.seen("Commit")) == 4
    assert fakes.payments.payments[order.payment_id].state == payments_pb.PAYMENT_STATE_SUCCEEDED


async def test_expired_reservation_at_commit_refunds_and_fails(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    expired = error_info(
        grpc.StatusCode.FAILED_PRECONDITION, "expired", reason="RESERVATION_EXPIRED", domain="inventory.shop.example"
    )
    fakes.inventory.commit_errors = [expired]
    order = (await orders.PlaceOrder(order_request("r-expired"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_INTERNAL
    assert "expired" in order.failure_message
    payment = fakes.payments.payments[order.payment_id]
    assert payment.state == payments_pb.PAYMENT_STATE_REFUNDED and payment.refunds == 1
    assert_nothing_left(fakes)


async def test_commit_in_doubt_is_resolved_by_release(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    # Commit keeps failing with UNAVAILABLE (no details: in doubt) until its budget runs out.
    fakes.inventory.down.add("Commit")
    order = (await orders.PlaceOrder(order_request("r-commit-down"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE
    assert fakes.inventory.reservations[order.reservation_id].state == inventory_pb.RESERVATION_STATE_RELEASED
    assert fakes.payments.payments[order.payment_id].state == payments_pb.PAYMENT_STATE_REFUNDED
    assert_nothing_left(fakes)


async def test_compensation_that_cannot_finish_is_retried_by_recovery(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    # Payments is down (a proxy answers UNAVAILABLE): the charge is in doubt and cannot be resolved yet.
    fakes.payments.down.add("Charge")
    # Answered at once: the order failed, and is still being undone.
    order = (await orders.PlaceOrder(order_request("r-payments-down"), timeout=DEADLINE)).order
    assert order.state == pb.ORDER_STATE_COMPENSATING, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, order
    assert fakes.inventory.held() != []

    fakes.payments.down.clear()
    final = (await watch_to_end(orders, order.order_id))[-1]

    assert final.state == pb.ORDER_STATE_FAILED, final
    assert final.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE
    # The in-doubt charge was replayed with its request id, which charged, and was then refunded.
    assert {c.request.request_id for c in fakes.payments.seen("Charge")} == {f"{order.order_id}/charge"}
    assert [p.state for p in fakes.payments.payments.values()] == [payments_pb.PAYMENT_STATE_REFUNDED]
    assert_nothing_left(fakes)


async def test_place_order_is_idempotent_on_request_id(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    first = (await orders.PlaceOrder(order_request("r-idem"), timeout=DEADLINE)).order
    second = (await orders.PlaceOrder(order_request("r-idem"), timeout=DEADLINE)).order

    assert second == first
    assert len(fakes.catalog.calls) == 1
    assert len(fakes.inventory.seen("Reserve")) == 1
    assert len(fakes.payments.seen("Charge")) == 1


async def test_a_repeat_while_the_saga_runs_waits_for_the_same_saga(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    fakes.payments.charge_gate.close()
    first = asyncio.ensure_future(orders.PlaceOrder(order_request("r-concurrent"), timeout=DEADLINE))
    await asyncio.wait_for(fakes.payments.charge_gate.entered.wait(), DEADLINE)
    second = asyncio.ensure_future(orders.PlaceOrder(order_request("r-concurrent"), timeout=DEADLINE))
    fakes.payments.charge_gate.open()

    a, b = (await first).order, (await second).order
    assert a == b and a.state == pb.ORDER_STATE_CONFIRMED
    assert len(fakes.payments.payments) == 1 and len(fakes.inventory.reservations) == 1


async def test_request_id_reused_with_another_order_is_already_exists(orders: pb_grpc.OrderServiceAsyncStub) -> None:
    first = (await orders.PlaceOrder(order_request("r-reuse"), timeout=DEADLINE)).order
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(order_request("r-reuse", lines=[("sku-mug", 3)]), timeout=DEADLINE)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value
    assert error_reason(caught.value) == "REQUEST_ID_REUSED"
    assert first.order_id in (caught.value.details() or "")


async def test_steps_are_idempotent_on_their_derived_request_ids(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    # The reserve call hangs after reserving; the replay after the caller's deadline returns the same reservation.
    fakes.inventory.reserve_gate.close()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(order_request("r-step-idem"), timeout=3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    # Open the gate only once the first Reserve has ended by its deadline (the
    # order is COMPENSATING): opened earlier, that call could still return its
    # reservation, and there would be nothing in doubt to replay.
    give_up = time.monotonic() + DEADLINE
    while order.state != pb.ORDER_STATE_COMPENSATING:
        assert time.monotonic() < give_up, f"the order never started compensating: {order}"
        await asyncio.sleep(0.02)
        order = (await orders.GetOrder(pb.GetOrderRequest(order_id=order.order_id), timeout=DEADLINE)).order
    fakes.inventory.reserve_gate.open()
    final = (await watch_to_end(orders, order.order_id))[-1]

    reserves = fakes.inventory.seen("Reserve")
    assert {c.request.request_id for c in reserves} == {f"{order.order_id}/reserve"}
    assert len(reserves) >= 2 and len(fakes.inventory.reservations) == 1
    assert final.state == pb.ORDER_STATE_FAILED and final.failure_reason == pb.ORDER_FAILURE_REASON_DEADLINE_EXCEEDED
    assert_nothing_left(fakes)


async def test_every_downstream_call_gets_at_most_the_callers_time(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    # The step cap (20 s in the tests) is longer than the caller's 15 s, so the caller's deadline must bound each call.
    caller_deadline = time.monotonic() + 15
    await orders.PlaceOrder(order_request("r-deadline"), timeout=15)

    calls = fakes.catalog.calls + fakes.inventory.calls + fakes.payments.calls
    assert len(calls) == 4
    for seen in calls:
        assert seen.deadline is not None, seen
        assert seen.deadline <= caller_deadline + 0.5, (seen.method, seen.deadline - caller_deadline)


async def test_caller_deadline_shorter_than_a_slow_charge(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    # Charge takes the money, then hangs past the caller's deadline.
    fakes.payments.charge_gate.close()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(order_request("r-slow-charge"), timeout=4)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value

    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    final = (await watch_to_end(orders, order.order_id))[-1]
    assert final.state == pb.ORDER_STATE_FAILED, final
    assert final.failure_reason == pb.ORDER_FAILURE_REASON_DEADLINE_EXCEEDED
    assert_nothing_left(fakes)
    charges = fakes.payments.seen("Charge")
    if charges:  # on a very slow machine the deadline may pass before the charge
        assert charges[0].deadline is not None and charges[0].deadline <= started + 4 + 0.5
        assert [p.state for p in fakes.payments.payments.values()] == [payments_pb.PAYMENT_STATE_REFUNDED]


async def test_a_cancelled_caller_stops_the_saga_and_it_compensates(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    fakes.payments.charge_gate.close()
    call = orders.PlaceOrder(order_request("r-cancel"), timeout=DEADLINE)
    await asyncio.wait_for(fakes.payments.charge_gate.entered.wait(), DEADLINE)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    final = (await watch_to_end(orders, order.order_id))[-1]
    assert final.state == pb.ORDER_STATE_FAILED, final
    assert final.failure_reason == pb.ORDER_FAILURE_REASON_DEADLINE_EXCEEDED
    assert "cancelled" in final.failure_message
    assert [p.state for p in fakes.payments.payments.values()] == [payments_pb.PAYMENT_STATE_REFUNDED]
    assert_nothing_left(fakes)


async def test_watch_order_streams_every_state_until_terminal(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    fakes.inventory.reserve_gate.close()
    placing = asyncio.ensure_future(orders.PlaceOrder(order_request("r-watch"), timeout=DEADLINE))
    await asyncio.wait_for(fakes.inventory.reserve_gate.entered.wait(), DEADLINE)
    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    call = orders.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=DEADLINE)
    first = await call.read()
    assert first is not grpc.aio.EOF and first.order.state == pb.ORDER_STATE_PRICED, first
    fakes.inventory.reserve_gate.open()
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message.order.state)

    assert rest == [pb.ORDER_STATE_RESERVED, pb.ORDER_STATE_PAID, pb.ORDER_STATE_CONFIRMED]
    assert await call.code() == grpc.StatusCode.OK
    assert (await placing).order.state == pb.ORDER_STATE_CONFIRMED


async def test_watch_order_of_a_failed_order_shows_compensation(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    fakes.payments.charge_gate.close()
    placing = asyncio.ensure_future(orders.PlaceOrder(order_request("r-watch-fail"), timeout=4))
    await asyncio.wait_for(fakes.payments.charge_gate.entered.wait(), DEADLINE)
    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    states = [o.state for o in await watch_to_end(orders, order.order_id)]

    # Compensation may send more than one COMPENSATING message (payment_id appears, for one).
    assert list(dict.fromkeys(states)) == [pb.ORDER_STATE_RESERVED, pb.ORDER_STATE_COMPENSATING, pb.ORDER_STATE_FAILED]
    with pytest.raises(grpc.aio.AioRpcError):
        await placing
