"""`make demo`: a scripted tour of a running stack, printing each command and its result.

Every step is a command a reader can copy (grpcurl, curl, grep, make) and an
answer it must contain; a step whose answer does not contain it stops the
tour with an error. tests/e2e/test_demo.py runs the whole tour against the
test session's stack, so the examples here and in the README cannot rot.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shopstack import swap
from shopstack.stack import Stack, StackError
from shopstack.topology import LOOPBACK, ROOT

GRPCURL = ".tmp/bin/grpcurl"
SKU = "sku-espresso-beans-1kg"
# The programs a PlaceOrder passes through, each of which logs its request id.
TRACED = ("envoy", "orders", "catalog", "inventory", "payments")


class DemoError(StackError):
    """A step's answer was not what the tour promises."""


@dataclass
class Tour:
    stack: Stack
    out_lines: int = 20
    # Values shown by name in the printed commands: {value: "$NAME"}.
    names: dict[str, str] = field(default_factory=dict)

    def shown(self, command: str) -> str:
        for value, name in self.names.items():
            command = command.replace(value, name)
        return command

    @property
    def public(self) -> str:
        """The public listener as a reader types it: localhost, or Envoy's host in a hosts variant."""
        host = self.stack.edge_host
        return f"{'localhost' if host == LOOPBACK else host}:{self.stack.topology.public_port}"

    def say(self, text: str) -> None:
        print(f"\n## {text}", flush=True)

    def run(self, argv: Sequence[str], expect: Sequence[str] = (), shell: bool = False) -> str:
        """Print the command, run it from the repository, print its output, check it."""
        command = argv[0] if shell else shlex.join(argv)
        print(f"$ {self.shown(command)}", flush=True)
        result = subprocess.run(
            command if shell else list(argv),
            shell=shell,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = (result.stdout + result.stderr).rstrip()
        lines = output.splitlines()
        shown = lines[: self.out_lines] + (
            [f"... ({len(lines) - self.out_lines} more lines)"] if len(lines) > self.out_lines else []
        )
        print("\n".join(f"  {line}" for line in shown), flush=True)
        missing = [text for text in expect if text not in output]
        if missing:
            raise DemoError(f"`{self.shown(command)}` did not answer with {missing}:\n{output}")
        return output

    def grpcurl(
        self, method: str, body: dict | None = None, headers: Sequence[str] = (), expect: Sequence[str] = ()
    ) -> str:
        argv = [GRPCURL, "-cacert", self.ca]
        for header in headers:
            argv += ["-H", header]
        if body is not None:
            argv += ["-d", json.dumps(body)]
        return self.run([*argv, self.public, method], expect)

    @property
    def ca(self) -> str:
        return self.relative(self.stack.certs.ca)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    def logs_path(self) -> str:
        logs = self.stack.logs_dir
        return str(logs.relative_to(ROOT)) if logs.is_relative_to(ROOT) else str(logs)


def _order(request_id: str, token: str) -> dict:
    return {
        "request_id": request_id,
        "payment_token": token,
        "lines": [{"product_id": SKU, "quantity": 1}],
    }


def tour(stack: Stack) -> None:
    """The whole tour; raises DemoError at the first step that does not answer as promised."""
    t = Tour(stack)
    tag = uuid.uuid4().hex[:8]
    trace = f"demo-trace-{tag}"
    # The edge is TLS (trust the stack's CA); orders belong to the customer
    # whose token signs the call; x-shop-impl needs an operator's token.
    token, operator = stack.token("ada"), stack.operator_token()
    t.names = {token: "$TOKEN", operator: "$OPERATOR_TOKEN", t.ca: "$CA"}
    print(f"CA={t.ca}", flush=True)
    print("TOKEN=$(make -s token CUSTOMER=ada)", flush=True)
    print("OPERATOR_TOKEN=$(make -s token CUSTOMER=operator SCOPE=shop.operator)", flush=True)
    signed_in = f"authorization: Bearer {token}"

    t.say("1. The whole API through the edge, with no proto files: reflection lists and describes it")
    t.run(
        [GRPCURL, "-cacert", t.ca, t.public, "list"], ["shop.catalog.v1.CatalogService", "shop.orders.v1.OrderService"]
    )
    t.run(
        [GRPCURL, "-cacert", t.ca, t.public, "describe", "shop.orders.v1.PlaceOrderRequest"],
        ["request_id", "payment_token"],
    )

    t.say("2. A unary call: the catalog (Go) lists coffee")
    t.grpcurl("shop.catalog.v1.CatalogService/ListProducts", {"page_size": 3, "tag": "coffee"}, expect=['"products"'])

    t.say("3. An order that confirms: the saga prices, reserves, charges and commits")
    placed = t.grpcurl(
        "shop.orders.v1.OrderService/PlaceOrder",
        _order(f"demo-{tag}-1", "tok_success"),
        headers=[signed_in, f"x-request-id: {trace}"],
        expect=["ORDER_STATE_CONFIRMED"],
    )
    order_id = json.loads(placed)["order"]["orderId"]

    t.say("4. A server stream: WatchOrder sends the order's state, and ends once it is final")
    t.grpcurl(
        "shop.orders.v1.OrderService/WatchOrder",
        {"order_id": order_id},
        headers=[signed_in],
        expect=["ORDER_STATE_CONFIRMED"],
    )

    t.say("5. An order that is declined: the card fails, the reservation is released, the order FAILED")
    t.grpcurl(
        "shop.orders.v1.OrderService/PlaceOrder",
        _order(f"demo-{tag}-2", "tok_declined"),
        headers=[signed_in],
        expect=["ORDER_STATE_FAILED", "ORDER_FAILURE_REASON_CARD_DECLINED"],
    )

    t.say("6. JSON over HTTP: the same API through Envoy's transcoder; errors are google.rpc.Status")
    https = f"https://{t.public}"
    t.run(["curl", "-s", "--cacert", t.ca, f"{https}/v1/products?page_size=2"], ['"products"', '"nextPageToken"'])
    t.run(["curl", "-s", "--cacert", t.ca, f"{https}/v1/products/nope"], ['"code": 5', "PRODUCT_NOT_FOUND"])
    t.run(
        [
            "curl",
            "-s",
            "--cacert",
            t.ca,
            "-X",
            "POST",
            f"{https}/v1/orders",
            "-H",
            signed_in,
            "-H",
            "content-type: application/json",
            "-d",
            "{not json",
        ],
        ['"code":3'],
    )
    t.run(
        [
            "curl",
            "-s",
            "--cacert",
            t.ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{content_type}\\n",
            f"{https}/openapi.json",
        ],
        ["200 application/json"],
    )

    before = {name: dict(weights) for name, weights in stack.routing.items()}
    idle = [lang for lang in stack.topology.services["inventory"].implementations if not before["inventory"].get(lang)]
    canary_impl = "python" if "python" in idle else idle[0]
    t.say(f"7. A canary: 10% of inventory's calls to its {canary_impl} implementation; x-shop-impl pins one call")
    print(f"$ make canary SERVICE=inventory IMPL={canary_impl} WEIGHT=10", flush=True)
    swap.canary(stack, "inventory", canary_impl, 10)
    split = ", ".join(f"{lang} {w}%" for lang, w in sorted(stack.routing["inventory"].items()))
    print(f"  inventory traffic: {split}", flush=True)
    try:
        t.grpcurl(
            "shop.inventory.v1.InventoryService/GetStock",
            {"skus": [SKU]},
            headers=[f"authorization: Bearer {operator}", f"x-shop-impl: {canary_impl}"],
            expect=['"levels"'],
        )
        t.run(
            [f"curl -s {stack.admin_url}/stats | grep -E 'cluster.inventory-.*upstream_rq_total'"],
            [f"cluster.inventory-{canary_impl}.upstream_rq_total"],
            shell=True,
        )
    finally:
        _restore(stack, "inventory", before["inventory"])

    t.say("8. One request id in every log: Envoy, orders, catalog, inventory and payments")
    command = f"grep -h {trace} {t.logs_path()}/*.log"
    # Envoy flushes its access log every half second: wait until each program has written.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _traced_everywhere(stack, trace):
        time.sleep(0.2)
    output = t.run([command], [trace], shell=True)
    programs = sorted({json.loads(line).get("service", "?") for line in output.splitlines() if line.startswith("{")})
    print(f"  ({len(output.splitlines())} lines from: {', '.join(programs)})", flush=True)
    missing = [name for name in TRACED if not any(p.startswith(name) for p in programs)]
    if missing:
        raise DemoError(f"request id {trace} is missing from the logs of {missing}")
    print("\nThe tour is over: every step answered as the README says.", flush=True)


def _traced_everywhere(stack: Stack, trace: str) -> bool:
    logs = [p for p in stack.logs_dir.glob("*.log") if trace in p.read_text(errors="replace")]
    return all(any(p.stem.startswith(name) for p in logs) for name in TRACED)


def _restore(stack: Stack, service: str, weights: dict[str, int]) -> None:
    """Put a service's traffic back as the tour found it."""
    if len(weights) == 1:
        (lang,) = weights
        print(f"$ make swap SERVICE={service} IMPL={lang}    # back as it was", flush=True)
        swap.swap(stack, service, lang)
    else:
        print(f"  (putting {service}'s weights back as they were: {weights})", flush=True)
        swap.set_weights(stack, service, weights)
