"""The orders service SIGKILLed mid-saga: its durable log lets the restarted
process finish the saga, and the totals agree across the three services.

Payments is slowed (Envoy's fault filter on the internal listener delays every
payments call 3 s), so the saga sits in the charge step long enough to kill
orders-python there; supervisord restarts it and its recovery pass picks the
order up.
"""

from __future__ import annotations

import threading

import grpc
from e2e.support import Shop, describe_order, state_name, wait_for
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shopstack.stack import Stack

EARLY = (
    orders_pb.ORDER_STATE_PENDING,
    orders_pb.ORDER_STATE_PRICED,
    orders_pb.ORDER_STATE_RESERVED,
    orders_pb.ORDER_STATE_PAID,
)


def test_orders_killed_mid_saga_finishes_it_after_restart_with_consistent_totals(
    private_stack: Stack, shop: Shop
) -> None:
    sku = "sku-moka-pot-6cup"
    shop.import_stock({sku: 40})
    before = shop.stock(sku)
    private_stack.set_runtime(**{"fault.payments.delay_percent": 100, "fault.payments.delay_ms": 3000})
    request = shop.order_request(sku, quantity=2)
    outcome: dict[str, object] = {}

    def place() -> None:
        try:
            outcome["order"] = shop.place(request, timeout=60)
        except grpc.RpcError as err:
            outcome["error"] = err

    caller = threading.Thread(target=place, daemon=True)
    caller.start()
    # Kill it while the charge is in flight (the stock is reserved by then).
    seen = wait_for(
        "the order to be RESERVED (charge in flight)",
        lambda: next(
            (o for o in shop.orders_of(request.customer_id) if o.state == orders_pb.ORDER_STATE_RESERVED), None
        ),
        timeout=30,
        interval=0.05,
    )
    assert seen.state in EARLY, describe_order(seen)
    old_pid = private_stack.pid_of("orders-python")
    private_stack.signal_program("orders-python", "KILL")
    wait_for(
        "supervisord to restart orders-python",
        lambda: private_stack.pid_of("orders-python") not in (None, old_pid),
        timeout=30,
    )
    private_stack.wait_healthy(60)
    shop.wait_routable()

    final = shop.wait_terminal(seen.order_id, timeout=60)
    caller.join(timeout=90)
    assert not caller.is_alive(), "PlaceOrder never returned"

    after = shop.stock(sku)
    assert after.reserved == before.reserved, f"a reservation was left behind: {before} -> {after}"
    if final.state == orders_pb.ORDER_STATE_CONFIRMED:
        assert after.on_hand == before.on_hand - 2, f"{describe_order(final)} but stock {before} -> {after}"
        assert final.payment_id, describe_order(final)
        payment = shop.payment(final.payment_id)
        assert payment.state == payments_pb.PAYMENT_STATE_SUCCEEDED, payment
        assert (payment.amount.units, payment.amount.nanos) == (final.total.units, final.total.nanos)
        assert payment.reference == final.order_id
    else:
        assert after.on_hand == before.on_hand, f"{describe_order(final)} but stock {before} -> {after}"
        shop.assert_no_money_kept(final)

    # The caller either got the finished order, or (its connection died with
    # the process) an UNAVAILABLE it may retry: the retry returns the same order.
    if "order" in outcome:
        got = outcome["order"]
        assert isinstance(got, orders_pb.Order)
        assert got.order_id == final.order_id and got.state == final.state, describe_order(got)
    else:
        err = outcome["error"]
        assert isinstance(err, grpc.RpcError)
        assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
    retried = shop.place(request, timeout=30)
    assert retried.order_id == final.order_id, f"{describe_order(retried)} vs {describe_order(final)}"
    assert state_name(retried) == state_name(final)
    assert [o.order_id for o in shop.orders_of(request.customer_id)] == [final.order_id]
