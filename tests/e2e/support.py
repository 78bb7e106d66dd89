"""What the end-to-end and fault suites share: stubs on Envoy's two listeners,
stock and order helpers, and polling with a deadline (never a bare sleep).

Everything a failing assertion needs to say what it saw is kept in the
messages: order states and failure reasons, stock levels, payment states.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_pbg
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_pbg
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_pbg
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shop.payments.v1 import payment_service_pb2_grpc as payments_pbg
from shopstack.edge import Edge
from shopstack.stack import Stack

# Every call gets a deadline; generous, because a 2-core machine runs the
# whole stack (and PlaceOrder's route timeout in Envoy is 20 s).
CALL_TIMEOUT = 15.0
ORDER_TIMEOUT = 25.0
TERMINAL = (orders_pb.ORDER_STATE_CONFIRMED, orders_pb.ORDER_STATE_FAILED)
# The runtime keys of Envoy's fault filters (internal listener), per service.
FAULT_KEYS = ("delay_percent", "delay_ms", "abort_percent", "abort_grpc_status")
FAULT_SERVICES = ("catalog", "inventory", "payments", "orders")

T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def state_name(order: orders_pb.Order) -> str:
    return orders_pb.OrderState.Name(order.state)


def reason_name(order: orders_pb.Order) -> str:
    return orders_pb.OrderFailureReason.Name(order.failure_reason)


def describe_order(order: orders_pb.Order) -> str:
    return (
        f"order {order.order_id} {state_name(order)} reason={reason_name(order)} "
        f"message={order.failure_message!r} reservation={order.reservation_id!r} payment={order.payment_id!r}"
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll probe until it returns something truthy; fail naming what and the last value seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except grpc.RpcError as err:
            value, last = None, f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last seen: {last}")
        time.sleep(interval)


# A channel option for tests that need several client connections: grpcio
# shares one connection between channels to the same address unless each has
# its own subchannel pool.
OWN_CONNECTION: tuple[tuple[str, int], ...] = (("grpc.use_local_subchannel_pool", 1),)


_ORDERS = "/shop.orders.v1.OrderService/"
# The customer of calls that name none (GetOrder of an id nobody placed).
ANONYMOUS_SHOPPER = "shopper-e2e"


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


@dataclass
class CustomerTokens(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Signs every OrderService call on the public listener in as its customer.

    Tests are written as customers: an order's customer_id says who places
    it. This sends each call with that customer's token (PlaceOrder and
    ListOrders: the request's customer_id; GetOrder and WatchOrder: the
    customer of that order, learned from the answers), unless the call
    carries its own authorization. The security suite sends its own tokens.
    """

    stack: Stack
    _tokens: dict[str, str] = field(default_factory=dict)
    _owners: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, customer: str) -> str:
        with self._lock:
            if customer not in self._tokens:
                self._tokens[customer] = self.stack.token(customer)
            return self._tokens[customer]

    def _customer(self, request: Any) -> str:
        if isinstance(request, orders_pb.PlaceOrderRequest | orders_pb.ListOrdersRequest) and request.customer_id:
            return str(request.customer_id)
        order_id = getattr(request, "order_id", "")
        with self._lock:
            return self._owners.get(order_id, ANONYMOUS_SHOPPER)

    def _learn(self, customer: str, reply: Any) -> None:
        orders = list(getattr(reply, "orders", []))
        if hasattr(reply, "order") and reply.HasField("order"):
            orders.append(reply.order)
        with self._lock:
            for order in orders:
                self._owners[order.order_id] = customer

    def _details(self, details: grpc.ClientCallDetails, request: Any) -> tuple[grpc.ClientCallDetails, str | None]:
        metadata = list(details.metadata or ())
        if not details.method.startswith(_ORDERS) or any(k == "authorization" for k, _ in metadata):
            return details, None
        customer = self._customer(request)
        metadata.append(("authorization", f"Bearer {self.token(customer)}"))
        new = _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )
        return new, customer

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details, customer = self._details(details, request)
        outcome = continuation(details, request)
        if customer is not None:

            def learn(done: Any) -> None:
                if done.exception() is None:
                    self._learn(customer, done.result())

            outcome.add_done_callback(learn)
        return outcome

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        details, _ = self._details(details, request)
        return continuation(details, request)


@dataclass
class Shop:
    """Stubs on the public listener (what customers reach) and the internal one.

    Both are TLS (the stack's CA); the internal listener sees the operator's
    certificate, and OrderService calls on the public one carry their
    customer's token (CustomerTokens).
    """

    stack: Stack | Edge  # an Edge under --edge (a shop in containers)
    public: grpc.Channel
    internal: grpc.Channel
    tokens: CustomerTokens

    @classmethod
    def open(cls, stack: Stack | Edge) -> Shop:
        raw_public = stack.public_channel()
        internal = stack.internal_channel()
        grpc.channel_ready_future(raw_public).result(timeout=CALL_TIMEOUT)
        grpc.channel_ready_future(internal).result(timeout=CALL_TIMEOUT)
        tokens = CustomerTokens(stack)
        public = grpc.intercept_channel(raw_public, tokens)
        return cls(stack, public, internal, tokens)

    def close(self) -> None:
        self.public.close()
        self.internal.close()

    def __enter__(self) -> Shop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Stubs.
    @property
    def catalog(self) -> catalog_pbg.CatalogServiceStub:
        return catalog_pbg.CatalogServiceStub(self.public)

    @property
    def inventory(self) -> inventory_pbg.InventoryServiceStub:
        return inventory_pbg.InventoryServiceStub(self.public)

    @property
    def orders(self) -> orders_pbg.OrderServiceStub:
        return orders_pbg.OrderServiceStub(self.public)

    @property
    def inventory_internal(self) -> inventory_pbg.InventoryServiceStub:
        return inventory_pbg.InventoryServiceStub(self.internal)

    @property
    def payments_internal(self) -> payments_pbg.PaymentServiceStub:
        return payments_pbg.PaymentServiceStub(self.internal)

    # Stock.
    def import_stock(self, levels: dict[str, int]) -> None:
        """Set on_hand of each SKU (ImportStock, internal listener)."""
        items = [inventory_pb.ImportStockRequest(sku=sku, on_hand=n) for sku, n in levels.items()]
        self.inventory_internal.ImportStock(iter(items), timeout=CALL_TIMEOUT)

    def stock(self, sku: str) -> inventory_pb.StockLevel:
        reply = self.inventory.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT)
        return reply.levels[0]

    def set_available(self, sku: str, units: int) -> inventory_pb.StockLevel:
        """Make exactly `units` available: on_hand = reserved + units."""
        self.import_stock({sku: self.stock(sku).reserved + units})
        level = self.stock(sku)
        assert level.available == units, f"ImportStock did not make {units} available: {level}"
        return level

    # Orders.
    def order_request(
        self, sku: str, quantity: int = 1, token: str = "tok_success", customer: str | None = None
    ) -> orders_pb.PlaceOrderRequest:
        return orders_pb.PlaceOrderRequest(
            request_id=new_id("req"),
            customer_id=customer or new_id("cust"),
            lines=[orders_pb.OrderLine(product_id=sku, quantity=quantity)],
            payment_token=token,
        )

    def place(
        self,
        request: orders_pb.PlaceOrderRequest,
        timeout: float = ORDER_TIMEOUT,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> orders_pb.Order:
        return self.orders.PlaceOrder(request, timeout=timeout, metadata=tuple(metadata)).order

    def get_order(self, order_id: str) -> orders_pb.Order:
        return self.orders.GetOrder(orders_pb.GetOrderRequest(order_id=order_id), timeout=CALL_TIMEOUT).order

    def orders_of(self, customer_id: str) -> list[orders_pb.Order]:
        reply = self.orders.ListOrders(orders_pb.ListOrdersRequest(customer_id=customer_id), timeout=CALL_TIMEOUT)
        return list(reply.orders)

    def wait_terminal(self, order_id: str, timeout: float = 60.0) -> orders_pb.Order:
        def probe() -> orders_pb.Order | None:
            order = self.get_order(order_id)
            return order if order.state in TERMINAL else None

        return wait_for(f"order {order_id} to reach CONFIRMED or FAILED", probe, timeout, interval=0.2)

    # Payments.
    def payment(self, payment_id: str) -> payments_pb.Payment:
        reply = self.payments_internal.GetPayment(
            payments_pb.GetPaymentRequest(payment_id=payment_id), timeout=CALL_TIMEOUT
        )
        return reply.payment

    def assert_no_money_kept(self, order: orders_pb.Order) -> None:
        """A FAILED order keeps no money: no payment id, or the payment REFUNDED."""
        if not order.payment_id:
            return
        payment = self.payment(order.payment_id)
        assert payment.state == payments_pb.PAYMENT_STATE_REFUNDED, (
            f"{describe_order(order)} kept money: payment is {payments_pb.PaymentState.Name(payment.state)}"
        )

    def wait_routable(self, timeout: float = 30.0) -> None:
        """Wait until Envoy routes a call to every service on both listeners.

        Stack.wait_healthy() reads the host flags of Envoy's admin /clusters;
        right after a host turns healthy there, Envoy can still answer "no
        healthy upstream" for about a second (seen after SIGCONT and restarts).
        This waits on what callers see: a cheap call to each service that
        Envoy does not refuse with UNAVAILABLE (NOT_FOUND for a made-up id is
        an answer from the service, so it counts).
        """
        unknown = f"probe-{uuid.uuid4()}"
        product = catalog_pb.GetProductRequest(product_id="sku-aeropress")
        probes: dict[str, Callable[[], object]] = {
            "catalog (public)": lambda: self.catalog.GetProduct(product, timeout=5),
            "catalog (internal)": lambda: catalog_pbg.CatalogServiceStub(self.internal).GetProduct(product, timeout=5),
            "inventory (internal)": lambda: self.inventory_internal.GetStock(
                inventory_pb.GetStockRequest(skus=["sku-aeropress"]), timeout=5
            ),
            "payments (internal)": lambda: self.payments_internal.GetPayment(
                payments_pb.GetPaymentRequest(payment_id=unknown), timeout=5
            ),
            "orders (public)": lambda: self.orders.GetOrder(orders_pb.GetOrderRequest(order_id=unknown), timeout=5),
        }
        for name, probe in probes.items():

            def answered(p: Callable[[], object] = probe) -> bool:
                try:
                    p()
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                        raise
                return True

            wait_for(f"Envoy to route {name} calls again", answered, timeout)

    # Envoy runtime faults.
    def reset_faults(self) -> None:
        self.stack.set_runtime(**{f"fault.{svc}.{key}": 0 for svc in FAULT_SERVICES for key in FAULT_KEYS})


def replicas_of(stack: Stack | Edge, cluster: str) -> list[str]:
    """The programs an implementation runs as: its replicas in a hosts
    variant (catalog-go, catalog-go-2: make test-hosts), otherwise itself."""
    if isinstance(stack, Stack):
        return [program for program, impl, _ in stack.programs() if impl.cluster == cluster] or [cluster]
    return [cluster]


def log_lines(stack: Stack | Edge, program: str) -> Iterator[dict[str, object]]:
    """The JSON lines of a program's log (non-JSON lines are skipped)."""
    path = stack.log_of(program)
    if not path.exists():
        return
    for raw in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            yield line
