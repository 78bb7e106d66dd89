"""grpc.health.v1 at the edge tells the truth about each service.

`grpc_health_probe` (pinned in tools/go.mod) through Envoy's listeners: with
no service it says whether the edge is up; with a shop service's name,
whether Envoy has a healthy host in a cluster taking that service's traffic
(the API reflection server answers from Envoy's admin /clusters; envoy/README.md).
The catalog's only implementation is stopped: the edge answers NOT_SERVING for
it, and SERVING again once it is back, while the other services stay SERVING.
An unknown service is NOT_FOUND; so is PaymentService on the public listener,
which serves none of its RPCs, while the internal listener answers for it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from e2e.support import Shop, wait_for
from reliability import Outcome, record
from shopstack.pki import OPERATOR
from shopstack.stack import Stack

HEALTH_PROBE = Path(__file__).resolve().parents[2] / ".tmp" / "bin" / "grpc-health-probe"
CATALOG = "shop.catalog.v1.CatalogService"
INVENTORY = "shop.inventory.v1.InventoryService"
PAYMENTS = "shop.payments.v1.PaymentService"


def probe(stack: Stack, service: str, *, internal: bool = False) -> str:
    """What grpc_health_probe prints (stdout and stderr) for service at a listener."""
    args = [str(HEALTH_PROBE), "-tls", "-tls-ca-cert", str(stack.certs.ca), "-service", service]
    if internal:
        pair = stack.certs.pair(OPERATOR)
        args += ["-addr", stack.internal_addr, "-tls-client-cert", str(pair.cert), "-tls-client-key", str(pair.key)]
    else:
        args += ["-addr", stack.public_addr]
    args += ["-connect-timeout", "5s", "-rpc-timeout", "5s"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return f"exit {result.returncode}: {result.stdout.strip()} {result.stderr.strip()}"


def test_the_edge_says_which_services_have_a_healthy_host(reliability_stack: Stack, shop: Shop) -> None:
    stack = reliability_stack
    assert "status: SERVING" in probe(stack, ""), probe(stack, "")
    for service in (CATALOG, INVENTORY, "shop.orders.v1.OrderService"):
        assert "status: SERVING" in probe(stack, service), (service, probe(stack, service))
    unknown = probe(stack, "shop.nope.v1.NopeService")
    assert "NotFound" in unknown and "exit 0" not in unknown, unknown
    hidden = probe(stack, PAYMENTS)
    assert "NotFound" in hidden, f"the public listener serves no PaymentService RPC: {hidden}"
    assert "status: SERVING" in probe(stack, PAYMENTS, internal=True), probe(stack, PAYMENTS, internal=True)

    stack.stop_program("catalog-go")
    stopped = time.monotonic()
    try:

        def not_serving() -> str | None:
            seen = probe(stack, CATALOG)
            return seen if "NOT_SERVING" in seen else None

        down = wait_for("the edge to say the catalog has no healthy host", not_serving, timeout=30)
        took_down = time.monotonic() - stopped
        assert "exit 0" not in down, down
        # The edge itself, and the services with hosts, are still up.
        assert "status: SERVING" in probe(stack, ""), probe(stack, "")
        assert "status: SERVING" in probe(stack, INVENTORY), probe(stack, INVENTORY)
    finally:
        stack.start_program("catalog-go")
    started = time.monotonic()
    wait_for(
        "the edge to say the catalog is serving again",
        lambda: "status: SERVING" in probe(stack, CATALOG),
        timeout=30,
    )
    took_up = time.monotonic() - started
    stack.wait_healthy(60)
    shop.wait_routable()
    record(
        Outcome(
            "grpc_health_probe -service through the edge while the catalog is stopped",
            "catalog-go (its only implementation) stopped, then started",
            "NOT_SERVING while no host is healthy, SERVING again after; unknown (and, publicly, "
            "internal-only) services NOT_FOUND; the edge itself SERVING throughout",
            f"NOT_SERVING {took_down:.1f} s after the stop, SERVING {took_up:.1f} s after the start",
        )
    )
