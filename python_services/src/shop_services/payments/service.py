"""shop.payments.v1.PaymentService on grpc.aio.

Charge is idempotent on request_id and Refund is idempotent (see store.py for
how). There is no real card network: the payment token decides the outcome,
as the proto documents (card_network below).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.type import money_pb2
from shop.payments.v1 import payment_service_pb2 as pb
from shop.payments.v1 import payment_service_pb2_grpc as pb_grpc

from shop_services.common.errors import RpcError, Violations, bad_request, error_info
from shop_services.common.server import Running, Service, create_server
from shop_services.common.tls import Tls
from shop_services.payments.store import (
    Authorization,
    ChargeInput,
    Outcome,
    PaymentNotFoundError,
    PaymentRecord,
    PaymentState,
    PaymentStore,
    RequestIdReusedError,
)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PaymentService"].full_name
DOMAIN = "payments.shop.example"

MAX_REQUEST_ID_LENGTH = 128
MAX_REFERENCE_LENGTH = 128
MAX_NANOS = 999_999_999
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")

TOKEN_SUCCESS = "tok_success"
TOKEN_DECLINED = "tok_declined"
TOKEN_UNAVAILABLE = "tok_unavailable"
TOKEN_FLAKY = "tok_flaky"
TEST_TOKENS = (TOKEN_SUCCESS, TOKEN_DECLINED, TOKEN_UNAVAILABLE, TOKEN_FLAKY)

_STATES = {
    PaymentState.SUCCEEDED: pb.PAYMENT_STATE_SUCCEEDED,
    PaymentState.REFUNDED: pb.PAYMENT_STATE_REFUNDED,
}


def card_network(payment_token: str, earlier_attempts: int) -> Authorization:
    """The simulated card network: each test token's documented behaviour.

    earlier_attempts counts the attempts of the same request_id that the
    network remembered; only tok_flaky asks it to remember one.
    """
    if payment_token == TOKEN_SUCCESS:
        return Authorization(Outcome.APPROVED)
    if payment_token == TOKEN_DECLINED:
        return Authorization(Outcome.DECLINED)
    if payment_token == TOKEN_UNAVAILABLE:
        return Authorization(Outcome.UNAVAILABLE)
    if payment_token == TOKEN_FLAKY:
        if earlier_attempts == 0:
            return Authorization(Outcome.UNAVAILABLE, remember_attempt=True)
        return Authorization(Outcome.APPROVED)
    # Validation refuses every other token before the network is asked.
    raise ValueError(f"unknown payment token {payment_token!r}")


class PaymentService(pb_grpc.PaymentServiceServicer):
    """Charges, refunds and looks up payments kept in a PaymentStore."""

    def __init__(self, store: PaymentStore, logger: logging.Logger) -> None:
        self._store = store
        self._logger = logger

    async def Charge(
        self,
        request: pb.ChargeRequest,
        context: grpc.aio.ServicerContext[pb.ChargeRequest, pb.ChargeResponse],
    ) -> pb.ChargeResponse:
        charge = validate_charge(request)
        self._logger.debug("charging", extra={"charge_request_id": charge.request_id, "token": charge.payment_token})
        try:
            result = await self._store.charge(charge, card_network)
        except RequestIdReusedError as exc:
            raise error_info(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {charge.request_id!r} was already used for a charge with a different amount or "
                "payment token; send a new request_id for a new charge.",
                reason="REQUEST_ID_REUSED",
                domain=DOMAIN,
                metadata={"request_id": exc.request_id},
            ) from exc
        if result.outcome is Outcome.DECLINED:
            raise error_info(
                grpc.StatusCode.FAILED_PRECONDITION,
                "The card was declined; ask the customer for another payment method.",
                reason="CARD_DECLINED",
                domain=DOMAIN,
            )
        if result.outcome is Outcome.UNAVAILABLE:
            raise error_info(
                grpc.StatusCode.UNAVAILABLE,
                "The card network is unavailable; retry the charge with the same request_id.",
                reason="PROCESSOR_UNAVAILABLE",
                domain=DOMAIN,
            )
        assert result.payment is not None
        return pb.ChargeResponse(payment=to_proto(result.payment))

    async def Refund(
        self,
        request: pb.RefundRequest,
        context: grpc.aio.ServicerContext[pb.RefundRequest, pb.RefundResponse],
    ) -> pb.RefundResponse:
        payment_id = validate_payment_id(request.payment_id)
        try:
            payment = await self._store.refund(payment_id)
        except PaymentNotFoundError as exc:
            raise payment_not_found(exc) from exc
        return pb.RefundResponse(payment=to_proto(payment))

    async def GetPayment(
        self,
        request: pb.GetPaymentRequest,
        context: grpc.aio.ServicerContext[pb.GetPaymentRequest, pb.GetPaymentResponse],
    ) -> pb.GetPaymentResponse:
        payment_id = validate_payment_id(request.payment_id)
        try:
            payment = await self._store.get(payment_id)
        except PaymentNotFoundError as exc:
            raise payment_not_found(exc) from exc
        return pb.GetPaymentResponse(payment=to_proto(payment))


def validate_charge(request: pb.ChargeRequest) -> ChargeInput:
    """The request as a ChargeInput, or INVALID_ARGUMENT naming every bad field."""
    violations = Violations()
    if not request.request_id:
        violations.add("request_id", "request_id is required")
    elif len(request.request_id) > MAX_REQUEST_ID_LENGTH:
        violations.add("request_id", f"request_id must be at most {MAX_REQUEST_ID_LENGTH} characters")
    if request.HasField("amount"):
        _validate_amount(request.amount, violations)
    else:
        violations.add("amount", "amount is required")
    if not request.payment_token:
        violations.add("payment_token", "payment_token is required")
    elif request.payment_token not in TEST_TOKENS:
        violations.add("payment_token", f"unknown payment token; use one of {', '.join(TEST_TOKENS)}")
    if len(request.reference) > MAX_REFERENCE_LENGTH:
        violations.add("reference", f"reference must be at most {MAX_REFERENCE_LENGTH} characters")
    violations.raise_if_any()
    return ChargeInput(
        request_id=request.request_id,
        currency_code=request.amount.currency_code,
        units=request.amount.units,
        nanos=request.amount.nanos,
        payment_token=request.payment_token,
        reference=request.reference,
    )


def _validate_amount(amount: Any, violations: Violations) -> None:
    """google.type.Money rules, plus: a charge is positive."""
    currency_code: str = amount.currency_code
    units: int = amount.units
    nanos: int = amount.nanos
    if not currency_code:
        violations.add("amount.currency_code", "currency_code is required")
    elif not _CURRENCY_CODE.fullmatch(currency_code):
        violations.add("amount.currency_code", "currency_code must be three upper-case letters (ISO 4217)")
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        violations.add("amount.nanos", f"nanos must be between -{MAX_NANOS} and {MAX_NANOS}")
    elif (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        violations.add("amount.nanos", "nanos must have the same sign as units")
    elif units < 0:
        violations.add("amount.units", "the amount must be positive")
    elif units == 0 and nanos < 0:
        violations.add("amount.nanos", "the amount must be positive")
    elif units == 0 and nanos == 0:
        violations.add("amount.units", "the amount must be positive, not zero")


def validate_payment_id(payment_id: str) -> str:
    if not payment_id:
        raise bad_request([("payment_id", "payment_id is required")])
    return payment_id


def payment_not_found(exc: PaymentNotFoundError) -> RpcError:
    return error_info(
        grpc.StatusCode.NOT_FOUND,
        f"No payment has id {exc.payment_id!r}; use the payment_id that Charge returned.",
        reason="PAYMENT_NOT_FOUND",
        domain=DOMAIN,
        metadata={"payment_id": exc.payment_id},
    )


def to_proto(payment: PaymentRecord) -> pb.Payment:
    message = pb.Payment(
        payment_id=payment.payment_id,
        request_id=payment.request_id,
        reference=payment.reference,
        amount=money_pb2.Money(currency_code=payment.currency_code, units=payment.units, nanos=payment.nanos),
        state=_STATES[payment.state],
        create_time=_timestamp(payment.create_time_ns),
    )
    if payment.refund_time_ns is not None:
        message.refund_time.CopyFrom(_timestamp(payment.refund_time_ns))
    return message


def _timestamp(ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


@dataclass(kw_only=True)
class PaymentsServer(Running):
    """A started payments server and the store it owns; stop() also closes the store."""

    store: PaymentStore

    async def stop(self, grace: float) -> None:
        """Drain for up to grace seconds (see Running.stop), then close the database."""
        try:
            await super().stop(grace)
        finally:
            await self.store.close()


async def create_payments_server(
    address: str,
    db_path: str | Path,
    logger: logging.Logger | None = None,
    tls: Tls | None = None,
) -> PaymentsServer:
    """Open the database, then build, bind and start the server (port 0 picks a free port)."""
    logger = logger or logging.getLogger("shop.payments")
    store = await PaymentStore.open(db_path)
    servicer = PaymentService(store, logger)
    service = Service(SERVICE_NAME, lambda server: pb_grpc.add_PaymentServiceServicer_to_server(servicer, server))
    try:
        running = await create_server(address, [service], logger, tls=tls)
    except BaseException:
        await store.close()
        raise
    return PaymentsServer(
        server=running.server, port=running.port, health=running.health, names=running.names, store=store
    )
