"""A dependency stopped mid-run: the saga fails fast and cleanly, then recovers."""

from __future__ import annotations

import grpc
from e2e.support import ORDER_TIMEOUT, Shop, describe_order, wait_for
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.stack import Stack


def test_stopped_inventory_fails_orders_with_dependency_unavailable_then_recovers(
    private_stack: Stack, shop: Shop
) -> None:
    sku = "sku-french-press-1l"
    shop.import_stock({sku: 30})
    before = shop.stock(sku)
    request = shop.order_request(sku, quantity=1)

    private_stack.stop_program("inventory-node")
    try:
        # Fail fast: the saga returns DEPENDENCY_UNAVAILABLE instead of
        # waiting for its (generous) deadline.
        try:
            placed: orders_pb.Order | None = shop.place(request, timeout=ORDER_TIMEOUT)
            error = None
        except grpc.RpcError as err:
            placed, error = None, f"{err.code().name}: {err.details()}"
    finally:
        private_stack.start_program("inventory-node")
    private_stack.wait_healthy(60)
    shop.wait_routable()

    # Whatever the caller was told, the order must settle with nothing kept.
    order_id = wait_for(
        "the order to be listed for its customer",
        lambda: next((o.order_id for o in shop.orders_of(request.customer_id)), None),
    )
    settled = shop.wait_terminal(order_id, timeout=60)
    after = shop.stock(sku)
    assert (after.on_hand, after.reserved) == (before.on_hand, before.reserved), f"{before} -> {after}"
    assert not settled.payment_id, f"nothing should be charged: {describe_order(settled)}"

    assert error is None, (
        "PlaceOrder with inventory stopped should return the failed order "
        f"(reason DEPENDENCY_UNAVAILABLE), but the call failed with {error}; "
        f"the order later settled as {describe_order(settled)}"
    )
    assert placed is not None
    # FAILED, or COMPENSATING while an in-doubt reservation waits for
    # inventory to come back; either way it settled FAILED above.
    assert placed.state in (orders_pb.ORDER_STATE_FAILED, orders_pb.ORDER_STATE_COMPENSATING), describe_order(placed)
    assert settled.state == orders_pb.ORDER_STATE_FAILED, describe_order(settled)
    assert settled.failure_reason == orders_pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, describe_order(settled)
    assert placed.failure_reason == orders_pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, describe_order(placed)
    assert not placed.payment_id, describe_order(placed)

    # Recovered: a new order goes through.
    again = shop.place(shop.order_request(sku, quantity=1))
    assert again.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(again)
    assert shop.stock(sku).on_hand == before.on_hand - 1
