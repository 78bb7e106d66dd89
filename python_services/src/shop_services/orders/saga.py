"""The PlaceOrder saga: price, reserve, charge, commit; compensate on failure.

Forward steps, each a call through the generated stubs:

1. ``price``: catalog BatchGetProducts; PENDING -> PRICED.
2. ``reserve``: inventory Reserve, request id ``<order_id>/reserve``; -> RESERVED.
3. ``charge``: payments Charge, request id ``<order_id>/charge``; -> PAID.
4. ``commit``: inventory Commit of the reservation; -> CONFIRMED.

Durable log. Before a call the store records "step started" and sets the
order's ``pending_step``; after it, the outcome. The write that records an
outcome also records the next step as started (store.py, "Fewer
transactions"), and every write is on disk before the saga goes on.
A step is *in doubt* when it may have reached its dependency without the saga
learning the outcome: its call was cut off (a crash, a reset, a timeout; see
clients.py), or the process died with the step pending. A step whose every
attempt certainly never reached the dependency (Envoy's "no healthy upstream"
or overflow, a refused connection) is not in doubt: nothing happened there.
docs/conventions.md ("When a saga step is in doubt") lists the cases. Every
step is idempotent (Reserve and Charge on their derived request ids, Commit
and Release and Refund on their ids, BatchGetProducts has no side effects), so
driving a saga again from the log is always safe: replaying a step either
returns what the first attempt did or does it for the first time.

Time. Each forward call has SHOP_STEP_TIMEOUT_SECONDS, within which a call
that never reached its dependency is retried with backoff (a restart of a
dependency, or of Envoy, costs latency, not the order). Once an order is
recorded, its saga no longer depends on the caller: a caller that cancels,
loses its connection or runs out of time stops waiting, not the saga, which
ends CONFIRMED or FAILED on its merits (see coordinator.py). A step that runs
out of its time is DEPENDENCY_UNAVAILABLE.

Compensation runs in the saga's task too, every call bounded by the step
time. It goes:

1. resolve an in-doubt Reserve or Charge by replaying it with the same request
   id (a replayed charge that returns a payment is refunded below; one that is
   declined, or fails with PROCESSOR_UNAVAILABLE, charged nothing). A step
   that is not in doubt is never replayed, so compensation never makes a
   first charge or a first reservation;
2. release the reservation. Release also resolves an in-doubt Commit: if the
   inventory answers RESERVATION_COMMITTED the commit went through, nothing
   can be undone, and the order is CONFIRMED after all. A reservation that
   EXPIRED (or is unknown) holds no stock and counts as released;
3. refund the payment (a REFUNDED payment answers OK; an unknown one was
   never charged);
4. FAILED, with the reason of the first failure.

If a compensating call cannot get through (the dependency is down), the order
stays COMPENSATING and the recovery loop (every
SHOP_RECOVERY_INTERVAL_SECONDS, and once at start-up) drives it again until it
is done. The same loop finishes sagas a killed process left behind: a saga
that had not failed resumes forward, replaying its pending step.

Commit comes after the money is taken, so it is retried (it is idempotent)
for as long as the step's budget allows; if the reservation expired meanwhile
the charge is refunded and the order FAILS (reason INTERNAL).

Who runs a saga, recovery and draining: coordinator.py.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from google.type import money_pb2
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.orders.v1 import order_service_pb2 as pb
from shop.payments.v1 import payment_service_pb2 as payments_pb

from shop_services.orders import observe
from shop_services.orders.clients import CallFailedError, Clients, RequestT, ResponseT, call
from shop_services.orders.store import (
    PHASE_FAILED,
    PHASE_STARTED,
    STEP_CHARGE,
    STEP_COMMIT,
    STEP_PRICE,
    STEP_REFUND,
    STEP_RELEASE,
    STEP_RESERVE,
    Money,
    OrderRecord,
    Store,
)

Reason: TypeAlias = pb.OrderFailureReason.ValueType

# Commit may be retried more than the other steps: the charge is already made.
_COMMIT_ATTEMPTS = 8
_DEPENDENCY = {
    STEP_PRICE: "the catalog",
    STEP_RESERVE: "the inventory",
    STEP_CHARGE: "payments",
    STEP_COMMIT: "the inventory",
    STEP_RELEASE: "the inventory",
    STEP_REFUND: "payments",
}


@dataclass(frozen=True)
class SagaSettings:
    """Time budgets of the saga, in seconds."""

    # The most one step's calls may take, retries included.
    step_timeout: float = 5.0
    # The first pause before a retry (doubling, at most 0.5 s).
    retry_backoff: float = 0.1
    # How often unfinished sagas are driven again.
    recovery_interval: float = 5.0


def reserve_request_id(order_id: str) -> str:
    """The inventory request id of an order's reservation."""
    return f"{order_id}/reserve"


def charge_request_id(order_id: str) -> str:
    """The payments request id of an order's charge."""
    return f"{order_id}/charge"


class StepFailedError(Exception):
    """A forward step failed; the order must be compensated."""

    def __init__(self, step: str, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.reason = reason
        self.message = message


class _Undo(enum.Enum):
    """The outcome of one compensating call."""

    DONE = "done"
    NOT_YET = "not yet"
    COMMITTED = "committed"


class Saga:
    """Runs the steps of one order at a time against the store and the clients."""

    def __init__(self, store: Store, clients: Clients, settings: SagaSettings, logger: logging.Logger) -> None:
        self._store = store
        self._clients = clients
        self._settings = settings
        self._logger = logger

    # Forward.

    async def forward(self, order_id: str) -> None:
        """Run the remaining forward steps; return once CONFIRMED, raise StepFailedError on failure."""
        record = self._get(order_id)
        while True:
            if record.state == pb.ORDER_STATE_PENDING:
                record = await self._price(record)
            elif record.state == pb.ORDER_STATE_PRICED:
                record = await self._reserve(record)
            elif record.state == pb.ORDER_STATE_RESERVED:
                record = await self._charge(record)
            elif record.state == pb.ORDER_STATE_PAID:
                record = await self._commit(record)
            else:
                return

    async def _price(self, record: OrderRecord) -> OrderRecord:
        request = catalog_pb.BatchGetProductsRequest(product_ids=[line.product_id for line in record.lines])
        response = await self._step(record, STEP_PRICE, self._clients.catalog.BatchGetProducts, request)
        products = list(response.products)
        ids = [p.id for p in products]
        currencies = {p.price.currency_code for p in products}
        if ids != [line.product_id for line in record.lines] or len(currencies) != 1:
            detail = f"BatchGetProducts answered {ids} in {sorted(currencies)}"
            await self._store.step_failed(record.order_id, STEP_PRICE, detail, in_doubt=False)
            raise StepFailedError(STEP_PRICE, pb.ORDER_FAILURE_REASON_INTERNAL, f"The catalog {detail}.")
        prices = [Money(p.price.currency_code, p.price.units, p.price.nanos) for p in products]
        currency = prices[0].currency_code
        total = Money.from_nanos(
            currency, sum(p.times(line.quantity).total_nanos for p, line in zip(prices, record.lines, strict=True))
        )
        priced = await self._store.priced(record.order_id, prices, total, then=STEP_RESERVE)
        self._info(record, STEP_PRICE, "succeeded")
        return priced

    async def _reserve(self, record: OrderRecord) -> OrderRecord:
        response = await self._step(
            record, STEP_RESERVE, self._clients.inventory.Reserve, self._reserve_request(record)
        )
        reservation = response.reservation
        if reservation.state != inventory_pb.RESERVATION_STATE_RESERVED:
            # A replay long after the first attempt: the stock is no longer held.
            await self._store.reserved(record.order_id, reservation.reservation_id, advance=False)
            state = inventory_pb.ReservationState.Name(reservation.state)
            raise StepFailedError(
                STEP_RESERVE, pb.ORDER_FAILURE_REASON_INTERNAL, f"The reservation is already {state}."
            )
        reserved = await self._store.reserved(
            record.order_id, reservation.reservation_id, advance=True, then=STEP_CHARGE
        )
        self._info(record, STEP_RESERVE, "succeeded", reservation_id=reservation.reservation_id)
        return reserved

    async def _charge(self, record: OrderRecord) -> OrderRecord:
        response = await self._step(record, STEP_CHARGE, self._clients.payments.Charge, self._charge_request(record))
        payment = response.payment
        if payment.state != payments_pb.PAYMENT_STATE_SUCCEEDED:
            await self._store.paid(record.order_id, payment.payment_id, advance=False)
            state = payments_pb.PaymentState.Name(payment.state)
            raise StepFailedError(STEP_CHARGE, pb.ORDER_FAILURE_REASON_INTERNAL, f"The payment is already {state}.")
        paid = await self._store.paid(record.order_id, payment.payment_id, advance=True, then=STEP_COMMIT)
        self._info(record, STEP_CHARGE, "succeeded", payment_id=payment.payment_id)
        return paid

    async def _commit(self, record: OrderRecord) -> OrderRecord:
        request = inventory_pb.CommitRequest(reservation_id=record.reservation_id)
        await self._step(record, STEP_COMMIT, self._clients.inventory.Commit, request, attempts=_COMMIT_ATTEMPTS)
        confirmed = await self._store.confirmed(record.order_id, f"reservation_id={record.reservation_id}")
        observe.order_finished("confirmed")
        self._info(record, STEP_COMMIT, "succeeded; order confirmed")
        return confirmed

    async def _step(
        self,
        record: OrderRecord,
        step: str,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        *,
        attempts: int = 2,
    ) -> ResponseT:
        """One forward call: log started (unless the write before already did),
        call within the step's time, log a failure and raise it."""
        if record.pending_step != step:
            await self._store.step_started(record.order_id, step)
        try:
            with observe.step(record.order_id, step, observe.FORWARD):
                return await call(
                    method,
                    request,
                    budget=self._settings.step_timeout,
                    trace_id=record.trace_id,
                    backoff=self._settings.retry_backoff,
                    attempts=attempts,
                )
        except CallFailedError as failure:
            await self._store.step_failed(record.order_id, step, str(failure), in_doubt=failure.in_doubt)
            reason, message = self._failure(step, failure)
            self._info(record, step, "failed", code=failure.code.name, in_doubt=failure.in_doubt, error=message)
            raise StepFailedError(step, reason, message) from failure

    def _failure(self, step: str, failure: CallFailedError) -> tuple[Reason, str]:
        """Map a failed forward call to the order's failure reason and message."""
        who = _DEPENDENCY[step]
        code = failure.code
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return (
                pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE,
                f"{who.capitalize()} did not answer the {step} step within {self._settings.step_timeout:g} s.",
            )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return (
                pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE,
                f"{who.capitalize()} is unavailable ({step} step): {failure.message}",
            )
        if step == STEP_PRICE and code == grpc.StatusCode.NOT_FOUND:
            return pb.ORDER_FAILURE_REASON_UNKNOWN_PRODUCT, failure.message
        if step == STEP_RESERVE and failure.reason in ("OUT_OF_STOCK", "SKU_NOT_FOUND"):
            return pb.ORDER_FAILURE_REASON_OUT_OF_STOCK, failure.message
        if step == STEP_CHARGE and failure.reason == "CARD_DECLINED":
            return pb.ORDER_FAILURE_REASON_CARD_DECLINED, failure.message
        if step == STEP_CHARGE and "payment_token" in failure.fields:
            return pb.ORDER_FAILURE_REASON_CARD_DECLINED, f"Payments refused the payment token: {failure.message}"
        if step == STEP_COMMIT and failure.reason == "RESERVATION_EXPIRED":
            return (
                pb.ORDER_FAILURE_REASON_INTERNAL,
                "The reservation expired before it could be committed; the charge is refunded.",
            )
        return pb.ORDER_FAILURE_REASON_INTERNAL, f"{who.capitalize()} answered the {step} step with {failure}"

    # Compensation.

    async def compensate(self, order_id: str) -> None:
        """Undo what the saga did; return with the order FAILED, CONFIRMED, or still COMPENSATING."""
        record = self._get(order_id)
        if record.terminal:
            return
        resolved = True
        if record.pending_step == STEP_PRICE:
            await self._store.resolved_nothing(order_id, STEP_PRICE, "pricing has no side effects")
        elif record.pending_step == STEP_RESERVE:
            resolved = await self._resolve_reserve(record)
        elif record.pending_step == STEP_CHARGE:
            resolved = await self._resolve_charge(record)
        if not resolved:
            return
        record = self._get(order_id)
        if record.reservation_id and not record.reservation_released:
            outcome = await self._release(record)
            if outcome is _Undo.NOT_YET:
                return
            if outcome is _Undo.COMMITTED:
                await self._store.confirmed(
                    order_id, "Release found the reservation committed: the commit went through"
                )
                observe.order_finished("confirmed")
                self._info(record, STEP_RELEASE, "found the reservation committed; order confirmed")
                return
        record = self._get(order_id)
        if record.payment_id and not record.payment_refunded and await self._refund(record) is _Undo.NOT_YET:
            return
        await self._store.failed(order_id)
        observe.order_finished("failed", _reason_name(record.failure_reason))
        self._info(record, "compensation", "succeeded; order failed", reason=_reason_name(record.failure_reason))

    async def _resolve_reserve(self, record: OrderRecord) -> bool:
        """Replay an in-doubt Reserve; True once its outcome is recorded."""
        try:
            response = await self._undo_call(
                record, STEP_RESERVE, self._clients.inventory.Reserve, self._reserve_request(record)
            )
        except CallFailedError as failure:
            if failure.in_doubt or failure.never_sent:  # a replay that never got there resolves nothing
                return False
            await self._store.resolved_nothing(record.order_id, STEP_RESERVE, str(failure))
            return True
        await self._store.reserved(record.order_id, response.reservation.reservation_id, advance=False)
        return True

    async def _resolve_charge(self, record: OrderRecord) -> bool:
        """Replay an in-doubt Charge; True once its outcome is recorded."""
        try:
            response = await self._undo_call(
                record, STEP_CHARGE, self._clients.payments.Charge, self._charge_request(record)
            )
        except CallFailedError as failure:
            if failure.in_doubt or failure.never_sent:  # a replay that never got there resolves nothing
                return False
            await self._store.resolved_nothing(record.order_id, STEP_CHARGE, str(failure))
            return True
        await self._store.paid(record.order_id, response.payment.payment_id, advance=False)
        return True

    async def _release(self, record: OrderRecord) -> _Undo:
        request = inventory_pb.ReleaseRequest(reservation_id=record.reservation_id)
        try:
            response = await self._undo_call(record, STEP_RELEASE, self._clients.inventory.Release, request)
        except CallFailedError as failure:
            if failure.reason == "RESERVATION_COMMITTED":
                return _Undo.COMMITTED
            if failure.reason in ("RESERVATION_EXPIRED", "RESERVATION_NOT_FOUND"):
                await self._store.released(record.order_id, f"nothing held: {failure}")
                return _Undo.DONE
            return _Undo.NOT_YET
        state = inventory_pb.ReservationState.Name(response.reservation.state)
        await self._store.released(record.order_id, f"reservation {record.reservation_id} {state}")
        return _Undo.DONE

    async def _refund(self, record: OrderRecord) -> _Undo:
        request = payments_pb.RefundRequest(payment_id=record.payment_id)
        try:
            response = await self._undo_call(record, STEP_REFUND, self._clients.payments.Refund, request)
        except CallFailedError as failure:
            if failure.reason == "PAYMENT_NOT_FOUND":
                await self._store.refunded(record.order_id, f"nothing charged: {failure}")
                return _Undo.DONE
            return _Undo.NOT_YET
        state = payments_pb.PaymentState.Name(response.payment.state)
        await self._store.refunded(record.order_id, f"payment {record.payment_id} {state}")
        return _Undo.DONE

    async def _undo_call(
        self,
        record: OrderRecord,
        step: str,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
    ) -> ResponseT:
        """A compensating (or resolving) call, bounded by the step cap; logged, never pending."""
        await self._store.log(record.order_id, step, PHASE_STARTED, "compensation")
        try:
            with observe.step(record.order_id, step, observe.undo_kind(step)):
                return await call(
                    method,
                    request,
                    budget=self._settings.step_timeout,
                    trace_id=record.trace_id,
                    backoff=self._settings.retry_backoff,
                )
        except CallFailedError as failure:
            await self._store.log(record.order_id, step, PHASE_FAILED, str(failure))
            level = logging.WARNING if failure.in_doubt or failure.retryable else logging.ERROR
            self._logger.log(
                level,
                "compensation call failed",
                extra={"order_id": record.order_id, "step": step, "error": str(failure), "request_id": record.trace_id},
            )
            raise

    # Helpers.

    def _reserve_request(self, record: OrderRecord) -> inventory_pb.ReserveRequest:
        lines = [inventory_pb.ReservationLine(sku=line.product_id, quantity=line.quantity) for line in record.lines]
        return inventory_pb.ReserveRequest(request_id=reserve_request_id(record.order_id), lines=lines)

    def _charge_request(self, record: OrderRecord) -> payments_pb.ChargeRequest:
        total = record.total
        assert total is not None, "an order is priced before it is charged"
        amount = money_pb2.Money(currency_code=total.currency_code, units=total.units, nanos=total.nanos)
        return payments_pb.ChargeRequest(
            request_id=charge_request_id(record.order_id),
            amount=amount,
            payment_token=record.payment_token,
            reference=record.order_id,
        )

    def _get(self, order_id: str) -> OrderRecord:
        record = self._store.get(order_id)
        if record is None:
            raise KeyError(f"order {order_id} does not exist")
        return record

    def _info(self, record: OrderRecord, step: str, outcome: str, **extra: object) -> None:
        self._logger.info(
            "saga step",
            extra={
                "order_id": record.order_id,
                "step": step,
                "outcome": outcome,
                "request_id": record.trace_id,
                **extra,
            },
        )


def _reason_name(reason: Reason) -> str:
    return pb.OrderFailureReason.Name(reason)
