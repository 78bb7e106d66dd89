"""PaymentService through its generated stubs against a real server on port 0."""

from __future__ import annotations

import asyncio
import uuid
from typing import TypeAlias

import grpc
import pytest
from google.type import money_pb2
from shop.payments.v1 import payment_service_pb2 as pb
from shop.payments.v1 import payment_service_pb2_grpc as pb_grpc

from payments.support import PaymentsHarness
from shop_services.common.errors import decode_error
from support import DEADLINE

DOMAIN = "payments.shop.example"
# The async stub type exists for type checkers only (mypy-protobuf).
Stub: TypeAlias = "pb_grpc.PaymentServiceAsyncStub"


def money(units: int = 12, nanos: int = 500_000_000, currency_code: str = "EUR") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency_code, units=units, nanos=nanos)


def charge_request(
    token: str = "tok_success",
    *,
    request_id: str | None = None,
    amount: money_pb2.Money | None = None,
    reference: str = "order-1",
) -> pb.ChargeRequest:
    return pb.ChargeRequest(
        request_id=request_id if request_id is not None else f"req-{uuid.uuid4()}",
        amount=amount if amount is not None else money(),
        payment_token=token,
        reference=reference,
    )


async def charge(stub: Stub, request: pb.ChargeRequest) -> pb.Payment:
    response = await stub.Charge(request, timeout=DEADLINE)
    return response.payment


async def charge_fails(stub: Stub, request: pb.ChargeRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Charge(request, timeout=DEADLINE)
    return caught.value


# Happy paths


async def test_charge_with_tok_success_returns_a_succeeded_payment(payments: Stub) -> None:
    request = charge_request(reference="order-42")
    payment = await charge(payments, request)
    assert payment.payment_id.startswith("pay_")
    assert payment.request_id == request.request_id
    assert payment.reference == "order-42"
    assert payment.amount == request.amount
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED
    assert payment.HasField("create_time") and payment.create_time.seconds > 0
    assert not payment.HasField("refund_time")


async def test_get_payment_returns_the_stored_payment(payments: Stub) -> None:
    payment = await charge(payments, charge_request())
    got = await payments.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id), timeout=DEADLINE)
    assert got.payment == payment


async def test_refund_marks_the_payment_refunded(payments: Stub) -> None:
    payment = await charge(payments, charge_request())
    refunded = (await payments.Refund(pb.RefundRequest(payment_id=payment.payment_id), timeout=DEADLINE)).payment
    assert refunded.state == pb.PAYMENT_STATE_REFUNDED
    assert refunded.HasField("refund_time")
    assert refunded.payment_id == payment.payment_id
    assert refunded.amount == payment.amount
    assert refunded.create_time == payment.create_time
    got = await payments.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id), timeout=DEADLINE)
    assert got.payment == refunded


async def test_refund_is_idempotent(payments: Stub) -> None:
    payment = await charge(payments, charge_request())
    first = await payments.Refund(pb.RefundRequest(payment_id=payment.payment_id), timeout=DEADLINE)
    second = await payments.Refund(pb.RefundRequest(payment_id=payment.payment_id), timeout=DEADLINE)
    assert second.payment == first.payment


# Idempotency on request_id


async def test_charge_twice_with_one_request_id_makes_one_payment(payments: Stub) -> None:
    request = charge_request()
    first = await charge(payments, request)
    second = await charge(payments, request)
    assert second == first


async def test_concurrent_charges_with_one_request_id_make_one_payment(payments: Stub) -> None:
    request = charge_request()
    results = await asyncio.gather(*(charge(payments, request) for _ in range(10)))
    assert {p.payment_id for p in results} == {results[0].payment_id}


async def test_charge_replay_after_refund_returns_the_refunded_payment(payments: Stub) -> None:
    request = charge_request()
    payment = await charge(payments, request)
    await payments.Refund(pb.RefundRequest(payment_id=payment.payment_id), timeout=DEADLINE)
    replay = await charge(payments, request)
    assert replay.payment_id == payment.payment_id
    assert replay.state == pb.PAYMENT_STATE_REFUNDED


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"amount": money(units=99)}, id="other-units"),
        pytest.param({"amount": money(nanos=0)}, id="other-nanos"),
        pytest.param({"amount": money(currency_code="USD")}, id="other-currency"),
        pytest.param({"token": "tok_flaky"}, id="other-token"),
    ],
)
async def test_request_id_reused_with_a_different_charge_is_already_exists(
    payments: Stub, change: dict[str, object]
) -> None:
    original = charge_request()
    await charge(payments, original)
    token = str(change.get("token", original.payment_token))
    amount = change.get("amount", original.amount)
    assert isinstance(amount, money_pb2.Money)
    error = decode_error(
        await charge_fails(payments, charge_request(token, request_id=original.request_id, amount=amount))
    )
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
        DOMAIN,
    ), error


async def test_request_id_reused_with_another_reference_replays_the_payment(payments: Stub) -> None:
    # Only the amount and the token make a charge different (the proto's REQUEST_ID_REUSED).
    original = charge_request(reference="order-1")
    first = await charge(payments, original)
    again = charge_request(request_id=original.request_id, reference="order-2")
    assert await charge(payments, again) == first


# The test tokens


async def test_tok_declined_is_failed_precondition_card_declined_every_time(payments: Stub) -> None:
    request = charge_request("tok_declined")
    for _ in range(2):
        error = decode_error(await charge_fails(payments, request))
        assert (error.code, error.reason, error.domain) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "CARD_DECLINED",
            DOMAIN,
        ), error


async def test_tok_declined_records_nothing_so_the_request_id_stays_free(payments: Stub) -> None:
    declined = charge_request("tok_declined")
    await charge_fails(payments, declined)
    payment = await charge(payments, charge_request("tok_success", request_id=declined.request_id))
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED


async def test_tok_unavailable_is_unavailable_processor_unavailable_every_time(payments: Stub) -> None:
    request = charge_request("tok_unavailable")
    for _ in range(3):
        error = decode_error(await charge_fails(payments, request))
        assert (error.code, error.reason, error.domain) == (
            grpc.StatusCode.UNAVAILABLE,
            "PROCESSOR_UNAVAILABLE",
            DOMAIN,
        ), error
    payment = await charge(payments, charge_request("tok_success", request_id=request.request_id))
    assert payment.request_id == request.request_id


async def test_tok_flaky_fails_the_first_attempt_then_succeeds(payments: Stub) -> None:
    request = charge_request("tok_flaky")
    error = decode_error(await charge_fails(payments, request))
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.UNAVAILABLE,
        "PROCESSOR_UNAVAILABLE",
        DOMAIN,
    ), error
    payment = await charge(payments, request)
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED
    assert await charge(payments, request) == payment


async def test_tok_flaky_fails_once_per_request_id(payments: Stub) -> None:
    for _ in range(2):
        request = charge_request("tok_flaky")
        await charge_fails(payments, request)
        await charge(payments, request)


async def test_tok_flaky_retry_with_another_amount_is_request_id_reused(payments: Stub) -> None:
    request = charge_request("tok_flaky")
    await charge_fails(payments, request)
    error = decode_error(
        await charge_fails(payments, charge_request("tok_flaky", request_id=request.request_id, amount=money(units=1)))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED"), error


# Bad input


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        pytest.param({"request_id": ""}, ["request_id"], id="missing-request-id"),
        pytest.param({"request_id": "r" * 129}, ["request_id"], id="long-request-id"),
        pytest.param({"payment_token": ""}, ["payment_token"], id="missing-token"),
        pytest.param({"payment_token": "tok_visa"}, ["payment_token"], id="unknown-token"),
        pytest.param({"reference": "x" * 129}, ["reference"], id="long-reference"),
        pytest.param({"amount": None}, ["amount"], id="missing-amount"),
        pytest.param({"amount": money(currency_code="")}, ["amount.currency_code"], id="missing-currency"),
        pytest.param({"amount": money(currency_code="eur")}, ["amount.currency_code"], id="lower-case-currency"),
        pytest.param({"amount": money(currency_code="EURO")}, ["amount.currency_code"], id="long-currency"),
        pytest.param({"amount": money(units=0, nanos=0)}, ["amount.units"], id="zero"),
        pytest.param({"amount": money(units=-5, nanos=0)}, ["amount.units"], id="negative-units"),
        pytest.param({"amount": money(units=-5, nanos=-1)}, ["amount.units"], id="negative-units-and-nanos"),
        pytest.param({"amount": money(units=0, nanos=-1)}, ["amount.nanos"], id="negative-nanos"),
        pytest.param({"amount": money(units=1, nanos=1_000_000_000)}, ["amount.nanos"], id="nanos-too-big"),
        pytest.param({"amount": money(units=1, nanos=-1_000_000_000)}, ["amount.nanos"], id="nanos-too-small"),
        pytest.param({"amount": money(units=1, nanos=-1)}, ["amount.nanos"], id="sign-mismatch"),
        pytest.param(
            {"request_id": "", "payment_token": "nope", "amount": money(currency_code="X", units=0, nanos=0)},
            ["request_id", "amount.currency_code", "amount.units", "payment_token"],
            id="every-problem-at-once",
        ),
    ],
)
async def test_bad_charge_is_invalid_argument_naming_each_field(
    payments: Stub, request_fields: dict[str, object], fields: list[str]
) -> None:
    request = charge_request()
    for name, value in request_fields.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
        elif isinstance(value, money_pb2.Money):
            request.amount.CopyFrom(value)
        else:
            setattr(request, name, value)
    error = decode_error(await charge_fails(payments, request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.field_paths == fields, error


async def test_bad_charge_records_nothing(payments: Stub) -> None:
    request = charge_request(amount=money(units=0, nanos=0))
    await charge_fails(payments, request)
    payment = await charge(payments, charge_request(request_id=request.request_id))
    assert payment.request_id == request.request_id


@pytest.mark.parametrize("rpc", ["GetPayment", "Refund"])
async def test_missing_payment_id_is_invalid_argument(payments: Stub, rpc: str) -> None:
    request = pb.GetPaymentRequest() if rpc == "GetPayment" else pb.RefundRequest()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(payments, rpc)(request, timeout=DEADLINE)
    error = decode_error(caught.value)
    assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, ["payment_id"]), error


@pytest.mark.parametrize("rpc", ["GetPayment", "Refund"])
async def test_unknown_payment_id_is_not_found_payment_not_found(payments: Stub, rpc: str) -> None:
    request = (
        pb.GetPaymentRequest(payment_id="pay_nope") if rpc == "GetPayment" else pb.RefundRequest(payment_id="pay_nope")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(payments, rpc)(request, timeout=DEADLINE)
    error = decode_error(caught.value)
    assert (error.code, error.reason, error.domain) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND", DOMAIN), error
    assert error.metadata == {"payment_id": "pay_nope"}, error


# Durability


async def test_restart_keeps_payments_and_refunds(harness: PaymentsHarness, payments: Stub) -> None:
    kept = await charge(payments, charge_request())
    refunded = await charge(payments, charge_request())
    refunded = (await payments.Refund(pb.RefundRequest(payment_id=refunded.payment_id), timeout=DEADLINE)).payment

    restarted = await harness.restart()

    for payment in (kept, refunded):
        got = await restarted.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id), timeout=DEADLINE)
        assert got.payment == payment


async def test_restart_keeps_the_request_id_so_a_retry_does_not_charge_twice(
    harness: PaymentsHarness, payments: Stub
) -> None:
    request = charge_request()
    payment = await charge(payments, request)
    restarted = await harness.restart()
    assert await charge(restarted, request) == payment


async def test_tok_flaky_first_attempt_is_remembered_across_a_restart(harness: PaymentsHarness, payments: Stub) -> None:
    request = charge_request("tok_flaky")
    await charge_fails(payments, request)
    restarted = await harness.restart()
    payment = await charge(restarted, request)
    assert payment.state == pb.PAYMENT_STATE_SUCCEEDED


async def test_a_request_that_is_not_a_protobuf_is_internal_and_the_service_carries_on(
    harness: PaymentsHarness, payments: Stub
) -> None:
    # grpc-go and grpc-js answer undecodable bytes with INTERNAL; so does every Python service.
    assert harness.channel is not None
    raw = harness.channel.unary_unary("/shop.payments.v1.PaymentService/Charge")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\xff\xff\xff\xff", timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INTERNAL, caught.value
    assert (await charge(payments, charge_request())).state == pb.PAYMENT_STATE_SUCCEEDED
