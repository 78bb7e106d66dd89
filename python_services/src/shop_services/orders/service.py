"""The OrderService servicer and the factory that builds a running orders server.

PlaceOrder validates the request, records the order (or finds the one its
request_id already made) and hands it to the saga :class:`Coordinator`, which
runs every saga in a task it owns. The handler waits for that task with
asyncio.wait (which, like asyncio.shield, never cancels it) within the caller's
deadline. If the caller's time runs out, or it cancels, or its connection
drops, only the waiting stops: the saga runs on to CONFIRMED or FAILED, and a
repeated PlaceOrder with the same request_id waits (within its own deadline)
for that same saga and never starts a second one. The same request_id with a
different body is ALREADY_EXISTS, reason REQUEST_ID_REUSED.

x-request-id is taken from the call (or generated when the caller sent none)
and stored with the order, so every downstream call of its saga, including
those made by recovery after a restart, carries it.

ListOrders pages newest first with opaque page tokens: the position and the
customer_id filter, signed with HMAC-SHA256 under a secret kept in the
database, so a token survives a restart but an altered token, or one used with
another filter, is INVALID_ARGUMENT, reason INVALID_PAGE_TOKEN.

Customers. Behind the edge, the caller's customer is the x-shop-customer
header, which Envoy sets from a verified token's subject (and removes from
anything a caller sends). With it, PlaceOrder takes the customer from it (a
different customer_id in the body is PERMISSION_DENIED, reason
CUSTOMER_MISMATCH), ListOrders lists only that customer's orders, and
GetOrder and WatchOrder answer another customer's order as NOT_FOUND, exactly
as an unknown id. Without it the caller is a trusted peer holding one of the
shop's certificates (an operator, the contract suites) and sees every order.

WatchOrder subscribes to the store's change notifications before it reads the
order, so no change between the read and the first wait is lost; it sends the
order whenever what a client can see of it changes, and ends at a terminal
state. A cancelled watch removes its listener.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from google.type import money_pb2
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc

from shop_services.common.errors import RpcError, Violations, error_info
from shop_services.common.interceptors import request_id_of
from shop_services.common.server import Running, Service, create_server
from shop_services.common.tls import Tls
from shop_services.orders.clients import Clients, Dependencies
from shop_services.orders.coordinator import Coordinator
from shop_services.orders.saga import SagaSettings
from shop_services.orders.store import Line, Money, NewOrder, OrderRecord, RequestIdReusedError, Store

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OrderService"].full_name
DOMAIN = "orders.shop.example"

# Set by Envoy from a verified customer token (docs/security.md).
CUSTOMER_HEADER = "x-shop-customer"

MAX_ID_LENGTH = 128
MAX_LINES = 50
MAX_QUANTITY = 999
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

Context = grpc.aio.ServicerContext[Any, Any]


class Watchers:
    """The queues of every WatchOrder stream, by order id."""

    def __init__(self) -> None:
        # order_id -> the queues of the streams watching it.
        self._queues: dict[str, set[asyncio.Queue[OrderRecord]]] = {}

    def add(self, order_id: str) -> asyncio.Queue[OrderRecord]:
        queue: asyncio.Queue[OrderRecord] = asyncio.Queue()
        self._queues.setdefault(order_id, set()).add(queue)
        return queue

    def remove(self, order_id: str, queue: asyncio.Queue[OrderRecord]) -> None:
        queues = self._queues.get(order_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._queues[order_id]

    def publish(self, record: OrderRecord) -> None:
        for queue in self._queues.get(record.order_id, ()):
            queue.put_nowait(record)

    def __len__(self) -> int:
        return sum(len(queues) for queues in self._queues.values())


class OrderService(pb_grpc.OrderServiceServicer):
    """shop.orders.v1.OrderService on the store and the saga coordinator."""

    def __init__(self, store: Store, coordinator: Coordinator, logger: logging.Logger) -> None:
        self._store = store
        self._coordinator = coordinator
        self._logger = logger
        self._watchers = Watchers()
        store.subscribe(self._watchers.publish)

    @property
    def watchers(self) -> int:
        """How many WatchOrder streams are open."""
        return len(self._watchers)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: Context) -> pb.PlaceOrderResponse:
        customer = _signed_in(context)
        lines = _validate_place_order(request, customer)
        customer_id = _own_customer(customer, request.customer_id) if customer else request.customer_id
        trace_id = request_id_of(context.invocation_metadata()) or uuid.uuid4().hex
        remaining = context.time_remaining()
        new = NewOrder(
            order_id=f"ord_{uuid.uuid4().hex}",
            request_id=request.request_id,
            customer_id=customer_id,
            payment_token=request.payment_token,
            trace_id=trace_id,
            deadline_at=None if remaining is None else time.time() + remaining,
            lines=lines,
        )
        try:
            record, created = await self._store.create(new)
        except RequestIdReusedError as exc:
            raise error_info(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {request.request_id!r} was already used for order {exc.existing.order_id} "
                "with different contents; use a new request_id for a new order.",
                reason="REQUEST_ID_REUSED",
                domain=DOMAIN,
                metadata={"order_id": exc.existing.order_id},
            ) from None
        if created:
            self._logger.info(
                "order placed",
                extra={"order_id": record.order_id, "customer_id": record.customer_id, "request_id": trace_id},
            )
        if record.terminal:
            return pb.PlaceOrderResponse(order=to_proto(record))
        task = self._coordinator.drive(record.order_id)
        if task is None:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, "The orders service is shutting down; retry PlaceOrder.")
        # asyncio.wait never cancels what it waits for: the saga outlives this
        # call, whether it ends by its deadline or is cancelled.
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if not done:
            raise RpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"Order {record.order_id} did not finish before the deadline; it goes on and ends "
                "CONFIRMED or FAILED: retry PlaceOrder with the same request_id to wait for it, or follow "
                "it with GetOrder or WatchOrder.",
            )
        final = self._store.get(record.order_id)
        assert final is not None
        if not final.terminal and final.state != pb.ORDER_STATE_COMPENSATING:
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"Order {final.order_id} could not be finished now; it is {pb.OrderState.Name(final.state)} and "
                "is retried in the background. Retrying PlaceOrder with the same request_id is safe.",
            )
        # A failed saga whose compensation waits for a dependency that is down
        # is answered now, COMPENSATING with its failure_reason: the caller
        # learns at once that the order failed, and recovery finishes undoing
        # it in the background (WatchOrder follows it to FAILED).
        return pb.PlaceOrderResponse(order=to_proto(final))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        return pb.GetOrderResponse(order=to_proto(self._find(request.order_id, _signed_in(context))))

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Context) -> pb.ListOrdersResponse:
        violations = Violations()
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            violations.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        if len(request.customer_id) > MAX_ID_LENGTH:
            violations.add("customer_id", f"must be at most {MAX_ID_LENGTH} characters")
        violations.raise_if_any()
        customer = _signed_in(context)
        customer_id = _own_customer(customer, request.customer_id) if customer else request.customer_id
        size = request.page_size or DEFAULT_PAGE_SIZE
        before = None
        if request.page_token:
            before = _decode_page_token(self._store.page_token_secret, request.page_token, customer_id)
        records = self._store.list_page(customer_id=customer_id, before_seq=before, limit=size + 1)
        page, more = records[:size], len(records) > size
        token = _encode_page_token(self._store.page_token_secret, page[-1].seq, customer_id) if more else ""
        return pb.ListOrdersResponse(orders=[to_proto(r) for r in page], next_page_token=token)

    async def WatchOrder(self, request: pb.WatchOrderRequest, context: Context) -> AsyncIterator[pb.WatchOrderResponse]:
        _require_order_id(request.order_id)
        customer = _signed_in(context)
        queue = self._watchers.add(request.order_id)
        try:
            record = self._find(request.order_id, customer)
            sent = to_proto(record)
            yield pb.WatchOrderResponse(order=sent)
            while not record.terminal:
                change = await queue.get()
                if change.version <= record.version:
                    continue
                record = change
                order = to_proto(record)
                if order != sent:
                    sent = order
                    yield pb.WatchOrderResponse(order=order)
        finally:
            self._watchers.remove(request.order_id, queue)

    def _find(self, order_id: str, customer: str | None) -> OrderRecord:
        """The order; NOT_FOUND when there is none, or when it is another
        customer's (so an id reveals nothing about whose it is)."""
        _require_order_id(order_id)
        record = self._store.get(order_id)
        if record is None or (customer is not None and record.customer_id != customer):
            raise error_info(
                grpc.StatusCode.NOT_FOUND,
                f"No order has the id {order_id!r}.",
                reason="ORDER_NOT_FOUND",
                domain=DOMAIN,
            )
        return record


def _signed_in(context: Context) -> str | None:
    """The verified customer Envoy passed on, or None for a trusted peer."""
    for key, value in context.invocation_metadata() or ():
        if key == CUSTOMER_HEADER and value:
            return str(value)
    return None


def _own_customer(customer: str, requested: str) -> str:
    """The signed-in customer; PERMISSION_DENIED when the body names another."""
    if requested and requested != customer:
        raise error_info(
            grpc.StatusCode.PERMISSION_DENIED,
            f"customer_id {requested!r} is not the signed-in customer; leave customer_id empty or send your own.",
            reason="CUSTOMER_MISMATCH",
            domain=DOMAIN,
        )
    return customer


def _require_order_id(order_id: str) -> None:
    violations = Violations()
    if not order_id:
        violations.add("order_id", "is required")
    elif len(order_id) > MAX_ID_LENGTH:
        violations.add("order_id", f"must be at most {MAX_ID_LENGTH} characters")
    violations.raise_if_any()


def _validate_place_order(request: pb.PlaceOrderRequest, customer: str | None) -> tuple[Line, ...]:
    """Check a PlaceOrderRequest; raise INVALID_ARGUMENT naming every bad field.

    customer_id may be empty when a signed-in customer places the order.
    """
    violations = Violations()
    for name in ("request_id", "customer_id"):
        value: str = getattr(request, name)
        if not value and name == "customer_id" and customer:
            continue
        if not value:
            violations.add(name, "is required")
        elif len(value) > MAX_ID_LENGTH:
            violations.add(name, f"must be at most {MAX_ID_LENGTH} characters")
    if not request.lines:
        violations.add("lines", "must have at least one line")
    elif len(request.lines) > MAX_LINES:
        violations.add("lines", f"must have at most {MAX_LINES} lines")
    first_seen: dict[str, int] = {}
    for i, line in enumerate(request.lines):
        if not line.product_id:
            violations.add(f"lines[{i}].product_id", "is required")
        elif len(line.product_id) > MAX_ID_LENGTH:
            violations.add(f"lines[{i}].product_id", f"must be at most {MAX_ID_LENGTH} characters")
        elif line.product_id in first_seen:
            violations.add(
                f"lines[{i}].product_id", f"repeats lines[{first_seen[line.product_id]}]; each product may appear once"
            )
        else:
            first_seen[line.product_id] = i
        if not 1 <= line.quantity <= MAX_QUANTITY:
            violations.add(f"lines[{i}].quantity", f"must be between 1 and {MAX_QUANTITY}")
    if not request.payment_token:
        violations.add("payment_token", "is required")
    violations.raise_if_any()
    return tuple(Line(product_id=line.product_id, quantity=line.quantity) for line in request.lines)


def to_proto(record: OrderRecord) -> pb.Order:
    """The Order a client sees; the failure fields only once the order has failed (COMPENSATING or FAILED)."""
    order = pb.Order(
        order_id=record.order_id,
        request_id=record.request_id,
        customer_id=record.customer_id,
        state=record.state,
        reservation_id=record.reservation_id,
        payment_id=record.payment_id,
        create_time=_timestamp(record.create_time_ns),
        update_time=_timestamp(record.update_time_ns),
    )
    if record.state in (pb.ORDER_STATE_COMPENSATING, pb.ORDER_STATE_FAILED):
        order.failure_reason = record.failure_reason
        order.failure_message = record.failure_message
    for line in record.lines:
        out = order.lines.add(product_id=line.product_id, quantity=line.quantity)
        if line.unit_price is not None:
            out.unit_price.CopyFrom(_money(line.unit_price))
            out.line_total.CopyFrom(_money(line.unit_price.times(line.quantity)))
    if record.total is not None:
        order.total.CopyFrom(_money(record.total))
    return order


def _money(money: Money) -> money_pb2.Money:
    return money_pb2.Money(currency_code=money.currency_code, units=money.units, nanos=money.nanos)


def _timestamp(nanos: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(nanos)
    return stamp


def _encode_page_token(secret: bytes, before_seq: int, customer_id: str) -> str:
    payload = json.dumps({"before": before_seq, "customer_id": customer_id}, separators=(",", ":")).encode()
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def _decode_page_token(secret: bytes, token: str, customer_id: str) -> int:
    """The position a page token continues from; INVALID_ARGUMENT if it is not ours for this query."""
    try:
        payload_text, signature_text = token.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
        if hmac.compare_digest(signature, hmac.new(secret, payload, hashlib.sha256).digest()):
            body = json.loads(payload)
            before = body["before"]
            if body["customer_id"] == customer_id and isinstance(before, int):
                return before
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    violation = error_details_pb2.BadRequest.FieldViolation(
        field="page_token", description="is not a token this service issued for this customer_id filter"
    )
    raise RpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "The page_token was not issued by this service for this query; start again without one.",
        error_details_pb2.ErrorInfo(reason="INVALID_PAGE_TOKEN", domain=DOMAIN),
        error_details_pb2.BadRequest(field_violations=[violation]),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _OrdersRunning(Running):
    """A Running whose stop() first tells the coordinator it is draining.

    common.server.serve() drains by calling running.stop(grace); marking the
    coordinator first means a PlaceOrder cut off at the end of the grace
    leaves its saga to recovery instead of compensating it.
    """

    on_drain: Callable[[], None] = lambda: None

    async def stop(self, grace: float) -> None:
        self.on_drain()
        await super().stop(grace)


@dataclass
class OrdersServer:
    """A started orders server and everything it owns."""

    running: Running
    service: OrderService
    coordinator: Coordinator
    clients: Clients
    store: Store

    @property
    def port(self) -> int:
        return self.running.port

    async def stop(self, grace: float) -> None:
        """Drain for up to grace seconds, then close (see close)."""
        try:
            await self.running.stop(grace)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel the sagas still running (recovery finishes them), close the channels and the database."""
        try:
            await self.coordinator.close()
            await self.clients.close()
        finally:
            await self.store.close()


async def create_orders_server(
    address: str,
    db_path: str | Path,
    dependencies: Dependencies,
    *,
    settings: SagaSettings | None = None,
    logger: logging.Logger | None = None,
    tls: Tls | None = None,
) -> OrdersServer:
    """Open the database, bind and start the server (port 0 picks a free port), then start recovery."""
    logger = logger or logging.getLogger("shop.orders")
    store = await Store.open(db_path)
    clients = Clients(dependencies, tls)
    coordinator = Coordinator(store, clients, settings or SagaSettings(), logger)
    service = OrderService(store, coordinator, logger)
    registration = Service(SERVICE_NAME, lambda server: pb_grpc.add_OrderServiceServicer_to_server(service, server))
    try:
        started = await create_server(address, [registration], logger, tls=tls)
    except BaseException:
        await clients.close()
        await store.close()
        raise
    running = _OrdersRunning(
        **{f.name: getattr(started, f.name) for f in fields(started)}, on_drain=coordinator.begin_draining
    )
    coordinator.start()
    return OrdersServer(running=running, service=service, coordinator=coordinator, clients=clients, store=store)
