"""Fake Catalog, Inventory and Payments servers for testing the orders service alone.

Each fake is a real grpc.aio server on a loopback port with a fake servicer
that subclasses the generated one. It keeps its state in memory, behaves like
the real service's contract (idempotency on request ids, the documented
ErrorInfo reasons, the payment tokens), records every call it sees (request,
x-request-id, deadline) and lets a test steer it: fail a method, make a
first-time call hang after doing its work (the in-doubt case), answer
UNAVAILABLE without details as a proxy does when the service is down (in
doubt: the proxy may have forwarded it), or answer the way Envoy answers a call
it never forwarded ("no healthy upstream", marked with x-shop-not-forwarded).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.type import money_pb2
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shop.payments.v1 import payment_service_pb2_grpc as payments_grpc

from shop_services.common.errors import RpcError, error_info
from shop_services.common.interceptors import request_id_of
from shop_services.orders.clients import NOT_FORWARDED_HEADER

Context = grpc.aio.ServicerContext[Any, Any]

PRODUCTS = {
    "sku-espresso-1kg": (12, 500_000_000),
    "sku-mug": (8, 0),
    "sku-grinder": (89, 990_000_000),
}


@dataclass
class Seen:
    """One call a fake received."""

    method: str
    request: Any
    request_id: str | None
    # time.monotonic() at which the call's deadline passes; None without one.
    deadline: float | None


class Gate:
    """Makes first-time calls hang, after doing their work, until opened."""

    def __init__(self) -> None:
        self.closed = False
        self.entered = asyncio.Event()
        self._open = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self._open.clear()

    def open(self) -> None:
        self.closed = False
        self._open.set()

    async def pass_through(self) -> None:
        if self.closed:
            self.entered.set()
            await self._open.wait()


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[Seen] = []
        # Methods that answer UNAVAILABLE with no details, like a proxy in front of a dead service.
        self.down: set[str] = set()
        # Method -> how many more calls are answered like a method in down (checked first).
        self.down_next: dict[str, int] = {}
        # Method -> how many more calls are answered as Envoy answers a call it never forwarded.
        self.not_forwarded: dict[str, int] = {}

    async def _seen(self, method: str, request: Any, context: Context) -> None:
        remaining = context.time_remaining()
        self.calls.append(
            Seen(
                method=method,
                request=request,
                request_id=request_id_of(context.invocation_metadata()),
                deadline=None if remaining is None else time.monotonic() + remaining,
            )
        )
        if self.down_next.get(method, 0) > 0:
            self.down_next[method] -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream connect error: connection refused")
        if self.not_forwarded.get(method, 0) > 0:
            self.not_forwarded[method] -= 1
            context.set_trailing_metadata(((NOT_FORWARDED_HEADER, "UH"),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")
        if method in self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream connect error: connection refused")

    def seen(self, method: str) -> list[Seen]:
        return [c for c in self.calls if c.method == method]


async def _fail(context: Context, error: RpcError) -> NoReturn:
    await context.abort_with_status(error.to_status())
    raise AssertionError("unreachable")


class FakeCatalog(catalog_grpc.CatalogServiceServicer, _Recorder):
    def __init__(self) -> None:
        _Recorder.__init__(self)
        self.products = dict(PRODUCTS)

    async def BatchGetProducts(
        self, request: catalog_pb.BatchGetProductsRequest, context: Context
    ) -> catalog_pb.BatchGetProductsResponse:
        await self._seen("BatchGetProducts", request, context)
        missing = [pid for pid in request.product_ids if pid not in self.products]
        if missing:
            await _fail(
                context,
                error_info(
                    grpc.StatusCode.NOT_FOUND,
                    f"Unknown product ids: {', '.join(missing)}.",
                    reason="PRODUCT_NOT_FOUND",
                    domain="catalog.shop.example",
                    metadata={"product_ids": ",".join(missing)},
                ),
            )
        products = []
        for pid in request.product_ids:
            units, nanos = self.products[pid]
            price = money_pb2.Money(currency_code="USD", units=units, nanos=nanos)
            products.append(catalog_pb.Product(id=pid, name=pid, price=price))
        return catalog_pb.BatchGetProductsResponse(products=products)


@dataclass
class FakeReservation:
    reservation_id: str
    request_id: str
    lines: dict[str, int]
    state: inventory_pb.ReservationState.ValueType = inventory_pb.RESERVATION_STATE_RESERVED

    def to_proto(self) -> inventory_pb.Reservation:
        return inventory_pb.Reservation(
            reservation_id=self.reservation_id,
            request_id=self.request_id,
            lines=[inventory_pb.ReservationLine(sku=s, quantity=q) for s, q in sorted(self.lines.items())],
            state=self.state,
        )


class FakeInventory(inventory_grpc.InventoryServiceServicer, _Recorder):
    def __init__(self) -> None:
        _Recorder.__init__(self)
        self.available: dict[str, int] = {sku: 100 for sku in PRODUCTS}
        self.reservations: dict[str, FakeReservation] = {}
        self._by_request: dict[str, str] = {}
        self._ids = itertools.count(1)
        self.reserve_gate = Gate()
        # Errors the next Commit calls answer with, first one first.
        self.commit_errors: list[RpcError] = []

    def held(self) -> list[FakeReservation]:
        """Reservations still holding stock."""
        return [r for r in self.reservations.values() if r.state == inventory_pb.RESERVATION_STATE_RESERVED]

    async def Reserve(self, request: inventory_pb.ReserveRequest, context: Context) -> inventory_pb.ReserveResponse:
        await self._seen("Reserve", request, context)
        known = self._by_request.get(request.request_id)
        if known is not None:
            return inventory_pb.ReserveResponse(reservation=self.reservations[known].to_proto())
        lines: dict[str, int] = {}
        for line in request.lines:
            lines[line.sku] = lines.get(line.sku, 0) + line.quantity
        unknown = [sku for sku in lines if sku not in self.available]
        if unknown:
            await _fail(context, _inventory_error(grpc.StatusCode.NOT_FOUND, "SKU_NOT_FOUND", unknown))
        short = [sku for sku, qty in lines.items() if self.available[sku] < qty]
        if short:
            await _fail(context, _inventory_error(grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK", short))
        for sku, qty in lines.items():
            self.available[sku] -= qty
        reservation = FakeReservation(f"res-{next(self._ids)}", request.request_id, lines)
        self.reservations[reservation.reservation_id] = reservation
        self._by_request[request.request_id] = reservation.reservation_id
        await self.reserve_gate.pass_through()
        return inventory_pb.ReserveResponse(reservation=reservation.to_proto())

    async def Commit(self, request: inventory_pb.CommitRequest, context: Context) -> inventory_pb.CommitResponse:
        await self._seen("Commit", request, context)
        if self.commit_errors:
            await _fail(context, self.commit_errors.pop(0))
        reservation = await self._find(request.reservation_id, context)
        if reservation.state == inventory_pb.RESERVATION_STATE_RESERVED:
            reservation.state = inventory_pb.RESERVATION_STATE_COMMITTED
        elif reservation.state != inventory_pb.RESERVATION_STATE_COMMITTED:
            reason = inventory_pb.ReservationState.Name(reservation.state).replace("_STATE", "")
            await _fail(context, _inventory_error(grpc.StatusCode.FAILED_PRECONDITION, reason, []))
        return inventory_pb.CommitResponse(reservation=reservation.to_proto())

    async def Release(self, request: inventory_pb.ReleaseRequest, context: Context) -> inventory_pb.ReleaseResponse:
        await self._seen("Release", request, context)
        reservation = await self._find(request.reservation_id, context)
        if reservation.state == inventory_pb.RESERVATION_STATE_COMMITTED:
            await _fail(context, _inventory_error(grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_COMMITTED", []))
        if reservation.state == inventory_pb.RESERVATION_STATE_RESERVED:
            reservation.state = inventory_pb.RESERVATION_STATE_RELEASED
            for sku, qty in reservation.lines.items():
                self.available[sku] += qty
        return inventory_pb.ReleaseResponse(reservation=reservation.to_proto())

    def expire(self, reservation_id: str) -> None:
        """Expire a reservation as the TTL would."""
        reservation = self.reservations[reservation_id]
        reservation.state = inventory_pb.RESERVATION_STATE_EXPIRED
        for sku, qty in reservation.lines.items():
            self.available[sku] += qty

    async def _find(self, reservation_id: str, context: Context) -> FakeReservation:
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            await _fail(context, _inventory_error(grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND", []))
        return reservation


def _inventory_error(code: grpc.StatusCode, reason: str, skus: list[str]) -> RpcError:
    return error_info(
        code,
        f"{reason.replace('_', ' ').capitalize()}: {', '.join(skus) or 'the reservation'}.",
        reason=reason,
        domain="inventory.shop.example",
        metadata={"skus": ",".join(skus)} if skus else None,
    )


@dataclass
class FakePayment:
    payment_id: str
    request_id: str
    amount: tuple[str, int, int]
    token: str
    state: payments_pb.PaymentState.ValueType = payments_pb.PAYMENT_STATE_SUCCEEDED
    refunds: int = field(default=0)

    def to_proto(self) -> payments_pb.Payment:
        currency, units, nanos = self.amount
        return payments_pb.Payment(
            payment_id=self.payment_id,
            request_id=self.request_id,
            amount=money_pb2.Money(currency_code=currency, units=units, nanos=nanos),
            state=self.state,
        )


class FakePayments(payments_grpc.PaymentServiceServicer, _Recorder):
    def __init__(self) -> None:
        _Recorder.__init__(self)
        self.payments: dict[str, FakePayment] = {}
        self._by_request: dict[str, str] = {}
        self._flaky_seen: set[str] = set()
        self._ids = itertools.count(1)
        self.charge_gate = Gate()

    def succeeded(self) -> list[FakePayment]:
        """Payments charged and not refunded."""
        return [p for p in self.payments.values() if p.state == payments_pb.PAYMENT_STATE_SUCCEEDED]

    async def Charge(self, request: payments_pb.ChargeRequest, context: Context) -> payments_pb.ChargeResponse:
        await self._seen("Charge", request, context)
        amount = (request.amount.currency_code, request.amount.units, request.amount.nanos)
        known = self._by_request.get(request.request_id)
        if known is not None:
            payment = self.payments[known]
            if payment.amount != amount or payment.token != request.payment_token:
                await _fail(context, _payments_error(grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED"))
            return payments_pb.ChargeResponse(payment=payment.to_proto())
        token = request.payment_token
        if token == "tok_declined":
            await _fail(context, _payments_error(grpc.StatusCode.FAILED_PRECONDITION, "CARD_DECLINED"))
        if token == "tok_unavailable" or (token == "tok_flaky" and request.request_id not in self._flaky_seen):
            self._flaky_seen.add(request.request_id)
            await _fail(context, _payments_error(grpc.StatusCode.UNAVAILABLE, "PROCESSOR_UNAVAILABLE"))
        if token not in ("tok_success", "tok_flaky"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payment_token: unknown token")
        payment = FakePayment(f"pay-{next(self._ids)}", request.request_id, amount, token)
        self.payments[payment.payment_id] = payment
        self._by_request[request.request_id] = payment.payment_id
        await self.charge_gate.pass_through()
        return payments_pb.ChargeResponse(payment=payment.to_proto())

    async def Refund(self, request: payments_pb.RefundRequest, context: Context) -> payments_pb.RefundResponse:
        await self._seen("Refund", request, context)
        payment = self.payments.get(request.payment_id)
        if payment is None:
            await _fail(context, _payments_error(grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND"))
        if payment.state == payments_pb.PAYMENT_STATE_SUCCEEDED:
            payment.state = payments_pb.PAYMENT_STATE_REFUNDED
            payment.refunds += 1
        return payments_pb.RefundResponse(payment=payment.to_proto())


def _payments_error(code: grpc.StatusCode, reason: str) -> RpcError:
    return error_info(
        code, f"The payment failed: {reason.replace('_', ' ').lower()}.", reason=reason, domain="payments.shop.example"
    )


@dataclass
class Fakes:
    """The three fakes, their servers and addresses."""

    catalog: FakeCatalog
    inventory: FakeInventory
    payments: FakePayments
    servers: list[grpc.aio.Server]
    addresses: dict[str, str]

    @classmethod
    async def start(cls) -> Fakes:
        catalog, inventory, payments = FakeCatalog(), FakeInventory(), FakePayments()
        registrations = [
            ("catalog", lambda s: catalog_grpc.add_CatalogServiceServicer_to_server(catalog, s)),
            ("inventory", lambda s: inventory_grpc.add_InventoryServiceServicer_to_server(inventory, s)),
            ("payments", lambda s: payments_grpc.add_PaymentServiceServicer_to_server(payments, s)),
        ]
        servers: list[grpc.aio.Server] = []
        addresses: dict[str, str] = {}
        for name, register in registrations:
            server = grpc.aio.server()
            register(server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            addresses[name] = f"127.0.0.1:{port}"
        return cls(catalog, inventory, payments, servers, addresses)

    async def stop(self) -> None:
        self.inventory.reserve_gate.open()
        self.payments.charge_gate.open()
        for server in self.servers:
            await server.stop(0)
