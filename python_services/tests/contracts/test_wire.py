"""One message of every proto package survives the wire format unchanged.

Each message fills every kind of field its package uses (strings, numbers,
enums, repeated fields, nested and well-known messages), so a stub generated
from the wrong protos, or a broken protobuf runtime, shows up here first.
"""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.type import money_pb2
from shop.catalog.v1 import catalog_service_pb2 as catalog
from shop.inventory.v1 import inventory_service_pb2 as inventory
from shop.orders.v1 import order_service_pb2 as orders
from shop.payments.v1 import payment_service_pb2 as payments

WHEN = timestamp_pb2.Timestamp(seconds=1_764_000_000, nanos=123_000_000)
LATER = timestamp_pb2.Timestamp(seconds=1_764_000_900)


def eur(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


MESSAGES: list[Message] = [
    catalog.ListProductsResponse(
        products=[
            catalog.Product(
                id="sku-espresso-beans-1kg",
                name="Espresso beans, 1 kg",
                description="Dark-roasted arabica and robusta blend.",
                price=eur(24, 900_000_000),
                tags=["beans", "coffee"],
                create_time=WHEN,
            )
        ],
        next_page_token="opaque-token",
    ),
    inventory.ReserveResponse(
        reservation=inventory.Reservation(
            reservation_id="9b2f4c1e-0000-4000-8000-000000000001",
            request_id="req-1",
            lines=[
                inventory.ReservationLine(sku="sku-a", quantity=2),
                inventory.ReservationLine(sku="sku-b", quantity=10_000),
            ],
            state=inventory.RESERVATION_STATE_RESERVED,
            create_time=WHEN,
            expire_time=LATER,
        )
    ),
    orders.GetOrderResponse(
        order=orders.Order(
            order_id="ord-1",
            request_id="req-2",
            customer_id="cust-1",
            lines=[
                orders.OrderLine(
                    product_id="sku-a", quantity=3, unit_price=eur(1, 500_000_000), line_total=eur(4, 500_000_000)
                )
            ],
            total=eur(4, 500_000_000),
            state=orders.ORDER_STATE_FAILED,
            failure_reason=orders.ORDER_FAILURE_REASON_CARD_DECLINED,
            failure_message="The card was declined.",
            reservation_id="res-1",
            create_time=WHEN,
            update_time=LATER,
        )
    ),
    payments.RefundResponse(
        payment=payments.Payment(
            payment_id="pay_0123456789abcdef",
            request_id="req-3",
            reference="ord-1",
            amount=eur(0, 990_000_000),
            state=payments.PAYMENT_STATE_REFUNDED,
            create_time=WHEN,
            refund_time=LATER,
        )
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.DESCRIPTOR.full_name)
def test_one_message_of_every_package_survives_the_wire_format(message: Message) -> None:
    wire = message.SerializeToString()
    decoded = type(message).FromString(wire)
    assert decoded == message
    assert decoded.SerializeToString(deterministic=True) == message.SerializeToString(deterministic=True)
    # Every field set above is on the wire: nothing was silently dropped.
    assert decoded.ListFields() == message.ListFields()


def test_every_proto_package_is_covered() -> None:
    packages = {m.DESCRIPTOR.file.package for m in MESSAGES}
    assert packages == {"shop.catalog.v1", "shop.inventory.v1", "shop.orders.v1", "shop.payments.v1"}
