"""The load generator (load/, `make load`): a short headless Locust run against the session stack.

The run goes through `python -m load --headless`, exactly as `make load
HEADLESS=1` does, with the rare journeys made frequent and the pauses short so
that a few seconds cover them all. The assertions read Locust's own
statistics (--json-file): every public RPC of the shop was called, the
expected failures (a declined card, too few in stock, an unknown product id, a
client timeout and its retry) were counted apart as successes, and nothing
failed. Two more runs check that a target off this machine is refused, by the
launcher and by the locustfile itself, before any call.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_pbg
from shopstack import topology
from shopstack.stack import VENV_BIN, Stack
from shopstack.topology import ROOT

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'deploy'}:{ROOT}"}
RUN = "6s"
USERS = "8"
# Every journey often, short pauses and short WatchStock holds: a few seconds cover everything.
TRAFFIC = [
    "--mix=browse=3,stock=2,checkout=4,orders=2",
    "--think-seconds=0-0.2",
    "--declined-share=0.25",
    "--out-of-stock-share=0.25",
    "--timeout-retry-share=0.25",
    "--unknown-id-share=0.5",
    "--watch-share=0.5",
    "--watch-seconds=0.5-1",
]
# Outcomes counted apart, as successes, each under "<method> [<outcome>]".
EXPECTED_APART = [
    "CatalogService/GetProduct [NOT_FOUND unknown id]",
    "OrderService/PlaceOrder [FAILED CARD_DECLINED]",
    "OrderService/PlaceOrder [FAILED OUT_OF_STOCK]",
]
TERMINAL = (orders_pb.ORDER_STATE_CONFIRMED, orders_pb.ORDER_STATE_FAILED)


def public_methods() -> list[str]:
    """Every RPC Envoy's public listener serves, named as the load reports it ("CatalogService/GetProduct")."""
    services = {svc.proto: svc for svc in topology.load().services.values()}
    return sorted(
        f"{full.rsplit('.', 1)[-1]}/{method.name}"
        for full, methods in topology.methods().items()
        for method in methods
        if not services[full].is_internal(method.name)
    )


def run_load(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "python"), "-m", "load", *args],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def wait_until_settled(stack: Stack, timeout: float = 30) -> None:
    """Leave the shared stack calm: no order of the load's customers still mid-saga.
    (The internal listener, with the operator's certificate, lists every customer's orders.)"""
    with stack.internal_channel() as channel:
        stub = orders_pbg.OrderServiceStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            busy, token = [], ""
            while True:
                page = stub.ListOrders(orders_pb.ListOrdersRequest(page_size=100, page_token=token), timeout=15)
                busy += [
                    o.order_id for o in page.orders if o.customer_id.startswith("load-") and o.state not in TERMINAL
                ]
                token = page.next_page_token
                if not token:
                    break
            if not busy:
                return
            assert time.monotonic() < deadline, f"orders of the load still mid-saga after {timeout:g}s: {busy}"
            time.sleep(0.2)


@pytest.mark.slow
def test_headless_run_calls_every_public_rpc_and_counts_no_failure(stack: Stack, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"  # Locust adds ".json" to --json-file
    args = ["--headless", "--host", stack.public_addr, "--run-dir", str(stack.run_dir)]
    args += ["--users", USERS, "--spawn-rate", USERS, "--duration", RUN]
    try:
        done = run_load(*args, *TRAFFIC, f"--json-file={stats_file.with_suffix('')}")
    finally:
        wait_until_settled(stack)
    output = tail(done.stdout + done.stderr)
    assert stats_file.exists(), f"Locust wrote no statistics (exit {done.returncode}):\n{output}"
    rows = {row["name"]: row for row in json.loads(stats_file.read_text())}

    failed = {name: row["num_failures"] for name, row in rows.items() if row["num_failures"]}
    assert not failed, f"failures by method: {failed}\n{output}"
    assert done.returncode == 0, f"Locust exited {done.returncode}:\n{output}"
    assert all(row["method"] == "grpc" for row in rows.values()), sorted((r["method"], n) for n, r in rows.items())

    called = {name.split(" [")[0] for name, row in rows.items() if row["num_requests"]}
    missing = [m for m in public_methods() if m not in called]
    assert not missing, f"never called: {missing}; rows: {sorted(rows)}"
    absent = [name for name in EXPECTED_APART if not rows.get(name, {}).get("num_requests")]
    assert not absent, f"no row for {absent}; rows: {sorted(rows)}"
    retries = [name for name in rows if name.startswith("OrderService/PlaceOrder [retry after timeout: ")]
    assert retries, f"no PlaceOrder retried after a client timeout; rows: {sorted(rows)}"


def test_launcher_refuses_a_target_off_this_machine() -> None:
    done = run_load("--headless", "--host", "192.0.2.10:8080", "--duration", "1s", timeout=60)
    assert done.returncode != 0
    assert "not loopback" in done.stderr and "192.0.2.10" in done.stderr, done.stdout + done.stderr


def test_locustfile_refuses_a_target_off_this_machine() -> None:
    """Started without the launcher (plain `locust -f`), the locustfile makes the same check before any user runs."""
    locust = [str(VENV_BIN / "locust"), "-f", str(ROOT / "load" / "locustfile.py")]
    done = subprocess.run(
        [*locust, "--headless", "--host", "192.0.2.10:8080", "--run-time", "1s", "--users", "1"],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "not loopback" in done.stderr, tail(done.stdout + done.stderr)
