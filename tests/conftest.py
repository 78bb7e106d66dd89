"""Session fixtures for the cross-language suites.

The stack (every service and Envoy, under supervisord, exactly as `make up`
runs it) starts once per session on free ports in a temporary run directory,
so it never collides with a running `make up`. When a test fails, the last
lines of every service's log are attached to its report.

`--target HOST:PORT` runs a contract suite against one address instead of
starting anything (see the README). `--edge FILE` runs the contract and e2e
suites through a shop that runs elsewhere (in containers: `make
test-containers`), known by its Envoy (shopstack.edge.Edge); tests that need
the local stack's processes skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from shopstack import envoy, topology
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
        "--kube-apiserver",
        default=None,
        help="the kube-apiserver binary for tests/k8s_server (make k8s-check builds it)",
    )


# Suites that need more than this machine's processes, and the option that enables each:
# a shop in containers (`make test-containers`), a real kube-apiserver (`make k8s-check`).
_NEEDS = {"containers": "--edge", "k8s_server": "--kube-apiserver"}


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


def make_stack(
    run_dir: Path,
    routing: dict[str, dict[str, int]] | None = None,
    *,
    telemetry: bool = False,
) -> Stack:
    """A stack on free ports in run_dir (not started). With telemetry, Zipkin
    and Prometheus run too (Prometheus scraping every second)."""
    topo = topology.load()
    ports = {}
    for service in topo.services.values():
        for impl in service.implementations.values():
            ports[impl.cluster] = free_port()
            ports[impl.metrics_key] = free_port()
    topo = topo.with_ports(free_port(), free_port(), free_port(), ports, telemetry=(free_port(), free_port()))
    topo = replace(topo, telemetry=replace(topo.telemetry, scrape_interval_seconds=1))
    return Stack(
        run_dir=run_dir,
        topology=topo,
        env={"inventory": {"SHOP_RESERVATION_TTL_SECONDS": RESERVATION_TTL_SECONDS}},
        routing=routing or {},
        telemetry=telemetry,
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


_STACK_KEY = pytest.StashKey[Stack]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    shop = item.config.stash.get(_STACK_KEY, None)
    if report.failed and shop is not None:
        programs = sorted(p.stem for p in shop.logs_dir.glob("*.log") if p.stem != "supervisord")
        report.sections.append(("stack logs", "\n".join(shop.tail(p, 25) for p in programs)))
