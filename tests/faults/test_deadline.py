"""A slow dependency and a caller's deadline shorter than the saga.

Payments is delayed 3 s by Envoy's fault filter; the caller gives PlaceOrder
1.5 s. The caller gets DEADLINE_EXCEEDED, but that only ends its wait: the
order (found by its customer) must still end CONFIRMED, with its stock
committed and the payment kept exactly once, and a retry with the same
request_id returns it (orders proto, PlaceOrder).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from e2e.support import Shop, describe_order, wait_for
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shopstack.stack import Stack


@pytest.fixture(scope="module")
def shop(reliability_stack: Stack) -> Iterator[Shop]:
    """Runtime faults only, nothing killed: the reliability stack serves (no stack of its own)."""
    with Shop.open(reliability_stack) as opened:
        yield opened


def test_a_deadline_shorter_than_the_saga_ends_the_wait_not_the_order(reliability_stack: Stack, shop: Shop) -> None:
    sku = "sku-hand-grinder"
    shop.import_stock({sku: 18})
    before = shop.stock(sku)
    reliability_stack.set_runtime(**{"fault.payments.delay_percent": 100, "fault.payments.delay_ms": 3000})
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
    assert final.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(final)
    after = shop.stock(sku)
    assert (after.on_hand, after.reserved) == (before.on_hand - 1, before.reserved), f"{before} -> {after}"
    assert shop.payment(final.payment_id).state == payments_pb.PAYMENT_STATE_SUCCEEDED
    retried = shop.place(request, timeout=30)
    assert (retried.order_id, retried.state) == (final.order_id, final.state), describe_order(retried)
