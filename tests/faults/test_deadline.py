"""A slow dependency and a caller's deadline shorter than the saga.

Payments is delayed 3 s by Envoy's fault filter; the caller gives PlaceOrder
1.5 s. The caller gets DEADLINE_EXCEEDED; the order (found by its customer)
must still end FAILED with reason DEADLINE_EXCEEDED, its stock released and
no money kept.
"""

from __future__ import annotations

import grpc
from e2e.support import Shop, describe_order, wait_for
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.stack import Stack


def test_a_deadline_shorter_than_the_saga_fails_the_order_and_undoes_it(private_stack: Stack, shop: Shop) -> None:
    sku = "sku-hand-grinder"
    shop.import_stock({sku: 18})
    before = shop.stock(sku)
    private_stack.set_runtime(**{"fault.payments.delay_percent": 100, "fault.payments.delay_ms": 3000})
    request = shop.order_request(sku, quantity=1)
    try:
        reply = shop.place(request, timeout=1.5)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{err.code().name}: {err.details()}"
    else:
        raise AssertionError(f"PlaceOrder beat a 3 s payments delay with a 1.5 s deadline: {describe_order(reply)}")

    listed = wait_for(
        "the order to be listed for its customer",
        lambda: shop.orders_of(request.customer_id),
        timeout=30,
    )
    assert len(listed) == 1, [describe_order(o) for o in listed]
    final = shop.wait_terminal(listed[0].order_id, timeout=60)
    assert final.state == orders_pb.ORDER_STATE_FAILED, describe_order(final)
    assert final.failure_reason == orders_pb.ORDER_FAILURE_REASON_DEADLINE_EXCEEDED, describe_order(final)
    after = shop.stock(sku)
    assert (after.on_hand, after.reserved) == (before.on_hand, before.reserved), f"{before} -> {after}"
    shop.assert_no_money_kept(final)
