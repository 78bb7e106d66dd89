"""The shop's load: Locust users who shop through Envoy's public listener over gRPC.

Each `Customer` keeps one gRPC channel for its whole life and, between
pauses, takes one journey, chosen by the mix's weights:

- browse: list products (a few pages, sometimes one tag), open product pages
  (GetProduct; now and then an id the shop does not have), related products
  (BatchGetProducts);
- stock: GetStock for a few products; a share of them then hold a WatchStock
  stream for a while;
- checkout: build a cart on one QuoteCart stream (as an app does), price the
  result with PriceCart (as the browser storefront does), check its stock, and
  PlaceOrder with a fresh request_id: mostly a good card, a share declined, a
  share asking for more than is in stock, a share that times out on the client
  and retries with the same request_id; the confirmation page follows the
  order with WatchOrder;
- orders: the customer's orders page (ListOrders) and one order (GetOrder).

`make load` runs it (load/README.md: flags, defaults and how calls are
counted); `python -m load --help` lists every flag.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import uuid
from dataclasses import dataclass, replace

import grpc
import grpc.experimental.gevent
from locust import User, events
from locust.env import Environment
from locust.exception import StopUser
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_pbg
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_pbg
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_pbg
from shopstack import topology
from shopstack.stack import Stack

from load.client import (
    TERMINAL_STATES,
    Connection,
    Recorder,
    Target,
    TargetError,
    WrongAnswer,
    connect,
    default_target,
    local_stack,
    order_outcome,
    order_state,
    status_code,
)
from load.plan import Plan, PlanError, add_arguments

# Locust has patched the standard library for gevent before it imports this
# file; gRPC's own threads must cooperate with gevent too, before any channel.
grpc.experimental.gevent.init_gevent()

log = logging.getLogger("shop-load")

TOKEN_OK = "tok_success"
TOKEN_DECLINED = "tok_declined"
# A product id the catalog never has: its GetProduct must be NOT_FOUND.
UNKNOWN_PREFIX = "sku-load-unknown-"
# How long the simulated impatient client waits for PlaceOrder before giving up.
IMPATIENT_SECONDS = 0.02


@dataclass(frozen=True)
class Run:
    """What every user of one test run shares: the plan, the target and the deadlines."""

    plan: Plan
    target: Target | None  # None: the target was refused, users stop at once
    stack: Stack  # whose CA the edge's certificate comes from, and whose issuer signs the tokens
    unary_timeout: float  # Envoy's route timeout for catalog and inventory (deploy/stack.toml)
    order_timeout: float  # Envoy's route timeout for orders: PlaceOrder runs a saga


_run: Run | None = None


@events.init_command_line_parser.add_listener
def _add_arguments(parser: object, **_: object) -> None:
    add_arguments(parser)


def _prepare(environment: Environment) -> Run:
    """Read the plan and the target from the options (the command line, or the web UI's form)."""
    options = environment.parsed_options
    plan = Plan.from_options(options)
    if not environment.host:
        environment.host = default_target().address
    target = Target.parse(environment.host)
    target.check_local(allow_remote=bool(getattr(options, "allow_remote_target", False)))
    stack = local_stack()
    services = topology.load().services
    Customer.tasks = plan.task_list(JOURNEYS)
    return Run(
        plan=plan,
        target=target,
        stack=stack,
        unary_timeout=max(services["catalog"].timeout_seconds, services["inventory"].timeout_seconds),
        order_timeout=services["orders"].timeout_seconds,
    )


@events.init.add_listener
def _on_init(environment: Environment, **_: object) -> None:
    """Refuse a bad plan or a non-local target before anything starts."""
    global _run
    try:
        _run = _prepare(environment)
    except (PlanError, TargetError) as err:
        sys.exit(f"load: {err}")


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: object) -> None:
    """The web UI may have changed the host or the flags: check them again."""
    global _run
    try:
        _run = _prepare(environment)
    except (PlanError, TargetError) as err:
        log.error("not starting any user: %s", err)
        if _run is not None:
            _run = replace(_run, target=None)


class Customer(User):
    """One shopper: one channel to the edge, one customer id, a few journeys a minute.

    Its tasks are the journeys, each as often as its weight in the plan
    (Customer.tasks is set from the plan before each run starts)."""

    conn: Connection
    record: Recorder
    shared: Run

    def wait_time(self) -> float:
        low, high = self.shared.plan.think_seconds
        return random.uniform(low, high)

    def on_start(self) -> None:
        if _run is None or _run.target is None:
            raise StopUser()
        self.shared = _run
        self.customer_id = f"load-{uuid.uuid4().hex[:16]}"
        self.conn = connect(_run.target, self.customer_id, _run.stack)
        self.catalog = catalog_pbg.CatalogServiceStub(self.conn.channel)
        self.inventory = inventory_pbg.InventoryServiceStub(self.conn.channel)
        self.orders = orders_pbg.OrderServiceStub(self.conn.channel)
        self.record = Recorder(self.environment.events.request.fire)
        # What this customer has seen of the catalog: id -> product.
        self.products: dict[str, catalog_pb.Product] = {}
        self.list_products()  # the landing page

    def on_stop(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()

    # -- the journeys (Customer.tasks, weighted by the plan's mix) ----------

    def browse(self) -> None:
        tags = sorted({tag for product in self.products.values() for tag in product.tags})
        tag = random.choice(tags) if tags and random.random() < 0.4 else ""
        page: list[catalog_pb.Product] = []
        token = ""
        for _ in range(random.randint(1, 3)):
            listed = self.list_products(tag=tag, page_token=token)
            if listed is None:
                return
            page, token = listed
            if not token:
                break
        for product in random.sample(page, k=min(len(page), random.randint(1, 2))):
            self.get_product(product.id)
            related = [p.id for p in self.products.values() if p.id != product.id and set(p.tags) & set(product.tags)]
            if related:
                self.batch_get_products(random.sample(related, k=min(len(related), 3)))
        if random.random() < self.shared.plan.unknown_id_share:
            self.get_unknown_product()

    def stock(self) -> None:
        skus = self.pick_skus(random.randint(1, 4))
        if not skus:
            return
        self.get_stock(skus)
        if random.random() < self.shared.plan.watch_share:
            self.watch_stock(skus[:3], random.uniform(*self.shared.plan.watch_seconds))

    def checkout(self) -> None:
        skus = self.pick_skus(random.randint(1, 3))
        if not skus:
            return
        cart = {sku: random.randint(1, 2) for sku in skus}
        if not self.quote_cart(cart) or not self.price_cart(cart):
            return
        levels = self.get_stock(list(cart))
        if levels is None:
            return
        plan = self.shared.plan
        roll = random.random()
        token = TOKEN_OK
        allowed = {"CONFIRMED", "OUT_OF_STOCK"}  # stock can run out under anyone's feet
        if roll < plan.declined_share:
            token = TOKEN_DECLINED
            allowed = {"CARD_DECLINED", "OUT_OF_STOCK"}  # the reservation comes before the charge
        elif roll < plan.declined_share + plan.out_of_stock_share:
            sku = random.choice(list(cart))
            cart[sku] = min(999, levels[sku] + random.randint(1, 3))
        elif roll < plan.declined_share + plan.out_of_stock_share + plan.timeout_retry_share:
            self.place_order_after_timeout(cart)
            return
        order = self.place_order(cart, token, allowed)
        if order is not None:
            self.watch_order(order)

    def my_orders(self) -> None:
        listed = self.list_orders()
        if not listed:
            return
        order = self.get_order(random.choice(listed).order_id)
        if order is not None and order.state not in TERMINAL_STATES:
            self.watch_order(order)

    # -- one call each ------------------------------------------------------

    def pick_skus(self, count: int) -> list[str]:
        known = sorted(self.products)
        return random.sample(known, k=min(count, len(known)))

    def list_products(self, tag: str = "", page_token: str = "") -> tuple[list[catalog_pb.Product], str] | None:
        with self.record.rpc("CatalogService/ListProducts") as rpc:
            resp = self.catalog.ListProducts(
                catalog_pb.ListProductsRequest(page_size=random.choice((10, 20)), page_token=page_token, tag=tag),
                timeout=self.shared.unary_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            untagged = [p.id for p in resp.products if tag and tag not in p.tags]
            if untagged:
                raise WrongAnswer(f"ListProducts for tag {tag!r} returned products without it: {untagged}")
            self.products.update((p.id, p) for p in resp.products)
            return list(resp.products), resp.next_page_token
        return None

    def get_product(self, product_id: str) -> None:
        with self.record.rpc("CatalogService/GetProduct") as rpc:
            resp = self.catalog.GetProduct(
                catalog_pb.GetProductRequest(product_id=product_id),
                timeout=self.shared.unary_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            if resp.product.id != product_id:
                raise WrongAnswer(f"GetProduct {product_id} returned {resp.product.id!r}")

    def get_unknown_product(self) -> None:
        """A stale link: the answer asked for is NOT_FOUND, counted apart as a success."""
        product_id = f"{UNKNOWN_PREFIX}{uuid.uuid4().hex[:8]}"
        expected = {grpc.StatusCode.NOT_FOUND: "NOT_FOUND unknown id"}
        with self.record.rpc("CatalogService/GetProduct", expected=expected):
            self.catalog.GetProduct(
                catalog_pb.GetProductRequest(product_id=product_id),
                timeout=self.shared.unary_timeout,
                metadata=self.conn.metadata,
            )
            raise WrongAnswer(f"GetProduct {product_id} found a product the catalog cannot have")

    def batch_get_products(self, product_ids: list[str]) -> None:
        with self.record.rpc("CatalogService/BatchGetProducts") as rpc:
            resp = self.catalog.BatchGetProducts(
                catalog_pb.BatchGetProductsRequest(product_ids=product_ids),
                timeout=self.shared.unary_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            if [p.id for p in resp.products] != product_ids:
                raise WrongAnswer(f"BatchGetProducts {product_ids} returned {[p.id for p in resp.products]}")

    def get_stock(self, skus: list[str]) -> dict[str, int] | None:
        """Available units per SKU, or None if the call failed."""
        with self.record.rpc("InventoryService/GetStock") as rpc:
            resp = self.inventory.GetStock(
                inventory_pb.GetStockRequest(skus=skus),
                timeout=self.shared.unary_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            levels = {level.sku: level.available for level in resp.levels}
            if set(levels) != set(skus):
                raise WrongAnswer(f"GetStock {sorted(skus)} returned levels for {sorted(levels)}")
            return levels
        return None

    def watch_stock(self, skus: list[str], hold_seconds: float) -> None:
        """Hold a WatchStock stream for hold_seconds (its deadline). Its response
        time is the time to the initial level of every SKU; the deadline ending
        the stream afterwards is the normal end."""
        with self.record.rpc("InventoryService/WatchStock") as rpc:
            started = time.perf_counter()
            waiting = set(skus)
            stream = self.inventory.WatchStock(
                inventory_pb.WatchStockRequest(skus=skus), timeout=hold_seconds, metadata=self.conn.metadata
            )
            try:
                for message in stream:
                    rpc.response_length += 1
                    if message.initial:
                        waiting.discard(message.level.sku)
                        if not waiting and rpc.response_time_ms is None:
                            rpc.response_time_ms = (time.perf_counter() - started) * 1000
            except grpc.RpcError as err:
                if status_code(err) != grpc.StatusCode.DEADLINE_EXCEEDED or waiting:
                    raise
            else:
                raise WrongAnswer("WatchStock ended before the client's deadline")

    def quote_cart(self, cart: dict[str, int]) -> bool:
        """Add each line on one QuoteCart stream, then change one quantity; the last reply must add up."""
        edits = [catalog_pb.QuoteCartRequest(product_id=sku, quantity=qty) for sku, qty in cart.items()]
        final = dict(cart)
        changed = random.choice(list(cart))
        final[changed] = cart[changed] % 2 + 1
        edits.append(catalog_pb.QuoteCartRequest(product_id=changed, quantity=final[changed]))
        with self.record.rpc("CatalogService/QuoteCart") as rpc:
            replies = list(
                self.catalog.QuoteCart(iter(edits), timeout=self.shared.unary_timeout, metadata=self.conn.metadata)
            )
            rpc.response_length = sum(reply.ByteSize() for reply in replies)
            if len(replies) != len(edits):
                raise WrongAnswer(f"QuoteCart answered {len(replies)} of {len(edits)} cart changes")
            if replies[-1].item_count != sum(final.values()):
                raise WrongAnswer(
                    f"QuoteCart counts {replies[-1].item_count} items, the cart has {sum(final.values())}"
                )
            cart.update(final)
            return True
        return False

    def price_cart(self, cart: dict[str, int]) -> bool:
        """The whole cart in one unary call: its lines must be the cart's, in product id order."""
        items = [catalog_pb.PriceCartItem(product_id=sku, quantity=qty) for sku, qty in cart.items()]
        with self.record.rpc("CatalogService/PriceCart") as rpc:
            resp = self.catalog.PriceCart(
                catalog_pb.PriceCartRequest(items=items),
                timeout=self.shared.unary_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            lines = [(line.product_id, line.quantity) for line in resp.lines]
            if lines != sorted(cart.items()) or resp.item_count != sum(cart.values()):
                raise WrongAnswer(
                    f"PriceCart priced {lines} ({resp.item_count} items) for the cart {sorted(cart.items())}"
                )
            return True
        return False

    def order_request(self, request_id: str, cart: dict[str, int], token: str) -> orders_pb.PlaceOrderRequest:
        return orders_pb.PlaceOrderRequest(
            request_id=request_id,
            customer_id=self.customer_id,
            payment_token=token,
            lines=[orders_pb.OrderLine(product_id=sku, quantity=qty) for sku, qty in cart.items()],
        )

    def list_orders(self) -> list[orders_pb.Order] | None:
        """The customer's newest orders, or None if the call failed."""
        with self.record.rpc("OrderService/ListOrders") as rpc:
            resp = self.orders.ListOrders(
                orders_pb.ListOrdersRequest(customer_id=self.customer_id, page_size=10),
                timeout=self.shared.order_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            strangers = [o.order_id for o in resp.orders if o.customer_id != self.customer_id]
            if strangers:
                raise WrongAnswer(f"ListOrders for one customer returned other customers' orders {strangers}")
            return list(resp.orders)
        return None

    def get_order(self, order_id: str) -> orders_pb.Order | None:
        with self.record.rpc("OrderService/GetOrder") as rpc:
            resp = self.orders.GetOrder(
                orders_pb.GetOrderRequest(order_id=order_id),
                timeout=self.shared.order_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            if resp.order.order_id != order_id:
                raise WrongAnswer(f"GetOrder {order_id} returned {resp.order.order_id}")
            return resp.order
        return None

    def place_order(self, cart: dict[str, int], token: str, allowed: set[str]) -> orders_pb.Order | None:
        request_id = f"load-{uuid.uuid4()}"
        with self.record.rpc("OrderService/PlaceOrder") as rpc:
            resp = self.orders.PlaceOrder(
                self.order_request(request_id, cart, token),
                timeout=self.shared.order_timeout,
                metadata=self.conn.metadata,
            )
            rpc.response_length = resp.ByteSize()
            rpc.outcome = order_outcome(resp.order, request_id, allowed)
            return resp.order
        return None

    def place_order_after_timeout(self, cart: dict[str, int]) -> None:
        """An impatient client: PlaceOrder with a deadline too short for the saga,
        then the same request again (same request_id) with the normal deadline.
        The retry must return that one order: CONFIRMED if the saga finished in
        time, otherwise FAILED (or still COMPENSATING) DEADLINE_EXCEEDED, since
        orders compensates a saga whose caller's deadline passed."""
        request_id = f"load-{uuid.uuid4()}"
        request = self.order_request(request_id, cart, TOKEN_OK)
        allowed = {"CONFIRMED", "OUT_OF_STOCK", "DEADLINE_EXCEEDED"}
        first: orders_pb.Order | None = None
        expected = {grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED client timeout"}
        with self.record.rpc("OrderService/PlaceOrder", expected=expected) as rpc:
            resp = self.orders.PlaceOrder(request, timeout=IMPATIENT_SECONDS, metadata=self.conn.metadata)
            rpc.response_length = resp.ByteSize()
            rpc.outcome = order_outcome(resp.order, request_id, allowed)
            first = resp.order
        retried: orders_pb.Order | None = None
        with self.record.rpc("OrderService/PlaceOrder") as rpc:
            resp = self.orders.PlaceOrder(request, timeout=self.shared.order_timeout, metadata=self.conn.metadata)
            rpc.response_length = resp.ByteSize()
            outcome = order_outcome(resp.order, request_id, allowed)
            if first is not None and resp.order.order_id != first.order_id:
                raise WrongAnswer(f"a retry of request_id {request_id} placed a second order")
            rpc.outcome = f"retry after timeout: {outcome or 'CONFIRMED'}"
            retried = resp.order
        if retried is not None:
            self.watch_order(retried)

    def watch_order(self, order: orders_pb.Order) -> None:
        """The confirmation page: follow the order until it is CONFIRMED or FAILED (the stream then ends OK)."""
        with self.record.rpc("OrderService/WatchOrder") as rpc:
            last: orders_pb.Order | None = None
            for message in self.orders.WatchOrder(
                orders_pb.WatchOrderRequest(order_id=order.order_id),
                timeout=self.shared.order_timeout,
                metadata=self.conn.metadata,
            ):
                rpc.response_length += message.ByteSize()
                last = message.order
            if last is None or last.state not in TERMINAL_STATES:
                seen = order_state(last) if last is not None else "nothing"
                raise WrongAnswer(f"WatchOrder ended after {seen}, not on a terminal state")
            if order.state in TERMINAL_STATES and last.state != order.state:
                raise WrongAnswer(f"WatchOrder shows a {order_state(order)} order as {order_state(last)}")


JOURNEYS = {
    "browse": Customer.browse,
    "stock": Customer.stock,
    "checkout": Customer.checkout,
    "orders": Customer.my_orders,
}
