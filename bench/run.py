"""The bench driver: start a private stack, run every scenario, write the report.

The stack is the one `make up` runs (supervisord, every service, Envoy with
the configuration deploy/shopstack generates), on free ports in
results/bench-run/, with fresh databases. Inventory runs every implementation
that is built: Node takes Envoy's traffic and the Go and Python ones get
weight 0, so each has its own cluster and `x-shop-impl` pins a call to it.

Scenarios (docs/performance.md says why each is shaped so):

1. unary: the same cheap read in each language, closed loop, fixed
   concurrency and connections, direct and through Envoy;
2. hop: the same reads at a fixed moderate rate (open loop), direct and
   through Envoy: the latency the Envoy hop adds;
3. stream: WatchStock messages/s while stock changes are written;
4. e2e: PlaceOrder through Envoy's public listener (the whole saga, durable
   commits in four databases) at 1 and 16 concurrent clients;
5. tls: what TLS costs: the cheap read of one service per language over
   mutual TLS (as the stack runs it) and over plaintext, on a twin process
   of the same implementation started without its TLS files, side by side.

Every call goes over TLS as the stack requires: the operator's certificate to
service ports and the internal listener, the CA alone to the public one, and
a customer token for PlaceOrder.

In full mode each measurement is repeated (rounds), the rounds interleaved so
that a burst of noise from the shared machine lands on every row alike, and
the report quotes the median of the rounds. Each row's first run is a warm-up
whose figures are discarded. Any failed request fails the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import grpc
import yaml
from google.type import money_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.inventory.v1 import inventory_service_pb2 as inv_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from shop.orders.v1 import order_service_pb2 as ord_pb
from shop.orders.v1 import order_service_pb2_grpc as ord_grpc
from shop.payments.v1 import payment_service_pb2 as pay_pb
from shop.payments.v1 import payment_service_pb2_grpc as pay_grpc
from shopstack import pki
from shopstack import topology as topo_mod
from shopstack.envoy import IMPL_HEADER
from shopstack.stack import ENVOY_PROGRAM, Stack, StackError, free_port
from shopstack.topology import DESCRIPTOR_SET, ROOT, Implementation

from bench import cpu, machine, report, streaming
from bench import floors as floors_mod
from bench.errors import BenchError
from bench.floors import Floors
from bench.ghz import Call, Ghz, Load, Result, Tls
from bench.model import FLOOR, FULL, QUICK, Knobs, Plan, Row, Target

RESULTS = ROOT / "results"
RUN_DIR = RESULTS / "bench-run"
GHZ = ROOT / ".tmp" / "bin" / "ghz"
VENV_BIN = ROOT / ".venv" / "bin"
INVENTORY_LANGS = ("node", "go", "python")


# -- the stack ----------------------------------------------------------------


def available_inventory() -> tuple[list[str], dict[str, str]]:
    """The inventory implementations that can run here, and why the others cannot."""
    skipped = {}
    if not (ROOT / "node_service" / "dist" / "src" / "inventory" / "main.js").is_file():
        skipped["node"] = "node_service/dist/src/inventory/main.js is not built"
    if not (ROOT / ".tmp" / "bin" / "shop-inventory").is_file():
        skipped["go"] = ".tmp/bin/shop-inventory is not built (go_service/cmd/inventory)"
    probe = "import importlib.util,sys; sys.exit(importlib.util.find_spec('shop_services.inventory.__main__') is None)"
    if subprocess.run([str(VENV_BIN / "python"), "-c", probe], check=False).returncode != 0:
        skipped["python"] = "shop_services.inventory is not installed in .venv"
    return [lang for lang in INVENTORY_LANGS if lang not in skipped], skipped


@dataclass
class BenchStack(Stack):
    """The stack as `make up` runs it, plus the knobs an experiment may turn."""

    envoy_concurrency: int | None = None
    node_flags: str = ""

    def render(self) -> None:
        """The stack's configuration, with Envoy patient enough with a saturated service.

        The bench saturates each service on purpose, on two cores shared with
        other work: a one-second health-check timeout then trips in the
        middle of a run, Envoy drops the host, and the run fails with "no
        healthy upstream". Five seconds and five failures, and no outlier
        ejection, change nothing the bench measures (a check a second costs
        the same) and only what a failover test would.
        """
        super().render()
        path = self.envoy_dir / "cds.yaml"
        config = yaml.safe_load(path.read_text())
        for cluster in config["resources"]:
            for check in cluster.get("health_checks", []):
                check.update(timeout=BENCH_HEALTH_TIMEOUT, unhealthy_threshold=BENCH_UNHEALTHY_THRESHOLD)
            # Likewise a saturated service's slow replies time out a retry's
            # per-try timeout three times in a row, and outlier detection
            # ejects the host: every call of the rest of the run then fails at
            # once with no healthy upstream.
            cluster.pop("outlier_detection", None)
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def supervisord_conf(self) -> str:
        text = super().supervisord_conf()
        if self.node_flags:
            # A program's command is `/bin/sh -c '<redirect to its log>' node <script> ...`
            # (shopstack's supervisord_conf): the flags go right after `node`.
            text, found = re.subn(r"(\ncommand=/bin/sh -c '[^'\n]*' )node ", rf"\g<1>node {self.node_flags} ", text)
            if not found:
                raise BenchError("cannot pass flags to Node: no program runs `node <script>` any more")
        if self.envoy_concurrency is not None:
            if "--concurrency 2" not in text:
                raise BenchError("cannot set Envoy's concurrency: shopstack no longer passes --concurrency 2")
            text = text.replace("--concurrency 2", f"--concurrency {self.envoy_concurrency}")
        return text


# The public listener's token bucket in the bench's stack (make_stack): far
# above what two cores can serve.
BENCH_PUBLIC_RPS = 1_000_000
# Envoy's health checks in the bench's stack (BenchStack.render).
BENCH_HEALTH_TIMEOUT = "5s"
BENCH_UNHEALTHY_THRESHOLD = 5

# The environment of every service when telemetry is off (Knobs.telemetry).
TELEMETRY_OFF_ENV = {"SHOP_TRACE_SAMPLE_RATIO": "0", "SHOP_METRICS_ADDR": ""}
# The fan-out scenario is one client holding up to a thousand WatchStock
# streams on purpose. The per-client cap (stack.toml [limits.services]) is
# there to stop one public client from hoarding streams, so the bench's
# inventory allows as many as the scenario opens; the cap stays on.
BENCH_STREAMS_PER_CLIENT = max(FULL.fanout_watchers)
# Scenario names of the rows measured with telemetry off (compared in the report).
OFF_SUFFIX = " (telemetry off)"


def make_stack(langs: list[str], knobs: Knobs) -> Stack:
    topo = topo_mod.load()
    impls = [impl for svc in topo.services.values() for impl in svc.implementations.values()]
    ports = {key: free_port() for impl in impls for key in (impl.cluster, impl.metrics_key)}
    topo = topo.with_ports(free_port(), free_port(), free_port(), ports, telemetry=(free_port(), free_port()))
    # The public listener's token bucket (stack.toml [limits.public]) caps the
    # whole listener at 2,000 requests/s, and ghz drives a service to
    # saturation on purpose: past that it would measure the limiter's
    # refusals. The filter stays in the chain, never refusing.
    public = replace(topo.limits.public, requests_per_second=BENCH_PUBLIC_RPS, burst=BENCH_PUBLIC_RPS)
    topo = replace(topo, limits=replace(topo.limits, public=public))
    routing = {name: {svc.impl: 100} for name, svc in topo.services.items()}
    routing["inventory"] = {lang: (100 if i == 0 else 0) for i, lang in enumerate(langs)}
    env = {name: dict(knobs.service_env.get(name, {})) for name in topo.services}
    env["inventory"].setdefault("SHOP_MAX_STREAMS_PER_CLIENT", str(BENCH_STREAMS_PER_CLIENT))
    if not knobs.telemetry:
        for values in env.values():
            values.update(TELEMETRY_OFF_ENV)
    return BenchStack(
        run_dir=RUN_DIR,
        topology=topo,
        routing=routing,
        log_level=knobs.log_level,
        env=env,
        envoy_concurrency=knobs.envoy_concurrency,
        telemetry=knobs.telemetry,
        node_flags=knobs.node_flags,
    )


def claim_run_dir() -> None:
    """Hold RUN_DIR for this process's life, or fail at once if another bench or profile holds it.

    Every bench command (bench, bench-envoy, bench-replicas, profile) starts
    its stack in the same directory, and starting one stops whatever stack is
    there: a second command would silently kill the first one's run. The lock
    is an flock on a file beside it, so it goes with the process that holds
    it, however that process ends.
    """
    global _RUN_LOCK
    if _RUN_LOCK is not None:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    lock = open(RESULTS / "bench-run.lock", "a+")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise BenchError(
            f"another bench or profile is running in this checkout (pid {holder}) and owns {RUN_DIR}; "
            "wait for it to finish, or stop it"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    _RUN_LOCK = lock
    # SIGTERM (`kill PID`) ends the command like Ctrl-C does: through its
    # finally blocks, which stop the stack and the floors. Python's default
    # would exit at once and leave them running.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


_RUN_LOCK: IO[str] | None = None


def start_stack(knobs: Knobs) -> tuple[Stack, dict[str, str]]:
    """Start a fresh private stack; drop an inventory implementation that cannot become healthy."""
    claim_run_dir()
    Stack(run_dir=RUN_DIR, topology=topo_mod.load()).down()
    langs, skipped = available_inventory()
    if "node" not in langs:
        raise BenchError(f"the default inventory cannot run: {skipped['node']}; run `make build`")
    while True:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        stack = make_stack(langs, knobs)
        try:
            stack.up(timeout=120)
            return stack, skipped
        except StackError as err:
            stack.down()
            broken = [lang for lang in langs[1:] if f"inventory-{lang}" in str(err)]
            if not broken:
                raise BenchError(f"the bench stack did not start:\n{err}") from None
            for lang in broken:
                skipped[lang] = f"inventory-{lang} did not become healthy (see {RUN_DIR}/logs/inventory-{lang}.log)"
                langs.remove(lang)
            print(f"bench: {', '.join(broken)} inventory not healthy; continuing without", file=sys.stderr)


# -- seeding ------------------------------------------------------------------


def seed(stack: Stack, order_sku: str) -> str:
    """Stock for the orders and one payment to read; returns the payment id."""
    with stack.internal_channel() as channel:
        summary = inv_grpc.InventoryServiceStub(channel).ImportStock(
            iter([inv_pb.ImportStockRequest(sku=order_sku, on_hand=1_000_000)]), timeout=10
        )
        if summary.items_received != 1:
            raise BenchError(f"ImportStock of {order_sku} received {summary.items_received} items")
        payment = pay_grpc.PaymentServiceStub(channel).Charge(
            pay_pb.ChargeRequest(
                request_id=f"bench-seed-{time.time_ns()}",
                amount=money_pb2.Money(currency_code="EUR", units=1),
                payment_token="tok_success",
                reference="bench seed",
            ),
            timeout=10,
        )
    return payment.payment.payment_id


def check_orders(stack: Stack, customer_id: str, expected: int) -> None:
    """Every order a PlaceOrder run made must be CONFIRMED: a failed saga is a failed request."""
    states: dict[str, int] = {}
    token = ""
    auth = (("authorization", f"Bearer {stack.token(customer_id)}"),)
    with stack.public_channel() as channel:
        stub = ord_grpc.OrderServiceStub(channel)
        while True:
            page = stub.ListOrders(
                ord_pb.ListOrdersRequest(customer_id=customer_id, page_size=100, page_token=token),
                timeout=30,
                metadata=auth,
            )
            for order in page.orders:
                name = ord_pb.OrderState.Name(order.state)
                states[name] = states.get(name, 0) + 1
            token = page.next_page_token
            if not token:
                break
    confirmed = states.get("ORDER_STATE_CONFIRMED", 0)
    if confirmed != expected or len(states) > 1:
        raise BenchError(f"PlaceOrder for {customer_id}: ghz counted {expected} OK calls, the orders are {states}")


# -- scenarios ----------------------------------------------------------------


class Bench:
    def __init__(
        self,
        plan: Plan,
        stack: Stack,
        ghz: Ghz,
        payment_id: str,
        langs: list[str],
        skus: list[str],
        suffix: str = "",
        floors: Floors | None = None,
    ) -> None:
        self.suffix = suffix
        self.floors = floors
        self.plan = plan
        self.stack = stack
        self.ghz = ghz
        self.rows: dict[tuple[str, str, str], Row] = {}
        self.order_sku = skus[0]
        self.watch_skus = skus[1:]
        self.langs = langs
        self.stock_value = 1000
        self.pids = cpu.programs(stack)
        if floors is not None:
            self.pids.update(floors.pids())
        self.twins = Twins(stack)
        # Each process's CPU seconds per second with no load (health checks,
        # stats, span and metrics export): measure_idle fills it, and every
        # run's CPU per request is counted net of it.
        self.idle: dict[str, float] = {}
        read_sku = skus[1]
        self.targets = [
            Target(
                "catalog",
                "go",
                "GetProduct",
                "shop.catalog.v1.CatalogService.GetProduct",
                json.dumps({"product_id": read_sku}),
                internal=False,
            ),
            *[
                Target(
                    "inventory",
                    lang,
                    "GetStock",
                    "shop.inventory.v1.InventoryService.GetStock",
                    json.dumps({"skus": [read_sku]}),
                    internal=False,
                )
                for lang in langs
            ],
            Target(
                "payments",
                "python",
                "GetPayment",
                "shop.payments.v1.PaymentService.GetPayment",
                json.dumps({"payment_id": payment_id}),
                internal=True,
            ),
        ]
        # The bare servers and the bare hop, measured in the same rounds (bench/floors.py).
        if floors is not None and floors.servers:
            health = json.dumps({})
            self.targets += [
                Target(FLOOR, lang, "health Check", floors_mod.HEALTH_CHECK, health, internal=False)
                for lang in floors_mod.LANGS
            ]

    def row(self, scenario: str, target: str, path: str, program: str = "", lang: str = "", proxy: str = "") -> Row:
        scenario += self.suffix
        key = (scenario, target, path)
        if key not in self.rows:
            self.rows[key] = Row(scenario, target, path, program=program, lang=lang, proxy=proxy)
        return self.rows[key]

    def target_row(self, scenario: str, target: Target, path: str) -> Row:
        """The row of one target's calls on one path, knowing which processes serve it."""
        via = path.startswith("envoy")
        if target.is_floor:
            program, proxy = floors_mod.program(target.lang), floors_mod.ENVOY_PROGRAM if via else ""
        else:
            program, proxy = f"{target.service}-{target.lang}", ENVOY_PROGRAM if via else ""
        return self.row(scenario, target.label, path, program, target.lang, proxy)

    def pin(self, service: str, lang: str) -> dict[str, str]:
        """x-shop-impl, when Envoy runs more than one implementation of the service."""
        return {IMPL_HEADER: lang} if len(self.stack.routing.get(service, {})) > 1 else {}

    @property
    def operator_tls(self) -> Tls:
        """Service ports and the internal listener: mutual TLS as the operator."""
        pair = self.stack.certs.pair(pki.OPERATOR)
        return Tls(self.stack.certs.ca, pair.cert, pair.key)

    @property
    def public_tls(self) -> Tls:
        return Tls(self.stack.certs.ca)

    def calls(self, target: Target) -> list[tuple[str, Call]]:
        if target.is_floor:
            return self.floor_calls(target)
        direct = Call(target.method, self.stack.addr(target.service, target.lang), target.data, tls=self.operator_tls)
        envoy_addr = self.stack.internal_addr if target.internal else self.stack.public_addr
        metadata = self.pin(target.service, target.lang)
        if metadata and not target.internal:
            # Pinning at the public edge needs an operator's token.
            metadata = {**metadata, "authorization": f"Bearer {self.stack.operator_token('bench')}"}
        tls = self.operator_tls if target.internal else self.public_tls
        via = Call(target.method, envoy_addr, target.data, metadata, tls=tls)
        return [("direct", direct), ("envoy internal" if target.internal else "envoy public", via)]

    def floor_calls(self, target: Target) -> list[tuple[str, Call]]:
        """A bare server directly; the Go one also through the bare hop's two listeners."""
        assert self.floors is not None
        server = self.floors.servers[target.lang]
        health = self.floors.protoset
        calls = [("direct", Call(target.method, server.address, target.data, tls=self.operator_tls, protoset=health))]
        if target.lang == "go":
            calls += [
                (
                    "envoy public",
                    Call(target.method, self.floors.envoy_public, target.data, tls=self.public_tls, protoset=health),
                ),
                (
                    "envoy internal",
                    Call(
                        target.method, self.floors.envoy_internal, target.data, tls=self.operator_tls, protoset=health
                    ),
                ),
            ]
        return calls

    def ghz_run(self, row: Row, call: Call, load: Load, warm: bool) -> None:
        what = f"{row.scenario}: {row.target} {row.path}"
        if row.proxy == ENVOY_PROGRAM:
            self.wait_cluster(row.program)
        if warm:
            self.ghz.run(call, Load(load.concurrency, load.connections, self.plan.warmup_seconds, load.rps), what=what)
        result = self.measured(call, load, what, row)
        print(
            f"  {what:58} {result.rps:9.1f} rps  p50 {result.latency_ms[50]:7.2f} ms  p99 {result.latency_ms[99]:7.2f} ms"
        )

    def measure_idle(self, seconds: float) -> None:
        """What each process spends with no load at all, per second."""
        before, start = cpu.sample(self.pids), time.monotonic()
        time.sleep(seconds)
        after, elapsed = cpu.sample(self.pids), time.monotonic() - start
        self.idle = {name: value / elapsed for name, value in cpu.cpu_seconds(before, after).items()}
        busy = ", ".join(f"{name} {value * 1000:.0f}" for name, value in sorted(self.idle.items()) if value >= 0.001)
        print(f"bench: idle CPU (ms per second): {busy or 'none'}")

    def wait_cluster(self, cluster: str, timeout: float = 30.0) -> None:
        """Start a run through Envoy only once Envoy sees the service healthy.

        On a heavily loaded machine the run just before (the same service
        direct, at full speed) can make two of Envoy's one-second health
        checks time out, and the next run would begin with "no healthy
        upstream" until the next check passes, a fifth of a second later.
        """
        deadline = time.monotonic() + timeout
        while (state := self.stack.envoy_clusters().get(cluster)) != "HEALTHY":
            if time.monotonic() > deadline:
                raise BenchError(f"Envoy has seen {cluster} as {state} for {timeout:.0f} s")
            time.sleep(0.1)

    def measured(self, call: Call, load: Load, what: str, row: Row) -> Result:
        """One measured ghz run, with the cores each process of the stack used meanwhile."""
        before, start = cpu.sample(self.pids), time.monotonic()
        result = self.ghz.run(call, load, what=what)
        after, window = cpu.sample(self.pids), time.monotonic() - start
        used = cpu.cores_used(before, after, window)
        idle = {name: round(rate * window, 4) for name, rate in self.idle.items() if name in after}
        row.runs.append(
            {**result.to_json(), "cores": used, "cpu_seconds": cpu.cpu_seconds(before, after), "idle_cpu_seconds": idle}
        )
        return result

    def unary(self, round_no: int) -> None:
        load = Load(self.plan.concurrency, self.plan.connections, self.plan.unary_seconds)
        for target in self.targets:
            for path, call in self.calls(target):
                row = self.target_row("unary", target, path)
                self.ghz_run(row, call, load, warm=round_no == 0)

    def hop(self, round_no: int) -> None:
        load = Load(self.plan.hop_concurrency, self.plan.connections, self.plan.hop_seconds, self.plan.hop_rps)
        for target in self.targets:
            for path, call in self.calls(target):
                self.ghz_run(self.target_row("hop", target, path), call, load, warm=False)

    def stream(self, round_no: int) -> None:
        for lang in self.langs:
            label = f"inventory WatchStock ({lang})"
            direct = self.stack.addr("inventory", lang)
            # Through the public listener the pin needs an operator's token.
            pinned: tuple[tuple[str, str], ...] = ()
            if self.pin("inventory", lang):
                token = self.stack.operator_token("bench")
                pinned = ((IMPL_HEADER, lang), ("authorization", f"Bearer {token}"))
            for path, watch_addr, pin in (("direct", direct, ()), ("envoy public", self.stack.public_addr, pinned)):
                row = self.row("stream", label, path)
                before, start = cpu.sample(self.pids), time.monotonic()
                result = asyncio.run(
                    streaming.measure(
                        watch_addr,
                        direct,
                        self.stack.aio_channel,
                        self.watch_skus,
                        watchers=self.plan.watchers,
                        seconds=self.plan.stream_seconds,
                        metadata=pin,
                        first_value=self.stock_value,
                    )
                )
                # Every write sets a value no earlier write set, so each item is a change.
                self.stock_value += result.writes
                used = cpu.cores_used(before, cpu.sample(self.pids), time.monotonic() - start)
                row.runs.append({**result.to_json(), "cores": used})
                print(
                    f"  stream: {label} {path:30} {result.messages_per_second:9.1f} msg/s "
                    f"({result.received}/{result.expected} messages, {result.changes_per_second:.0f} changes/s)"
                )

    def fanout(self, round_no: int) -> None:
        """WatchStock's scaling curve: 1 to 1,000 watchers of one SKU, direct to each implementation."""
        sku = self.watch_skus[:1]
        for lang in self.langs:
            label = f"inventory WatchStock ({lang})"
            address = self.stack.addr("inventory", lang)
            for watchers in self.plan.fanout_watchers:
                path = f"{watchers} watcher{'s' if watchers > 1 else ''}"
                row = self.row("fanout", label, path, f"inventory-{lang}", lang)
                before, start = cpu.sample(self.pids), time.monotonic()
                result = asyncio.run(
                    streaming.measure(
                        address,
                        address,
                        self.stack.aio_channel,
                        sku,
                        watchers=watchers,
                        seconds=self.plan.stream_seconds,
                        metadata=(),
                        first_value=self.stock_value,
                        watchers_per_channel=FANOUT_STREAMS_PER_CONNECTION,
                    )
                )
                self.stock_value += result.writes
                used = cpu.cores_used(before, cpu.sample(self.pids), time.monotonic() - start)
                row.runs.append({**result.to_json(), "cores": used})
                p50 = result.latency_ms.get(50, 0.0)
                print(
                    f"  fanout: {label} {path:14} {result.messages_per_second:9.1f} msg/s  p50 {p50:7.2f} ms "
                    f"({result.received}/{result.expected} messages)"
                )

    def e2e(self, round_no: int) -> None:
        for clients in self.plan.e2e_clients:
            label = f"orders PlaceOrder, {clients} client{'s' if clients > 1 else ''}"
            row = self.row("e2e", label, "envoy public")
            load = Load(clients, clients, self.plan.e2e_seconds)
            runs = [("warm-up", Load(clients, clients, self.plan.warmup_seconds))] if round_no == 0 else []
            runs.append(("measured", load))
            for kind, run_load in runs:
                customer = f"bench-{int(time.time() * 1000)}-c{clients}-r{round_no}-{kind}"
                data = json.dumps(
                    {
                        "request_id": "{{newUUID}}",
                        "customer_id": customer,
                        "payment_token": "tok_success",
                        "lines": [{"product_id": self.order_sku, "quantity": 1}],
                    }
                )
                auth = {"authorization": f"Bearer {self.stack.token(customer)}"}
                call = Call(
                    "shop.orders.v1.OrderService.PlaceOrder", self.stack.public_addr, data, auth, tls=self.public_tls
                )
                what = f"e2e: {label}"
                if kind == "measured":
                    result = self.measured(call, run_load, what, row)
                else:
                    result = self.ghz.run(call, run_load, what=what)
                check_orders(self.stack, customer, result.count)
                if kind == "measured":
                    print(
                        f"  {what:58} {result.rps:9.1f} orders/s p50 {result.latency_ms[50]:7.2f} ms  "
                        f"p99 {result.latency_ms[99]:7.2f} ms"
                    )

    def tls(self, round_no: int) -> None:
        """One service per language, the same read over mutual TLS and over plaintext."""
        load = Load(self.plan.concurrency, self.plan.connections, self.plan.unary_seconds)
        for target in self.targets:
            if target.lang not in TLS_TWINS.get(target.service, ()):
                continue
            impl = self.stack.topology.impl_of(target.service, target.lang)
            twin = self.twins.start(impl)
            self.pids[twin.program] = twin.pid
            secure = Call(
                target.method, self.stack.addr(target.service, target.lang), target.data, tls=self.operator_tls
            )
            plain = Call(target.method, twin.address, target.data)
            for path, call, program in (("mutual TLS", secure, impl.cluster), ("plaintext", plain, twin.program)):
                self.ghz_run(self.row("tls", target.label, path, program, target.lang), call, load, warm=round_no == 0)


# The fan-out curve's watchers share a connection per this many streams (a
# server may cap the streams of one HTTP/2 connection at 100).
FANOUT_STREAMS_PER_CONNECTION = 100

# The implementations the TLS scenario measures: one per language.
TLS_TWINS = {"catalog": ("go",), "inventory": ("node",), "payments": ("python",)}


@dataclass
class Twin:
    program: str
    pid: int
    address: str
    process: subprocess.Popen[bytes]


class Twins:
    """Plaintext twins of running implementations: the same command, database
    and settings as the stack's process, without the TLS files."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.running: dict[str, Twin] = {}

    def start(self, impl: Implementation) -> Twin:
        if impl.cluster in self.running:
            return self.running[impl.cluster]
        address = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in self.stack.program_env(impl).items() if not k.startswith("SHOP_TLS_")}
        env["SHOP_LISTEN_ADDR"] = address
        # The stack's process serves the metrics port; the twin serves none.
        env["SHOP_METRICS_ADDR"] = ""
        command = [part.format(root=ROOT, run=self.stack.run_dir) for part in impl.command]
        program = f"{impl.cluster}-plaintext"
        log = (self.stack.logs_dir / f"{program}.log").open("wb")
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        twin = Twin(program, process.pid, address, process)
        self.running[impl.cluster] = twin
        deadline = time.monotonic() + 60
        while True:
            try:
                with grpc.insecure_channel(address) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return twin
            except grpc.RpcError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{program} did not start; see {Path(log.name)}")
            time.sleep(0.2)

    def stop(self) -> None:
        for twin in self.running.values():
            twin.process.send_signal(signal.SIGTERM)
        for twin in self.running.values():
            try:
                twin.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                twin.process.kill()
                twin.process.wait()


def measure_without_telemetry(plan: Plan, knobs: Knobs, ghz: Ghz, skus: list[str], scenarios: list[str]) -> list[Row]:
    """The same scenarios on a fresh stack with telemetry off; rows named '<scenario> (telemetry off)'."""
    if not scenarios:
        return []
    print(f"bench: telemetry off: {', '.join(scenarios)} on a fresh stack without it")
    stack, _ = start_stack(replace(knobs, telemetry=False))
    try:
        payment_id = seed(stack, skus[0])
        langs = sorted(stack.routing["inventory"], key=INVENTORY_LANGS.index)
        bench = Bench(plan, stack, ghz, payment_id, langs, skus, suffix=OFF_SUFFIX)
        for round_no in range(plan.rounds):
            for name in scenarios:
                SCENARIOS[name](bench, round_no)
        return list(bench.rows.values())
    finally:
        stack.down()


SCENARIOS: dict[str, Callable[[Bench, int], None]] = {
    "unary": Bench.unary,
    "hop": Bench.hop,
    "stream": Bench.stream,
    "e2e": Bench.e2e,
    "fanout": Bench.fanout,
    "tls": Bench.tls,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round of everything (under a minute)")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    parser.add_argument(
        "--log-level", default="info", help="the services' SHOP_LOG_LEVEL (default info, as `make up` runs them)"
    )
    parser.add_argument(
        "--envoy-concurrency", type=int, default=None, help="experiment: Envoy's worker threads (shopstack runs 2)"
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="SERVICE:NAME=VALUE",
        help="experiment: an extra environment variable for one service's processes (repeatable)",
    )
    parser.add_argument("--label", default="", help="a note for the report's title (e.g. the experiment)")
    parser.add_argument(
        "--telemetry",
        choices=["compare", "on", "off"],
        default="compare",
        help="on: as `make up` runs (spans to Zipkin, metrics served); off: none; compare (default): "
        "everything with telemetry on, then the unary and e2e scenarios again with it off, side by side",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**plan.__dict__, "rounds": args.rounds})
    scenarios = args.only or list(SCENARIOS)
    service_env: dict[str, dict[str, str]] = {}
    for item in args.service_env:
        service, _, assignment = item.partition(":")
        name, eq, value = assignment.partition("=")
        if not service or not name or not eq:
            parser.error(f"--service-env {item!r}: expected SERVICE:NAME=VALUE")
        service_env.setdefault(service, {})[name] = value
    knobs = Knobs(args.log_level, args.envoy_concurrency, service_env, telemetry=args.telemetry != "off")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    started = time.monotonic()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / stamp
    failure = ""
    try:
        ghz = Ghz(GHZ, DESCRIPTOR_SET)
        facts = machine.describe(ROOT, VENV_BIN, ghz.version())
        skus = [p["id"] for p in json.loads((ROOT / "data" / "products.json").read_text())["products"]]
        print(f"bench: {plan.name} mode, {plan.rounds} round(s); starting a private stack in {RUN_DIR}")
        stack, skipped = start_stack(knobs)
        print(f"bench: stack healthy after {time.monotonic() - started:.1f}s")
        try:
            payment_id = seed(stack, skus[0])
            langs = sorted(stack.routing["inventory"], key=INVENTORY_LANGS.index)
            floors = Floors(stack)
            if {"unary", "hop"} & set(scenarios):
                floors.start()
                print(f"bench: floors up: {', '.join(f'{p} {a}' for p, a in floors.addresses().items())}")
            bench = Bench(plan, stack, ghz, payment_id, langs, skus, floors=floors)
            bench.measure_idle(plan.idle_seconds)
            round_no = 0
            try:
                for round_no in range(plan.rounds):
                    print(f"bench: round {round_no + 1} of {plan.rounds}")
                    for name in scenarios:
                        phase = time.monotonic()
                        SCENARIOS[name](bench, round_no)
                        print(f"bench: {name} took {time.monotonic() - phase:.1f}s")
            except (BenchError, grpc.RpcError) as err:
                # What the rounds before measured is still worth a report, marked incomplete.
                if round_no == 0:
                    raise
                failure = (
                    f"round {round_no + 1} of {plan.rounds} failed, so the figures are from the rounds before it: {err}"
                )
                print(f"bench: FAILED in {failure}", file=sys.stderr)
            finally:
                bench.twins.stop()
                floors.stop()
            rows = list(bench.rows.values())
        finally:
            stack.down()
        if args.telemetry == "compare" and not failure:
            rows += measure_without_telemetry(plan, knobs, ghz, skus, [s for s in scenarios if s in ("unary", "e2e")])
    except (BenchError, grpc.RpcError) as err:
        print(f"bench: FAILED: {err}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "mode": plan.name,
        "label": args.label,
        "knobs": {
            "log_level": knobs.log_level,
            "envoy_concurrency": knobs.envoy_concurrency or "2 (shopstack's default)",
            "service_env": knobs.service_env,
            "telemetry": args.telemetry,
        },
        "started": stamp,
        "duration_seconds": round(elapsed, 1),
        "plan": plan.__dict__,
        "machine": facts,
        "skipped": skipped,
        "scenarios": scenarios,
        "sampling_ratio": topo_mod.load().telemetry.sampling_ratio,
        "incomplete": failure,
    }
    (out_dir / "report.json").write_text(
        json.dumps(
            {
                **meta,
                "ratios": report.ratios(rows),
                "orders": [cost.to_json(report.cpus_of(facts)) for cost in report.order_costs(rows)],
                "rows": [r.to_json() for r in rows],
            },
            indent=2,
            default=list,
        )
        + "\n"
    )
    (out_dir / "report.md").write_text(report.markdown(meta, rows))
    (out_dir / "latency.svg").write_text(report.svg(rows))
    (out_dir / "curves.svg").write_text(report.curves_svg(rows))
    print(f"bench: done in {elapsed:.0f}s; report in {out_dir.relative_to(ROOT)}/report.md")
    return 1 if failure else 0
