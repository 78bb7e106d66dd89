"""The PlaceOrder saga against fake Catalog, Inventory and Payments servers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc
from shop.payments.v1 import payment_service_pb2 as payments_pb

from orders.fakes import Fakes
from orders.support import SETTINGS, OrdersHarness, order_request, watch_to_end
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
    # One quick retry, same request id; PROCESSOR_UNAVAILABLE (an answer) means nothing was charged, so no replay.
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


async def test_steps_are_idempotent_on_their_derived_request_ids(tmp_path: Path, fakes: Fakes) -> None:
    # The reserve call hangs after reserving until the step's time runs out: it
    # is in doubt, and compensation's replay returns the same reservation.
    fakes.inventory.reserve_gate.close()
    harness = OrdersHarness(tmp_path / "orders.db", fakes, replace(SETTINGS, step_timeout=1.5))
    orders = await harness.start()
    try:
        order = (await orders.PlaceOrder(order_request("r-step-idem"), timeout=DEADLINE)).order
        final = (await watch_to_end(orders, order.order_id))[-1]
    finally:
        fakes.inventory.reserve_gate.open()
        await harness.stop()

    reserves = fakes.inventory.seen("Reserve")
    assert {c.request.request_id for c in reserves} == {f"{order.order_id}/reserve"}
    assert len(reserves) >= 2 and len(fakes.inventory.reservations) == 1
    assert final.state == pb.ORDER_STATE_FAILED, final
    assert final.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, final
    assert_nothing_left(fakes)


async def test_every_downstream_call_gets_at_most_the_step_time(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    started = time.monotonic()
    await orders.PlaceOrder(order_request("r-deadline"), timeout=DEADLINE)

    calls = fakes.catalog.calls + fakes.inventory.calls + fakes.payments.calls
    assert len(calls) == 4
    for seen in calls:
        assert seen.deadline is not None, seen
        assert seen.deadline <= time.monotonic() + SETTINGS.step_timeout + 0.5, seen.method
        assert seen.deadline >= started + SETTINGS.step_timeout - 0.5, (
            seen.method,
            "the caller's deadline is not passed on",
        )


async def test_a_call_envoy_never_forwarded_is_retried_until_it_goes_through(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    # Payments restarting: Envoy answers "no healthy upstream" (marked) five times.
    fakes.payments.not_forwarded["Charge"] = 5
    order = (await orders.PlaceOrder(order_request("r-restart"), timeout=DEADLINE)).order

    assert order.state == pb.ORDER_STATE_CONFIRMED, order
    charges = fakes.payments.seen("Charge")
    assert len(charges) == 6 and {c.request.request_id for c in charges} == {f"{order.order_id}/charge"}
    assert len(fakes.payments.payments) == 1


async def test_a_charge_that_never_reached_payments_is_not_replayed_by_compensation(
    tmp_path: Path, fakes: Fakes
) -> None:
    # Payments stays unreachable for longer than the step's time: the order
    # fails, and since no attempt reached payments the charge is not in doubt:
    # compensation makes no charge (not even one refunded a moment later).
    fakes.payments.not_forwarded["Charge"] = 10_000
    harness = OrdersHarness(tmp_path / "orders.db", fakes, replace(SETTINGS, step_timeout=1.0))
    orders = await harness.start()
    try:
        order = (await orders.PlaceOrder(order_request("r-never-sent"), timeout=DEADLINE)).order
    finally:
        await harness.stop()

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, order
    assert len(fakes.payments.seen("Charge")) >= 3, "retried with backoff within the step's time"
    assert fakes.payments.payments == {} and fakes.payments.seen("Refund") == []
    assert len(fakes.inventory.seen("Release")) == 1
    assert_nothing_left(fakes)


async def test_a_refused_connection_is_never_in_doubt(tmp_path: Path, fakes: Fakes) -> None:
    # Nothing listens where payments should be: gRPC cannot connect, nothing
    # was sent, so the order fails at once instead of waiting, COMPENSATING,
    # for payments to come back and tell whether it charged.
    payments_server = fakes.servers[2]
    await payments_server.stop(0)
    harness = OrdersHarness(tmp_path / "orders.db", fakes, replace(SETTINGS, step_timeout=1.0))
    orders = await harness.start()
    try:
        order = (await orders.PlaceOrder(order_request("r-refused"), timeout=DEADLINE)).order
    finally:
        await harness.stop()

    assert order.state == pb.ORDER_STATE_FAILED, order
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, order
    assert "failed to connect" in order.failure_message, order.failure_message
    assert_nothing_left(fakes)


async def test_an_attempt_in_doubt_is_not_cleared_by_a_later_one_that_was_never_sent(
    tmp_path: Path, fakes: Fakes
) -> None:
    # The first Charge reaches payments and its answer is lost (a proxy's
    # UNAVAILABLE); every retry is then refused unforwarded. The charge stays in
    # doubt, so compensation replays it (same request id) once payments answers.
    fakes.payments.down_next["Charge"] = 1
    fakes.payments.not_forwarded["Charge"] = 10_000
    harness = OrdersHarness(tmp_path / "orders.db", fakes, replace(SETTINGS, step_timeout=1.0))
    orders = await harness.start()
    try:
        order = (await orders.PlaceOrder(order_request("r-doubt"), timeout=DEADLINE)).order
        # Still in doubt: compensation's replays are not forwarded either, so it waits.
        assert order.state == pb.ORDER_STATE_COMPENSATING, order
        assert order.failure_reason == pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, order
        fakes.payments.not_forwarded["Charge"] = 0
        final = (await watch_to_end(orders, order.order_id))[-1]
    finally:
        await harness.stop()

    assert final.state == pb.ORDER_STATE_FAILED, final
    assert [p.state for p in fakes.payments.payments.values()] == [payments_pb.PAYMENT_STATE_REFUNDED]
    assert_nothing_left(fakes)


async def test_a_caller_whose_deadline_passes_does_not_fail_the_order(
    orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes
) -> None:
    # Charge takes the money, then hangs past the caller's deadline.
    fakes.payments.charge_gate.close()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(order_request("r-slow-charge"), timeout=2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value

    # The saga goes on; a retry with the same request_id waits for its outcome.
    retry = asyncio.ensure_future(orders.PlaceOrder(order_request("r-slow-charge"), timeout=DEADLINE))
    await asyncio.sleep(0.2)
    fakes.payments.charge_gate.open()
    final = (await retry).order
    assert final.state == pb.ORDER_STATE_CONFIRMED, final
    assert [p.state for p in fakes.payments.payments.values()] == [payments_pb.PAYMENT_STATE_SUCCEEDED]
    assert len(fakes.payments.payments) == 1 and len(fakes.inventory.reservations) == 1


async def test_a_cancelled_caller_does_not_stop_the_saga(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    fakes.payments.charge_gate.close()
    call = orders.PlaceOrder(order_request("r-cancel"), timeout=DEADLINE)
    await asyncio.wait_for(fakes.payments.charge_gate.entered.wait(), DEADLINE)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    fakes.payments.charge_gate.open()

    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    final = (await watch_to_end(orders, order.order_id))[-1]
    assert final.state == pb.ORDER_STATE_CONFIRMED, final
    again = (await orders.PlaceOrder(order_request("r-cancel"), timeout=DEADLINE)).order
    assert again == final
    assert len(fakes.payments.payments) == 1


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
    fakes.inventory.reserve_gate.close()
    placing = asyncio.ensure_future(
        orders.PlaceOrder(order_request("r-watch-fail", token="tok_declined"), timeout=DEADLINE)
    )
    await asyncio.wait_for(fakes.inventory.reserve_gate.entered.wait(), DEADLINE)
    [order] = (await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    call = orders.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=DEADLINE)
    first = await call.read()
    assert first is not grpc.aio.EOF and first.order.state == pb.ORDER_STATE_PRICED, first
    fakes.inventory.reserve_gate.open()
    states = []
    while (message := await call.read()) is not grpc.aio.EOF:
        states.append(message.order.state)

    # Compensation may send more than one COMPENSATING message.
    assert list(dict.fromkeys(states)) == [pb.ORDER_STATE_RESERVED, pb.ORDER_STATE_COMPENSATING, pb.ORDER_STATE_FAILED]
    assert (await placing).order.failure_reason == pb.ORDER_FAILURE_REASON_CARD_DECLINED
