"""Contract suite for shop.payments.v1.PaymentService (protos/shop/payments/v1).

The payment tokens decide every outcome (see the service comment in the
proto). Through Envoy, which retries UNAVAILABLE on IDEMPOTENT methods,
tok_flaky's first failure is retried away and the caller sees success.
"""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest
from google.type import money_pb2
from shop.payments.v1 import payment_service_pb2 as pb
from shop.payments.v1 import payment_service_pb2_grpc as pbg

from .conftest import Target
from .support import (
    OVERSIZED_BYTES,
    assert_bad_request,
    assert_code,
    assert_error_info,
    check_malformed,
    check_unknown_method,
    fails,
    money,
    unique,
)

SERVICE = "payments"
FULL_NAME = "shop.payments.v1.PaymentService"
DOMAIN = "payments.shop.example"
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pbg.PaymentServiceStub:
    return pbg.PaymentServiceStub(channel)


def eur(units: int, nanos: int = 0, currency: str = "EUR") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def charge_request(token: str = "tok_success", **fields: object) -> pb.ChargeRequest:
    values: dict[str, object] = {
        "request_id": unique("req"),
        "amount": eur(12, 340000000),
        "payment_token": token,
        "reference": unique("order"),
    }
    values.update(fields)
    return pb.ChargeRequest(**values)  # type: ignore[arg-type]


# -- Charge -------------------------------------------------------------------


def test_charge_with_tok_success_records_a_succeeded_payment(stub: pbg.PaymentServiceStub) -> None:
    request = charge_request()
    payment = stub.Charge(request).payment
    assert payment.payment_id
    assert payment.request_id == request.request_id
    assert payment.reference == request.reference
    assert money(payment.amount) == ("EUR", Decimal("12.34"))
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED
    assert payment.create_time.seconds > 0
    assert not payment.HasField("refund_time")


def test_charge_without_reference_is_fine(stub: pbg.PaymentServiceStub) -> None:
    payment = stub.Charge(charge_request(reference="")).payment
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED and payment.reference == ""


def test_charge_repeated_returns_the_stored_payment(stub: pbg.PaymentServiceStub) -> None:
    request = charge_request()
    first = stub.Charge(request).payment
    second = stub.Charge(request).payment
    assert second == first


@pytest.mark.parametrize(
    "change",
    [{"amount": eur(99)}, {"payment_token": "tok_flaky"}],
    ids=["different-amount", "different-token"],
)
def test_charge_request_id_reused_for_another_charge_is_already_exists(
    stub: pbg.PaymentServiceStub, change: dict[str, object]
) -> None:
    request = charge_request()
    stub.Charge(request)
    reused = pb.ChargeRequest()
    reused.CopyFrom(request)
    for name, value in change.items():
        if isinstance(value, money_pb2.Money):
            getattr(reused, name).CopyFrom(value)
        else:
            setattr(reused, name, value)
    seen = fails(lambda: stub.Charge(reused))
    assert_error_info(seen, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED", DOMAIN)


def test_charge_with_tok_declined_is_card_declined_every_time(stub: pbg.PaymentServiceStub) -> None:
    request = charge_request("tok_declined")
    for _ in range(2):
        seen = fails(lambda: stub.Charge(request))
        assert_error_info(seen, FAILED_PRECONDITION, "CARD_DECLINED", DOMAIN)


def test_charge_with_tok_flaky_succeeds_on_the_retry(stub: pbg.PaymentServiceStub, target: Target) -> None:
    request = charge_request("tok_flaky")
    if not target.via_envoy:
        seen = fails(lambda: stub.Charge(request))
        assert_error_info(seen, grpc.StatusCode.UNAVAILABLE, "PROCESSOR_UNAVAILABLE", DOMAIN)
    # Through Envoy the first UNAVAILABLE is retried by the proxy: one call succeeds.
    payment = stub.Charge(request).payment
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED
    assert payment.request_id == request.request_id
    assert stub.Charge(request).payment == payment  # and a repeat never charges twice


def test_charge_with_an_unknown_token_is_invalid_argument(stub: pbg.PaymentServiceStub) -> None:
    seen = fails(lambda: stub.Charge(charge_request("tok_nope")))
    assert_bad_request(seen, "payment_token")


@pytest.mark.parametrize(
    ("fields", "paths"),
    [
        ({"request_id": ""}, ["request_id"]),
        ({"request_id": "r" * 129}, ["request_id"]),
        ({"payment_token": ""}, ["payment_token"]),
        ({"reference": "r" * 129}, ["reference"]),
        ({"amount": None}, ["amount"]),
        ({"amount": eur(0)}, ["amount.units"]),
        ({"amount": eur(-5)}, ["amount.units"]),
        ({"amount": eur(5, currency="")}, ["amount.currency_code"]),
        ({"amount": eur(5, currency="eu")}, ["amount.currency_code"]),
        ({"request_id": "", "payment_token": ""}, ["request_id", "payment_token"]),
    ],
    ids=[
        "empty-request-id",
        "request-id-129-chars",
        "empty-token",
        "reference-129-chars",
        "no-amount",
        "zero-amount",
        "negative-amount",
        "no-currency",
        "bad-currency",
        "two-problems",
    ],
)
def test_charge_bad_input_is_invalid_argument_naming_each_field(
    stub: pbg.PaymentServiceStub, fields: dict[str, object], paths: list[str]
) -> None:
    request = charge_request()
    for name, value in fields.items():
        if value is None:
            request.ClearField(name)
        elif isinstance(value, money_pb2.Money):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    seen = fails(lambda: stub.Charge(request))
    assert_bad_request(seen, *paths)


def test_charge_request_id_of_128_chars_is_accepted(stub: pbg.PaymentServiceStub) -> None:
    request_id = (unique("req") + "x" * 128)[:128]
    payment = stub.Charge(charge_request(request_id=request_id)).payment
    assert payment.request_id == request_id


# -- Refund and GetPayment ----------------------------------------------------


def test_refund_returns_the_full_amount_and_is_idempotent(stub: pbg.PaymentServiceStub) -> None:
    charged = stub.Charge(charge_request()).payment
    refunded = stub.Refund(pb.RefundRequest(payment_id=charged.payment_id)).payment
    assert refunded.payment_id == charged.payment_id
    assert refunded.state == pb.PAYMENT_STATE_REFUNDED
    assert refunded.amount == charged.amount
    assert refunded.HasField("refund_time")
    again = stub.Refund(pb.RefundRequest(payment_id=charged.payment_id)).payment
    assert again == refunded


def test_get_payment_shows_the_payment_before_and_after_refund(
    stub: pbg.PaymentServiceStub,
) -> None:
    charged = stub.Charge(charge_request()).payment
    assert stub.GetPayment(pb.GetPaymentRequest(payment_id=charged.payment_id)).payment == charged
    refunded = stub.Refund(pb.RefundRequest(payment_id=charged.payment_id)).payment
    assert stub.GetPayment(pb.GetPaymentRequest(payment_id=charged.payment_id)).payment == refunded


def test_refund_and_get_payment_of_an_unknown_id_are_payment_not_found(
    stub: pbg.PaymentServiceStub,
) -> None:
    missing = unique("pay-missing")
    for call in (
        lambda: stub.Refund(pb.RefundRequest(payment_id=missing)),
        lambda: stub.GetPayment(pb.GetPaymentRequest(payment_id=missing)),
    ):
        seen = fails(call)
        assert_error_info(seen, grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND", DOMAIN)


def test_refund_and_get_payment_without_an_id_are_invalid_argument(
    stub: pbg.PaymentServiceStub,
) -> None:
    assert_bad_request(fails(lambda: stub.Refund(pb.RefundRequest())), "payment_id")
    assert_bad_request(fails(lambda: stub.GetPayment(pb.GetPaymentRequest())), "payment_id")


# -- the wire -----------------------------------------------------------------


def test_oversized_request_is_resource_exhausted_and_the_service_carries_on(
    stub: pbg.PaymentServiceStub,
) -> None:
    huge = pb.GetPaymentRequest(payment_id="x" * OVERSIZED_BYTES)
    assert_code(fails(lambda: stub.GetPayment(huge)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert stub.Charge(charge_request()).payment.state == pb.PAYMENT_STATE_SUCCEEDED


def test_malformed_request_is_refused_and_the_service_carries_on(
    channel: grpc.Channel, stub: pbg.PaymentServiceStub
) -> None:
    check_malformed(channel, f"/{FULL_NAME}/Charge")
    assert stub.Charge(charge_request()).payment.state == pb.PAYMENT_STATE_SUCCEEDED


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    check_unknown_method(channel, FULL_NAME)


@pytest.mark.disruptive
def test_charge_with_tok_unavailable_is_unavailable_every_time_and_the_service_carries_on(
    stub: pbg.PaymentServiceStub,
) -> None:
    request = charge_request("tok_unavailable")
    for _ in range(2):
        seen = fails(lambda: stub.Charge(request))
        assert_error_info(seen, grpc.StatusCode.UNAVAILABLE, "PROCESSOR_UNAVAILABLE", DOMAIN)
    # The card network being down is not the service being down.
    assert stub.Charge(charge_request()).payment.state == pb.PAYMENT_STATE_SUCCEEDED
