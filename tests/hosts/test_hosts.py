"""The shop across hosts: every program in a network namespace of its own.

`make test-hosts` runs pytest on a host of its own with `--hosts`, and every
stack of the run (tests/conftest.py, make_stack) puts each program on the
host deploy/hosts.toml gives it: Envoy, two catalog replicas, each inventory
implementation, payments, orders and the reflection server. The contract, e2e
and swap suites have run across those hosts before this module. What only
hosts can show is here, on a private stack (its faults must not disturb the
session's):

- nothing assumes loopback: every host's loopback interface is down, every
  socket listens on the host's own address, and the calls between programs
  go from host to host (orders to Envoy's internal listener, Envoy to each
  implementation);
- cutting a host's link (its port on the bridge goes down: the process runs
  on, unreachable) does what its process dying does, and each test runs both
  ways side by side: Envoy ejects the host (active health checks, outlier
  detection), a read that was on its way there is retried on the other
  catalog replica, every order ends CONFIRMED or FAILED with its stock and
  money accounted for, and traffic returns once the link (or the process) is
  back.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
import reliability
from conftest import make_stack, network
from e2e.support import ORDER_TIMEOUT, Shop, describe_order, wait_for
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shopstack import netns
from shopstack.stack import Stack
from shopstack.topology import EDGE_PROGRAM

CUT = "link cut"
KILLED = "process killed"
READ_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def hosts() -> netns.Network:
    found = network()
    assert found is not None, "tests/hosts runs only with --hosts (make test-hosts)"
    return found


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory, hosts: netns.Network) -> Iterator[Stack]:
    shop = make_stack(tmp_path_factory.mktemp("hosts"), grace_seconds="1")
    try:
        shop.up(timeout=120)
        yield shop
    finally:
        shop.down()


@pytest.fixture(scope="module")
def shop(private_stack: Stack) -> Iterator[Shop]:
    with Shop.open(private_stack) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _restored(request: pytest.FixtureRequest, hosts: netns.Network) -> Iterator[None]:
    """Every link up and every program running and routed again after each test."""
    yield
    if "private_stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("private_stack")
    for address in hosts.hosts:
        hosts.restore(address)
    for program, _, _ in stack.programs():
        if stack.pid_of(program) is None:
            stack.start_program(program)
    stack.wait_healthy(60)
    request.getfixturevalue("shop").wait_routable()


# -- what the hosts see ---------------------------------------------------------


def _sockets(hosts: netns.Network, address: str, *query: str) -> list[tuple[str, str]]:
    """(local, peer) of the TCP sockets `ss -tnH <query>` lists on a host."""
    rows = hosts.run_in(address, "ss", "-tnH", *query).splitlines()
    return [(row.split()[-2], row.split()[-1]) for row in rows if row.strip()]


def _host(socket_address: str) -> str:
    return socket_address.rpartition(":")[0].strip("[]")


def test_every_host_has_loopback_down_and_everything_listens_and_dials_on_host_addresses(
    private_stack: Stack, shop: Shop, hosts: netns.Network
) -> None:
    stack = private_stack
    # A whole saga first, so that every program has called the next one.
    order = shop.place(shop.order_request("sku-aeropress"), timeout=ORDER_TIMEOUT)
    assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)

    placed = {program: host for program, _, host in stack.programs()}
    placed[EDGE_PROGRAM] = stack.edge_host
    assert len(set(placed.values())) == len(placed), f"two programs share a host: {placed}"
    for program, address in placed.items():
        flags = hosts.run_in(address, "ip", "-o", "link", "show", "lo").split("<", 1)[1].split(">", 1)[0]
        assert "UP" not in flags.split(","), f"{program}'s host has loopback up: <{flags}>"
        listening = _sockets(hosts, address, "-l")
        assert listening, f"nothing listens on {program}'s host"
        wrong = [local for local, _ in listening if _host(local) != address]
        assert not wrong, f"{program} listens on {wrong}, not only on its host's address {address}"

    # Orders dials Envoy's internal listener on Envoy's host (other stacks of
    # the run share the hosts, on other ports: every orders process dials an
    # Envoy, and only on Envoy's host).
    orders_host = placed["orders-python"]
    serving = {local.rpartition(":")[2] for local, _ in _sockets(hosts, orders_host, "-l")}
    established = _sockets(hosts, orders_host, "state", "established")
    outgoing = {peer for local, peer in established if local.rpartition(":")[2] not in serving}
    assert stack.internal_addr in outgoing, f"orders has no connection to {stack.internal_addr}: {sorted(outgoing)}"
    assert {_host(peer) for peer in outgoing} == {stack.edge_host}, f"orders dials {sorted(outgoing)}"

    # Envoy dials every implementation (every catalog replica) on its host.
    upstream = {peer for _, peer in _sockets(hosts, stack.edge_host, "state", "established")}
    for program, impl, address in stack.programs():
        wanted = f"{address}:{stack.topology.port_of(impl)}"
        assert wanted in upstream, f"Envoy has no connection to {program} at {wanted}: {sorted(upstream)}"


# -- faults -----------------------------------------------------------------


@contextlib.contextmanager
def fault(kind: str, stack: Stack, hosts: netns.Network, program: str) -> Iterator[None]:
    """A host gone: its link cut, or its process killed (and kept down) instead."""
    address = dict((name, host) for name, _, host in stack.programs())[program]
    if kind == CUT:
        hosts.cut(address)
    else:
        # Dies at once (no drain), and supervisord must not restart it yet.
        stack.signal_program(program, "KILL")
        stack.ctl("stop", program, check=False)
    try:
        yield
    finally:
        if kind == CUT:
            hosts.restore(address)
        else:
            stack.start_program(program)


def _host_status(stack: Stack, cluster: str, address: str) -> tuple[set[str], int]:
    """Envoy's view of one host of a cluster: its failure flags, and requests sent to it."""
    with urllib.request.urlopen(f"{stack.admin_url}/clusters?format=json", timeout=5) as reply:
        clusters = json.load(reply)["cluster_statuses"]
    for status in clusters:
        if status["name"] != cluster:
            continue
        for host in status.get("host_statuses", []):
            if host["address"]["socket_address"]["address"] == address:
                flags = {k for k, v in host.get("health_status", {}).items() if k.startswith("failed") and v}
                stats = {s["name"]: int(s.get("value", 0)) for s in host.get("stats", [])}
                return flags, stats.get("rq_total", 0)
    raise AssertionError(f"Envoy's {cluster} has no host {address}")


@dataclass
class Placed:
    """One PlaceOrder call: what it answered (the order, or the error), and when it ran."""

    request: orders_pb.PlaceOrderRequest
    answer: orders_pb.Order | str
    start: float
    end: float


@dataclass
class Traffic:
    """Reads and orders through the public listener from a few threads, until stopped."""

    shop: Shop
    sku: str
    readers: int = 0
    buyers: int = 0
    reads: collections.Counter[str] = field(default_factory=collections.Counter)
    orders: list[Placed] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        for n in range(self.readers):
            self._threads.append(threading.Thread(target=self._read, name=f"reader-{n}", daemon=True))
        for n in range(self.buyers):
            self._threads.append(threading.Thread(target=self._buy, name=f"buyer-{n}", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ORDER_TIMEOUT + 5)

    def _read(self) -> None:
        request = catalog_pb.GetProductRequest(product_id=self.sku)
        while not self._stop.is_set():
            try:
                self.shop.catalog.GetProduct(request, timeout=READ_TIMEOUT)
                outcome = "OK"
            except grpc.RpcError as err:
                outcome = f"{err.code().name}: {err.details()}"
            with self._lock:
                self.reads[outcome] += 1

    def _buy(self) -> None:
        while not self._stop.is_set():
            request = self.shop.order_request(self.sku)
            answer: orders_pb.Order | str
            start = time.monotonic()
            try:
                answer = self.shop.place(request, timeout=ORDER_TIMEOUT)
            except grpc.RpcError as err:
                answer = f"{err.code().name}: {err.details()}"
            with self._lock:
                self.orders.append(Placed(request, answer, start, time.monotonic()))

    def read_count(self) -> int:
        with self._lock:
            return sum(self.reads.values())

    def order_count(self) -> int:
        with self._lock:
            return len(self.orders)


def _settle(shop: Shop, traffic: Traffic) -> dict[str, orders_pb.Order]:
    """Every order the traffic placed, by request_id, once it is CONFIRMED or FAILED; none may be missing."""
    settled = {}
    for placed in traffic.orders:
        request, answer = placed.request, placed.answer
        found = wait_for(
            f"the order of {request.request_id} (PlaceOrder answered {answer if isinstance(answer, str) else 'an order'})",
            lambda r=request: shop.orders_of(r.customer_id) or None,
            timeout=30,
        )
        assert len(found) == 1, f"{request.request_id} placed {len(found)} orders: {[describe_order(o) for o in found]}"
        settled[request.request_id] = shop.wait_terminal(found[0].order_id, timeout=90)
    return settled


def _states(orders: list[orders_pb.Order]) -> str:
    counts = collections.Counter(orders_pb.OrderState.Name(o.state) for o in orders)
    return ", ".join(f"{n} {state.removeprefix('ORDER_STATE_')}" for state, n in sorted(counts.items()))


def _assert_accounted(
    shop: Shop, sku: str, before_on_hand: int, before_reserved: int, orders: list[orders_pb.Order]
) -> None:
    """Stock moved by exactly what was confirmed, nothing stays reserved, and
    money was kept for exactly the confirmed orders, in their amounts."""
    confirmed = [o for o in orders if o.state == orders_pb.ORDER_STATE_CONFIRMED]

    def unreserved() -> inventory_pb.StockLevel | None:
        level = shop.stock(sku)
        return level if level.reserved == before_reserved else None

    after = wait_for("every reservation of the settled orders to be committed or released", unreserved, timeout=30)
    sold = sum(line.quantity for o in confirmed for line in o.lines)
    assert after.on_hand == before_on_hand - sold, f"on_hand {before_on_hand} -> {after.on_hand}, {sold} sold"
    for order in orders:
        if order.state == orders_pb.ORDER_STATE_FAILED:
            shop.assert_no_money_kept(order)
            continue
        payment = shop.payment(order.payment_id)
        assert payment.state == payments_pb.PAYMENT_STATE_SUCCEEDED, describe_order(order)
        assert (payment.amount.units, payment.amount.nanos, payment.amount.currency_code) == (
            order.total.units,
            order.total.nanos,
            order.total.currency_code,
        ), f"{describe_order(order)} was charged {payment.amount}"


@pytest.mark.parametrize("kind", [CUT, KILLED])
def test_a_catalog_replica_gone_is_ejected_its_calls_retried_and_it_comes_back(
    kind: str, private_stack: Stack, shop: Shop, hosts: netns.Network
) -> None:
    stack = private_stack
    replicas = stack.topology.replicas(stack.topology.impl_of("catalog"))
    assert len(replicas) >= 2, f"deploy/hosts.toml gives the catalog {len(replicas)} host(s); this needs two"
    (kept, kept_host), (gone, gone_host) = replicas[0], replicas[1]
    cluster = stack.topology.impl_of("catalog").cluster
    sku = "sku-tote-bag"
    shop.import_stock({sku: 100_000})
    level = shop.stock(sku)
    retries = f"cluster.{cluster}.upstream_rq_retry"
    retried_before = stack.envoy_stats(retries).get(retries, 0)

    def status() -> tuple[set[str], int]:
        return _host_status(stack, cluster, gone_host)

    with Traffic(shop, sku, readers=4, buyers=1) as traffic:
        wait_for("both replicas to serve reads", lambda: status()[1] > 20, timeout=30)
        with fault(kind, stack, hosts, gone):
            gone_at = time.monotonic()
            flags = wait_for(f"Envoy to take {gone} out ({kind})", lambda: status()[0] or None, timeout=20)
            ejected_after = time.monotonic() - gone_at
            sent = status()[1]
            reads = traffic.read_count()
            wait_for("more reads while it is out", lambda: traffic.read_count() >= reads + 100, timeout=30)
            assert status()[1] <= sent + 1, f"Envoy kept sending to {gone} after ejecting it"
        back_at = time.monotonic()
        wait_for(f"Envoy to take {gone} back", lambda: not status()[0], timeout=30)
        sent = status()[1]
        wait_for(f"reads to reach {gone} again", lambda: status()[1] > sent + 20, timeout=30)
        returned_after = time.monotonic() - back_at
    assert _host_status(stack, cluster, kept_host)[0] == set(), f"{kept} was ejected too"

    total = sum(traffic.reads.values())
    failed_reads = {outcome: n for outcome, n in traffic.reads.items() if outcome != "OK"}
    assert not failed_reads, f"reads failed while {gone} was gone ({kind}): {failed_reads} of {total}"
    retried = stack.envoy_stats(retries).get(retries, 0) - retried_before
    assert retried > 0, f"Envoy retried no catalog call while {gone} was gone ({kind}); flags: {sorted(flags)}"
    orders = list(_settle(shop, traffic).values())
    not_confirmed = [describe_order(o) for o in orders if o.state != orders_pb.ORDER_STATE_CONFIRMED]
    assert not not_confirmed, f"with one catalog replica left every order should confirm: {not_confirmed}"
    _assert_accounted(shop, sku, level.on_hand, level.reserved, orders)
    reliability.record(
        reliability.Outcome(
            f"hosts: one of two catalog replicas' {kind}",
            f"4 GetProduct readers, 1 buyer ({total} reads)",
            "every read answered, every order confirmed, stock and money reconcile",
            f"ejected after {ejected_after:.1f} s ({', '.join(sorted(flags))}); {retried} calls retried; "
            f"back and routed {returned_after:.1f} s after; orders: {_states(orders)}",
        )
    )


@pytest.mark.parametrize("kind", [CUT, KILLED])
def test_payments_gone_fails_orders_cleanly_loses_none_and_recovers(
    kind: str, private_stack: Stack, shop: Shop, hosts: netns.Network
) -> None:
    stack = private_stack
    impl = stack.topology.impl_of("payments")
    address = stack.topology.host_of(impl.cluster)
    sku = "sku-french-press-1l"
    shop.import_stock({sku: 100_000})
    level = shop.stock(sku)

    def failed_flags() -> set[str]:
        return _host_status(stack, impl.cluster, address)[0]

    with Traffic(shop, sku, buyers=3) as traffic:
        wait_for("a few orders before the fault", lambda: traffic.order_count() >= 3, timeout=60)
        with fault(kind, stack, hosts, impl.cluster):
            gone_at = time.monotonic()
            flags = wait_for(f"Envoy to take payments out ({kind})", lambda: failed_flags() or None, timeout=20)
            out_at = time.monotonic()
            wait_for(
                "orders placed and answered while payments is out",
                lambda: sum(1 for p in traffic.orders if p.start > out_at) >= 3,
                timeout=60,
            )
            # Orders answered by now were answered with payments out; a later
            # one may catch payments coming back (the saga retries a Charge).
            back_at = time.monotonic()
        wait_for("Envoy to take payments back", lambda: not failed_flags(), timeout=30)
        healthy_at = time.monotonic()
        wait_for("orders placed after it is back", lambda: sum(1 for p in traffic.orders if p.start > healthy_at) >= 6)

    orders = _settle(shop, traffic)
    errors = {p.request.request_id: p.answer for p in traffic.orders if isinstance(p.answer, str)}
    assert not errors, f"PlaceOrder should answer with the order, failed or not: {errors}"
    # Placed while Envoy had payments out: refused at once, failed cleanly.
    while_out = [orders[p.request.request_id] for p in traffic.orders if out_at < p.start and p.end < back_at]
    assert while_out, "no order was placed and answered while payments was out"
    for order in while_out:
        assert order.state == orders_pb.ORDER_STATE_FAILED, describe_order(order)
        assert order.failure_reason == orders_pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE, describe_order(order)
    # Placed once it was back: they go through.
    after = [orders[p.request.request_id] for p in traffic.orders if p.start > healthy_at]
    assert all(o.state == orders_pb.ORDER_STATE_CONFIRMED for o in after), [describe_order(o) for o in after]
    every = list(orders.values())
    _assert_accounted(shop, sku, level.on_hand, level.reserved, every)
    slowest = max(p.end - p.start for p in traffic.orders)
    reliability.record(
        reliability.Outcome(
            f"hosts: payments' {kind}",
            f"3 buyers ({len(every)} orders)",
            "no order lost: every one CONFIRMED or FAILED, stock and money reconcile; confirms again once back",
            f"ejected after {out_at - gone_at:.1f} s ({', '.join(sorted(flags))}); while out {len(while_out)} "
            f"FAILED DEPENDENCY_UNAVAILABLE; all: {_states(every)}; slowest PlaceOrder {slowest:.1f} s",
        )
    )
