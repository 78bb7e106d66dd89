"""What the fault and abuse suites share: a steady order load, and the table of outcomes.

OrderLoad places orders through Envoy's public listener from a few client
threads, as a careful client would: every order has its own request_id, and a
call that ends UNAVAILABLE (Envoy restarting, a reset) or DEADLINE_EXCEEDED is
retried with the same request_id, which returns the same order (waiting for its
saga). Every card is good and every SKU well stocked, so every order should
end CONFIRMED; check() says otherwise with what it saw.

Each scenario adds one row to the reliability table (Outcome). The session
prints the table at the end (tests/conftest.py) and writes it to the file
named by SHOP_RELIABILITY_TABLE, if set; docs/reliability.md holds a copy and
`make chaos` prints it for a running stack.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import grpc
from e2e.support import CALL_TIMEOUT, Shop, describe_order, log_lines, new_id
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_pbg
from shop.payments.v1 import payment_service_pb2 as payments_pb

# How long a client keeps retrying one order (same request_id) before giving up.
CLIENT_PATIENCE = 45.0
AFTER_LABEL = "orders placed after it confirmed again"
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


@dataclass
class Outcome:
    """One row of the reliability table."""

    scenario: str
    load: str
    result: str
    detail: str = ""


RESULTS: list[Outcome] = []


def record(outcome: Outcome) -> None:
    RESULTS.append(outcome)


def table(rows: list[Outcome]) -> str:
    lines = ["| scenario | load held | outcome | measured |", "|---|---|---|---|"]
    lines += [f"| {r.scenario} | {r.load} | {r.result} | {r.detail} |" for r in rows]
    return "\n".join(lines)


@dataclass
class Placed:
    request: orders_pb.PlaceOrderRequest
    order: orders_pb.Order | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    start: float = 0.0
    seconds: float = 0.0


class OrderLoad:
    """Client threads placing orders through the public listener until stopped."""

    def __init__(self, shop: Shop, skus: list[str], threads: int = 2) -> None:
        self.shop = shop
        self.skus = skus
        self.placed: list[Placed] = []
        self._lock = threading.Lock()  # guards placed
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> OrderLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_PATIENCE + 15)

    def confirmed(self, since: float = 0.0) -> int:
        """Orders CONFIRMED so far, of those placed at or after since (time.monotonic())."""
        with self._lock:
            return sum(
                1
                for p in self.placed
                if p.start >= since and p.order is not None and p.order.state == orders_pb.ORDER_STATE_CONFIRMED
            )

    def _run(self, index: int) -> None:
        n = index
        while not self._stop.is_set():
            sku = self.skus[n % len(self.skus)]
            n += 1
            placed = Placed(self.shop.order_request(sku, quantity=1, customer=new_id("chaos")))
            with self._lock:
                self.placed.append(placed)
            self._place(placed)

    def _place(self, placed: Placed) -> None:
        start = placed.start = time.monotonic()
        pause = 0.05
        while True:
            placed.attempts += 1
            try:
                # x-request-id = request_id, so every hop's log lines of this order can be found.
                metadata = (("x-request-id", placed.request.request_id),)
                placed.order = self.shop.place(placed.request, timeout=20, metadata=metadata)
                break
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                placed.errors.append(f"{code.name}: {err.details()}")  # type: ignore[attr-defined]
                if code not in RETRIED or time.monotonic() - start > CLIENT_PATIENCE:
                    break
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        placed.seconds = time.monotonic() - start

    def during(self, start: float, end: float) -> str:
        """A summary of the orders in flight at start or placed until end (time.monotonic())."""
        with self._lock:
            placed = [p for p in self.placed if p.start <= end and p.start + p.seconds >= start]
        if not placed:
            return "no order placed"
        seconds = sorted(p.seconds for p in placed)
        retried = sum(1 for p in placed if p.attempts > 1)
        return (
            f"{len(placed)} orders in flight or placed meanwhile, {retried} needing a client retry (same request_id); "
            f"max latency {seconds[-1]:.2f} s; {AFTER_LABEL} {end - start:.1f} s after the kill"
        )

    def check(self) -> str:
        """Every order CONFIRMED exactly once and paid once; a summary for the table."""
        with self._lock:
            placed = list(self.placed)
        assert placed, "the load placed no order"
        bad = [p for p in placed if p.order is None or p.order.state != orders_pb.ORDER_STATE_CONFIRMED]
        described = [(describe_order(p.order) if p.order else "no order", p.errors[-3:]) for p in bad]
        assert not bad, f"{len(bad)} of {len(placed)} good orders did not end CONFIRMED: {described[:5]}"
        # Checked on the internal listener: thousands of reads would drain the public rate limit.
        orders = orders_pbg.OrderServiceStub(self.shop.internal)
        for p in placed:
            assert p.order is not None
            listed = orders.ListOrders(
                orders_pb.ListOrdersRequest(customer_id=p.request.customer_id), timeout=CALL_TIMEOUT
            ).orders
            assert [o.order_id for o in listed] == [p.order.order_id], "one request_id, one order"
            payment = self.shop.payment(p.order.payment_id)
            assert payment.state == payments_pb.PAYMENT_STATE_SUCCEEDED, payment
            assert payment.reference == p.order.order_id
        ids = {p.request.request_id for p in placed}
        undone = [
            line
            for line in log_lines(self.shop.stack, "envoy")
            if line.get("request_id") in ids and str(line.get("method", "")).rsplit("/", 1)[-1] in ("Refund", "Release")
        ]
        assert not undone, f"compensation ran for orders that confirmed: {undone[:5]}"
        seconds = sorted(p.seconds for p in placed)
        retried = sum(1 for p in placed if p.attempts > 1)
        return (
            f"{len(placed)} orders, all CONFIRMED, each paid once; {retried} needed a client retry; "
            f"latency p50 {statistics.median(seconds):.2f} s, max {seconds[-1]:.2f} s"
        )
