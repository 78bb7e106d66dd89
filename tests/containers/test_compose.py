"""The compose stack itself, running: images, health checks, and data across a restart.

Runs only under `make test-containers` (shopstack containers test), after
the contract and e2e suites have gone through the same containers' Envoy:
the --edge file names the compose project and the engine.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_grpc
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shop.payments.v1 import payment_service_pb2_grpc as payments_grpc
from shopstack import containers, topology
from shopstack.edge import Edge

TOPOLOGY = topology.load()
SERVICES = [TOPOLOGY.impl_of(name).cluster for name in TOPOLOGY.services]
T = TypeVar("T")
CALL_TIMEOUT = 15
ORDER_TIMEOUT = 30


@pytest.fixture(scope="module")
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(Path(request.config.getoption("--edge")).read_text())
    return raw["compose"]


@pytest.fixture(scope="module")
def engine(compose: dict[str, Any]) -> containers.Engine:
    found = containers.detect()
    assert found.name == compose["engine"]
    return found


@pytest.fixture(scope="module")
def project(compose: dict[str, Any]) -> containers.Project:
    return containers.Project(compose["project"], tuple(Path(f) for f in compose["files"]), compose["env"])


@pytest.fixture(scope="module")
def edge(request: pytest.FixtureRequest) -> Edge:
    return Edge.load(Path(request.config.getoption("--edge")))


def inspect(engine: containers.Engine, ref: str, template: str) -> str:
    return engine.run("inspect", "--format", template, ref).strip()


@pytest.mark.parametrize("service", [*SERVICES, "envoy"])
def test_every_image_was_built_here_and_runs_as_a_non_root_user(
    engine: containers.Engine, project: containers.Project, service: str
) -> None:
    cid = containers.container_ids(engine, project)[service]
    image = inspect(engine, cid, "{{.ImageName}}" if engine.name == "podman" else "{{.Config.Image}}")
    assert image.endswith(f"shop/{service}:dev"), image
    user = inspect(engine, cid, "{{.Config.User}}")
    assert user and user.split(":")[0] not in {"0", "root"}, f"{service} runs as {user!r}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_image_reports_healthy_through_its_grpc_health_check(
    engine: containers.Engine, project: containers.Project, service: str
) -> None:
    """The image's HEALTHCHECK (grpc.health.v1), run now: podman without systemd runs none on a timer."""
    cid = containers.container_ids(engine, project)[service]
    if engine.name == "podman":
        # Exits non-zero, saying "unhealthy", unless the check passes.
        engine.run("healthcheck", "run", cid)
    else:
        assert inspect(engine, cid, "{{.State.Health.Status}}") == "healthy"


def answered(call: Callable[[], T], timeout: float = 60) -> T:
    """The call's reply, retried while it is UNAVAILABLE (nothing else is retried)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
        time.sleep(0.5)


@pytest.fixture(scope="module")
def public(edge: Edge) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edge.public_addr) as channel:
        yield channel


@pytest.fixture(scope="module")
def internal(edge: Edge) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edge.internal_addr) as channel:
        yield channel


def test_data_survives_compose_restart(
    engine: containers.Engine,
    project: containers.Project,
    edge: Edge,
    public: grpc.Channel,
    internal: grpc.Channel,
) -> None:
    """An order, its payment and a stock level written before `compose restart` are read back after it."""
    sku = "sku-tote-bag"
    stock = inventory_grpc.InventoryServiceStub(internal)
    stock.ImportStock(iter([inventory_pb.ImportStockRequest(sku=sku, on_hand=500)]), timeout=CALL_TIMEOUT)
    orders = orders_grpc.OrderServiceStub(public)
    placed = orders.PlaceOrder(
        orders_pb.PlaceOrderRequest(
            request_id=str(uuid.uuid4()),
            customer_id=f"restart-{uuid.uuid4()}",
            payment_token="tok_success",
            lines=[orders_pb.OrderLine(product_id=sku, quantity=3)],
        ),
        timeout=ORDER_TIMEOUT,
    ).order
    assert placed.state == orders_pb.ORDER_STATE_CONFIRMED, placed
    level = stock.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT).levels[0]
    assert level.on_hand == 497

    ids = containers.container_ids(engine, project)
    started = {s: inspect(engine, ids[s], "{{.State.StartedAt}}") for s in SERVICES}
    # One service at a time, dependencies first: podman-compose restarts every
    # container at once, and podman then refuses to restart orders while
    # the Envoy it depends on is down (and still exits 0).
    order = [s for s in SERVICES if s != "orders-python"] + ["envoy", "orders-python"]
    output = ""
    for service in order:
        restart = subprocess.run(
            project.command(engine, "restart", service),
            env=engine.environ(project.env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        output += restart.stdout + restart.stderr[-1000:]
        assert restart.returncode == 0, output
    containers.wait_healthy(edge.admin_addr)
    restarted = {s: inspect(engine, ids[s], "{{.State.StartedAt}}") for s in SERVICES}
    unchanged = {s: started[s] for s in SERVICES if restarted[s] == started[s]}
    assert not unchanged, f"not restarted (started at): {unchanged}\n{output}"

    # A restarted container may come back on a new address: Envoy finds it at
    # its next DNS refresh (STRICT_DNS, every 5 s); until then calls are UNAVAILABLE.
    again = answered(
        lambda: orders.GetOrder(orders_pb.GetOrderRequest(order_id=placed.order_id), timeout=CALL_TIMEOUT)
    ).order
    assert again.state == orders_pb.ORDER_STATE_CONFIRMED
    assert again.order_id == placed.order_id and again.payment_id == placed.payment_id
    payment = answered(
        lambda: payments_grpc.PaymentServiceStub(internal).GetPayment(
            payments_pb.GetPaymentRequest(payment_id=placed.payment_id), timeout=CALL_TIMEOUT
        )
    )
    assert payment.payment.payment_id == placed.payment_id
    after = answered(lambda: stock.GetStock(inventory_pb.GetStockRequest(skus=[sku]), timeout=CALL_TIMEOUT)).levels[0]
    assert after.on_hand == 497
