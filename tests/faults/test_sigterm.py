"""SIGTERM under load: a service drains instead of dropping calls.

docs/conventions.md: on SIGTERM a service turns NOT_SERVING, takes no new
calls, and lets in-flight calls finish within SHOP_SHUTDOWN_GRACE_SECONDS;
supervisord then starts it again. What callers may see:

- a call (or stream) in flight when SIGTERM arrived completes OK;
- no caller ever sees a connection reset or INTERNAL/UNKNOWN;
- a call that lands while the service is down may fail with UNAVAILABLE
  (Envoy: "no healthy upstream" or a refused connection): expected, retryable;
- after the restart every call succeeds again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from e2e.support import Shop, describe_order, wait_for
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack.stack import Stack

BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


def was_reset(call: Call) -> bool:
    """A call cut off after it reached the service (Envoy says "reset" with a
    reason other than a failure to connect: "connection termination", a
    remote reset). Envoy's "reset reason: (remote) connection failure" means
    the service was down and the call never reached it: UNAVAILABLE, expected."""
    details = call.details.lower()
    return "reset" in details and "connection failure" not in details


@dataclass
class Call:
    name: str
    start: float
    end: float
    code: grpc.StatusCode
    details: str


class Load:
    """Client threads calling through Envoy's public listener until stopped."""

    def __init__(self, calls: dict[str, Callable[[], object]], threads: int = 3) -> None:
        self.calls = calls
        self.done: list[Call] = []
        self._lock = threading.Lock()  # guards done
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        names = sorted(self.calls)
        n = index
        while not self._stop.is_set():
            name = names[n % len(names)]
            n += 1
            start = time.monotonic()
            try:
                self.calls[name]()
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as err:
                code, details = err.code(), err.details() or ""  # type: ignore[attr-defined]
            with self._lock:
                self.done.append(Call(name, start, time.monotonic(), code, details))

    def count(self, since: float = 0.0, ok: bool = False) -> int:
        with self._lock:
            return sum(1 for c in self.done if c.start >= since and (not ok or c.code == grpc.StatusCode.OK))

    def check(self, signalled: float, healthy: float) -> None:
        with self._lock:
            calls = list(self.done)
        summary = {}
        for c in calls:
            summary[(c.name, c.code.name)] = summary.get((c.name, c.code.name), 0) + 1
        bad = [c for c in calls if c.code in BAD_CODES or was_reset(c)]
        assert not bad, f"callers saw resets or internal errors: {bad[:5]} (all: {summary})"
        in_flight = [c for c in calls if c.start < signalled < c.end]
        failed = [c for c in in_flight if c.code != grpc.StatusCode.OK]
        assert not failed, f"calls in flight at SIGTERM failed: {failed[:5]} (all: {summary})"
        early = [c for c in calls if c.end <= signalled and c.code != grpc.StatusCode.OK]
        assert not early, f"calls before SIGTERM failed: {early[:5]}"
        other = [c for c in calls if c.code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)]
        assert not other, f"unexpected codes: {other[:5]} (all: {summary})"
        late = [c for c in calls if c.start >= healthy and c.code != grpc.StatusCode.OK]
        assert not late, f"calls after the restart failed: {late[:5]} (all: {summary})"


def _restart(stack: Stack, shop: Shop, program: str, old_pid: int) -> float:
    wait_for(
        f"supervisord to restart {program}",
        lambda: stack.pid_of(program) not in (None, old_pid),
        timeout=60,
    )
    stack.wait_healthy(60)
    shop.wait_routable()
    return time.monotonic()


def test_sigterm_to_catalog_under_load_drops_no_call_in_flight(private_stack: Stack, shop: Shop) -> None:
    product = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    calls: dict[str, Callable[[], object]] = {
        "GetProduct": lambda: shop.catalog.GetProduct(product, timeout=10),
        "ListProducts": lambda: shop.catalog.ListProducts(catalog_pb.ListProductsRequest(page_size=50), timeout=10),
    }
    # A QuoteCart stream open across the SIGTERM: in flight by construction.
    changes: queue.Queue[catalog_pb.QuoteCartRequest | None] = queue.Queue()

    def requests() -> Iterator[catalog_pb.QuoteCartRequest]:
        while (change := changes.get()) is not None:
            yield change

    quote = shop.catalog.QuoteCart(requests(), timeout=60)
    changes.put(catalog_pb.QuoteCartRequest(product_id="sku-aeropress", quantity=1))
    assert next(quote).item_count == 1

    with Load(calls) as load:
        wait_for("some load before SIGTERM", lambda: load.count(ok=True) >= 30, timeout=30)
        old_pid = private_stack.pid_of("catalog-go")
        assert old_pid is not None
        signalled = time.monotonic()
        private_stack.signal_program("catalog-go", "TERM")
        # The open stream is still served while the old process drains.
        changes.put(catalog_pb.QuoteCartRequest(product_id="sku-paper-filters-100", quantity=2))
        assert next(quote).item_count == 3
        changes.put(None)
        assert list(quote) == []
        assert quote.code() == grpc.StatusCode.OK, quote.details()
        healthy = _restart(private_stack, shop, "catalog-go", old_pid)
        wait_for("load to succeed after the restart", lambda: load.count(since=healthy, ok=True) >= 30, timeout=30)
    load.check(signalled, healthy)


def test_sigterm_to_orders_lets_the_sagas_in_flight_finish(private_stack: Stack, shop: Shop) -> None:
    sku = "sku-digital-scale"
    shop.import_stock({sku: 40})
    before = shop.stock(sku)
    # Slow payments (1 s per call) so the sagas are mid-charge at SIGTERM.
    private_stack.set_runtime(**{"fault.payments.delay_percent": 100, "fault.payments.delay_ms": 1000})
    requests = [shop.order_request(sku, quantity=1) for _ in range(3)]
    futures = [shop.orders.PlaceOrder.future(r, timeout=40) for r in requests]

    def all_reserved() -> bool:
        listed = [shop.orders_of(r.customer_id) for r in requests]
        return all(orders and orders[0].state == orders_pb.ORDER_STATE_RESERVED for orders in listed)

    wait_for("every saga to be mid-charge", all_reserved, timeout=30, interval=0.05)
    old_pid = private_stack.pid_of("orders-python")
    assert old_pid is not None
    private_stack.signal_program("orders-python", "TERM")

    placed = []
    for future in futures:
        try:
            placed.append(future.result())
        except grpc.RpcError as err:
            raise AssertionError(
                f"a PlaceOrder in flight at SIGTERM failed: {err.code().name} {err.details()}"
            ) from None
    for reply in placed:
        assert reply.order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(reply.order)

    shop.reset_faults()
    _restart(private_stack, shop, "orders-python", old_pid)
    after = shop.place(shop.order_request(sku, quantity=1))
    assert after.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(after)
    level = shop.stock(sku)
    assert (level.on_hand, level.reserved) == (before.on_hand - 4, before.reserved), f"{before} -> {level}"
