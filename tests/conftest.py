"""Session fixtures for the cross-language suites.

The stack (every service and Envoy, under supervisord, exactly as `make up`
runs it) starts once per session on free ports in a temporary run directory,
so it never collides with a running `make up`. When a test fails, the last
lines of every service's log are attached to its report.

`--target HOST:PORT` runs a contract suite against one address instead of
starting anything (see the README). `--edge FILE` runs the contract and e2e
suites through a shop that runs elsewhere (in containers: `make
test-containers`), known by its Envoy (shopstack.edge.Edge); tests that need
the local stack's processes skip. `--hosts FILE` (given by `make test-hosts`,
which runs pytest on a host of its own) starts every stack of make_stack with
each program on its own host, a network namespace, at the addresses of
deploy/hosts.toml (shopstack.netns); tests/hosts runs only then.

The restart and abuse scenarios (tests/faults/test_restarts.py, tests/abuse/)
share one more stack, `reliability_stack`: private (they kill processes and
flood the public listener), with every inventory implementation taking a share
of the traffic and the public listener's limits shrunk so that a flood is
cheap to produce. `--running-stack DIR` points them at a stack that is already
up instead (`make chaos` passes the one `make up` runs). Their outcomes are
printed as one table at the end of the session.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import reliability
from shopstack import envoy, netns, topology
from shopstack.edge import Edge
from shopstack.stack import Stack, free_port

# Short enough that TTL expiry is observable in a test, long enough that a
# saga under load never loses its reservation.
RESERVATION_TTL_SECONDS = "20"


def session_routing() -> dict[str, dict[str, int]]:
    """The session stack's routing: the default implementations take the
    traffic, and every other inventory implementation runs beside them with
    weight 0, on the same database, reachable directly and through Envoy with
    `x-shop-impl`. The inventory contract suite runs against each of them."""
    routing = envoy.default_routing(topology.load())
    inventory = topology.load().services["inventory"]
    routing["inventory"] = {lang: (100 if lang == inventory.impl else 0) for lang in inventory.implementations}
    return routing


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        default=None,
        help="run the contract suites against this address only (HOST:PORT) instead of a started stack",
    )
    parser.addoption(
        "--running-stack",
        default=None,
        help="run the restart and abuse scenarios against the stack already running in this run directory",
    )
    parser.addoption(
        "--certs",
        default=None,
        help="with --target: call it with mutual TLS, the operator's certificate from this directory "
        "(make certs writes .run/certs)",
    )
    parser.addoption(
        "--edge",
        default=None,
        help="run the contract and e2e suites through the Envoy this JSON file describes (shopstack.edge.Edge)",
    )
    parser.addoption(
        "--hosts",
        default=None,
        help="run every stack with its programs on the hosts (network namespaces) this JSON file describes "
        "(shopstack.netns; make test-hosts)",
    )
    parser.addoption(
        "--kube-apiserver",
        default=None,
        help="the kube-apiserver binary for tests/k8s_server (make k8s-check builds it)",
    )


# Suites that need more than this machine's processes, and the option that enables each:
# a shop in containers (`make test-containers`), a real kube-apiserver (`make k8s-check`).
_NEEDS = {"containers": "--edge", "k8s_server": "--kube-apiserver", "hosts": "--hosts"}

# The hosts every stack runs on, with --hosts (None: loopback).
_NETWORK: list[netns.Network] = []


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--hosts")
    if path:
        _NETWORK.append(netns.Network.load(Path(path)))


def network() -> netns.Network | None:
    """The hosts of this run (--hosts), or None when everything runs on loopback."""
    return _NETWORK[0] if _NETWORK else None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave those suites out of `make test` unless their option is given."""
    option = _NEEDS.get(collection_path.name)
    if option and collection_path.parent == Path(__file__).parent and not config.getoption(option):
        return True
    return None


def running_edge(config: pytest.Config) -> Edge | None:
    """The shop given with --edge, or None."""
    path = config.getoption("--edge")
    return Edge.load(Path(path)) if path else None


# The reliability stack's public limits: small, so a test floods them with a
# few dozen streams (stack.toml's own values are checked in tests/stack/).
RELIABILITY_PUBLIC_LIMITS = {"max_requests_per_cluster": 48, "requests_per_second": 150, "burst": 150}


def make_stack(
    run_dir: Path,
    routing: dict[str, dict[str, int]] | None = None,
    public_limits: dict[str, int] | None = None,
    grace_seconds: str | None = None,
    *,
    telemetry: bool = False,
) -> Stack:
    """A stack on free ports in run_dir (not started), optionally with other public listener limits
    and another SHOP_SHUTDOWN_GRACE_SECONDS for every service. With telemetry, Zipkin
    and Prometheus run too (Prometheus scraping every second, every trace sampled)."""
    topo = topology.load()
    if public_limits:
        topo = replace(topo, limits=replace(topo.limits, public=replace(topo.limits.public, **public_limits)))
    ports = {}
    for service in topo.services.values():
        for impl in service.implementations.values():
            ports[impl.cluster] = free_port()
            ports[impl.metrics_key] = free_port()
    topo = topo.with_ports(free_port(), free_port(), free_port(), ports, telemetry=(free_port(), free_port()))
    # Every trace recorded: the telemetry suite looks up the trace of calls
    # it makes without a traceparent (stack.toml's default samples 1 in 10).
    topo = replace(topo, telemetry=replace(topo.telemetry, scrape_interval_seconds=1, sampling_ratio=1.0))
    hosts = network()
    if hosts is not None:
        # Every program on its own host (deploy/hosts.toml); Zipkin and
        # Prometheus stay on loopback, so a stack across hosts runs without them.
        topo = topo.with_hosts(topology.load_hosts(topo).addresses)
        telemetry = False
    env: dict[str, dict[str, str]] = {name: {} for name in topo.services}
    env["inventory"]["SHOP_RESERVATION_TTL_SECONDS"] = RESERVATION_TTL_SECONDS
    if grace_seconds is not None:
        for values in env.values():
            values["SHOP_SHUTDOWN_GRACE_SECONDS"] = grace_seconds
    return Stack(
        run_dir=run_dir,
        topology=topo,
        env=env,
        routing=routing or {},
        telemetry=telemetry,
        netns=hosts.namespaces if hosts is not None else {},
    )


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole shop, started once for the session, with Zipkin and
    Prometheus (which the suites that need them wait for: tests/telemetry/)."""
    if request.config.getoption("--target"):
        pytest.skip("--target given: this test needs the whole stack")
    if request.config.getoption("--edge"):
        pytest.skip("--edge given: this test needs the local stack's processes")
    shop = make_stack(tmp_path_factory.mktemp("stack"), session_routing(), telemetry=True)
    try:
        shop.up(timeout=120, wait_telemetry=False)
    except Exception:
        shop.down()
        raise
    request.config.stash[_STACK_KEY] = shop
    yield shop
    shop.down()


def running_stack(run_dir: Path) -> Stack:
    """The stack already running in run_dir (`make up`'s .run, or any other), with the ports it uses."""
    state_file = run_dir / "state.json"
    if not state_file.exists():
        raise pytest.UsageError(f"{run_dir} has no running stack (no state.json); start one with `make up`")
    state = json.loads(state_file.read_text())
    ports = dict(state["ports"])
    edge = [ports.pop(name) for name in ("public", "internal", "admin")]
    topo = topology.load().with_ports(*edge, ports)
    return Stack(
        run_dir=run_dir,
        topology=topo,
        env=state.get("env", {}),
        routing=state["routing"],
        telemetry=bool(state.get("telemetry", False)),
    )


_STACK_KEY = pytest.StashKey[Stack]()
_RELIABILITY_KEY = pytest.StashKey[Stack]()


@pytest.fixture(scope="session")
def reliability_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The restart and abuse scenarios' stack: private, or the running one with --running-stack."""
    running = request.config.getoption("--running-stack")
    if running:
        shop = running_stack(Path(running))
        shop.wait_healthy(30)
        request.config.stash[_RELIABILITY_KEY] = shop
        yield shop
        return
    if request.config.getoption("--target"):
        pytest.skip("--target given: the reliability scenarios need a whole stack")
    if request.config.getoption("--edge"):
        pytest.skip("--edge given: the reliability scenarios kill and restart the local stack's processes")
    inventory = topology.load().services["inventory"]
    routing = envoy.default_routing(topology.load())
    # Every inventory implementation serves a share, so restarting each one is tested under load.
    share = 100 // len(inventory.implementations)
    routing["inventory"] = {lang: share for lang in inventory.implementations}
    # Nothing here tests draining: a short grace keeps the teardown quick.
    shop = make_stack(tmp_path_factory.mktemp("reliability"), routing, RELIABILITY_PUBLIC_LIMITS, grace_seconds="1")
    try:
        shop.up(timeout=120)
    except Exception:
        shop.down()
        raise
    request.config.stash[_RELIABILITY_KEY] = shop
    yield shop
    shop.down()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not reliability.RESULTS:
        return
    text = reliability.table(reliability.RESULTS)
    terminalreporter.write_sep("=", "reliability: faults and abuse tried, and what was measured")
    terminalreporter.write_line(text)
    out = os.environ.get("SHOP_RELIABILITY_TABLE")
    if out:
        Path(out).write_text(text + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for key, title in ((_STACK_KEY, "stack logs"), (_RELIABILITY_KEY, "reliability stack logs")):
        shop = item.config.stash.get(key, None)
        if shop is not None and key in _used_by(item):
            programs = sorted(p.stem for p in shop.logs_dir.glob("*.log") if p.stem != "supervisord")
            report.sections.append((title, "\n".join(shop.tail(p, 25) for p in programs)))


def _used_by(item: pytest.Item) -> set[pytest.StashKey[Stack]]:
    """The reliability scenarios' stack if the test uses it, otherwise the session's."""
    if "reliability_stack" in getattr(item, "fixturenames", ()):
        return {_RELIABILITY_KEY}
    return {_STACK_KEY}
