"""One configuration surface: every inventory implementation honours the same
settings with the same meaning (docs/conventions.md).

Each implementation deploy/stack.toml knows is started as a process, from the
repository root as the stack starts it, with one and the same environment.
The test then checks that every setting took effect:

- SHOP_LISTEN_ADDR: it serves on that address;
- SHOP_DB_PATH: its database is that file;
- SHOP_SEED_FILE: the new database is seeded from that file (a SKU only it has);
- SHOP_INVENTORY_SCHEMA: the schema applied is that file (the shared schema
  plus one extra table, which appears in the database);
- SHOP_RESERVATION_TTL_SECONDS=1.5: a reservation expires 1.5 s after it was
  made;
- SHOP_LOG_LEVEL=debug: health checks, logged at debug only, are in the log;
- SHOP_SHUTDOWN_GRACE_SECONDS=1.5: on SIGTERM an ImportStock stream left open
  holds the drain for the grace period, then is cancelled, and the process
  exits 0: not before 1.5 s, and before the default of 10 s;
- SHOP_METRICS_ADDR: /metrics there has the per-RPC and inventory series
  under the names every language shares (docs/observability.md);
- SHOP_ZIPKIN_URL (nobody listening) and SHOP_TRACE_SAMPLE_RATIO=1: calls are
  traced (their rpc log lines carry trace_id and span_id) and a Zipkin that is
  not there changes nothing.

SHOP_MAX_STREAMS_PER_CLIENT takes effect in test_inventory.py (the stack sets
it for every implementation). A bad value stops each implementation at
start-up, naming the variable.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from shopstack import topology
from shopstack.stack import free_port

from .support import unique

ROOT = topology.ROOT
SCHEMA_FILE = ROOT / "data" / "inventory_schema.sql"
IMPLEMENTATIONS = topology.load().services["inventory"].implementations


@pytest.fixture(autouse=True)
def _local_processes_only(request: pytest.FixtureRequest) -> None:
    """It starts this checkout's programs (`make build`), not a shop through an edge."""
    if request.config.getoption("--edge"):
        pytest.skip("--edge given: this test starts the local programs itself")


PROBE_SKU = "sku-settings-probe"
PROBE_STOCK = 7
PROBE_TABLE = "settings_probe"
TTL_SECONDS = 1.5
GRACE_SECONDS = 1.5
DEFAULT_GRACE_SECONDS = 10.0
# Generous: the machine is small and shared; nothing here waits this long
# unless something is broken.
DEADLINE = 60.0


def _command(lang: str, run_dir: Path) -> list[str]:
    impl = IMPLEMENTATIONS[lang]
    return [part.format(root=ROOT, run=run_dir) for part in impl.command]


def _environment(settings: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any SHOP_ variable, plus settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"unparsed": raw})
    return lines


def _millis(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


class Started:
    """One implementation process, its log file and a channel to it."""

    def __init__(self, lang: str, workdir: Path, settings: dict[str, str]) -> None:
        self.log_path = workdir / f"{lang}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            _command(lang, workdir),
            cwd=ROOT,
            env=_environment(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(settings["SHOP_LISTEN_ADDR"])

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)
        self._log.close()


@pytest.fixture
def workdir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.config.getoption("--target"):
        pytest.skip("--target given: this test starts every implementation itself")
    return tmp_path


@pytest.fixture
def settings(workdir: Path) -> dict[str, str]:
    seed = workdir / "seed.json"
    seed.write_text(json.dumps({"products": [{"id": PROBE_SKU, "initial_stock": PROBE_STOCK}]}), encoding="utf-8")
    schema = workdir / "schema.sql"
    schema.write_text(
        SCHEMA_FILE.read_text(encoding="utf-8") + f"\nCREATE TABLE IF NOT EXISTS {PROBE_TABLE} (x INTEGER);\n",
        encoding="utf-8",
    )
    return {
        "SHOP_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "SHOP_DB_PATH": str(workdir / "settings.db"),
        "SHOP_SEED_FILE": str(seed),
        "SHOP_INVENTORY_SCHEMA": str(schema),
        "SHOP_RESERVATION_TTL_SECONDS": str(TTL_SECONDS),
        "SHOP_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "SHOP_LOG_LEVEL": "debug",
        "SHOP_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "SHOP_ZIPKIN_URL": f"http://127.0.0.1:{free_port()}/api/v2/spans",
        "SHOP_TRACE_SAMPLE_RATIO": "1",
    }


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def started(request: pytest.FixtureRequest, workdir: Path, settings: dict[str, str]) -> Iterator[Started]:
    process = Started(request.param, workdir, settings)
    try:
        yield process
    finally:
        process.close()


def test_every_setting_takes_effect_in_every_implementation(started: Started, settings: dict[str, str]) -> None:
    # SHOP_LISTEN_ADDR: health answers SERVING there.
    health = health_pb2_grpc.HealthStub(started.channel)
    try:
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE, wait_for_ready=True)
    except grpc.RpcError as err:
        raise AssertionError(f"no health answer on {settings['SHOP_LISTEN_ADDR']}: {err}\n{started.logs()}") from err
    assert answer.status == health_pb2.HealthCheckResponse.SERVING, started.logs()
    stub = pb_grpc.InventoryServiceStub(started.channel)

    # SHOP_SEED_FILE: the new database holds exactly the seed's one SKU.
    level = stub.GetStock(pb.GetStockRequest(skus=[PROBE_SKU]), timeout=DEADLINE).levels[0]
    assert (level.sku, level.on_hand, level.reserved) == (PROBE_SKU, PROBE_STOCK, 0)

    # SHOP_RESERVATION_TTL_SECONDS: 1.5 s, fractions kept.
    reservation = stub.Reserve(
        pb.ReserveRequest(request_id=unique("settings"), lines=[pb.ReservationLine(sku=PROBE_SKU, quantity=1)]),
        timeout=DEADLINE,
    ).reservation
    ttl_ms = _millis(reservation.expire_time) - _millis(reservation.create_time)
    assert ttl_ms == TTL_SECONDS * 1000, f"the reservation lives {ttl_ms} ms"

    # SHOP_METRICS_ADDR: the shared series, the Reserve just made counted.
    with urllib.request.urlopen(f"http://{settings['SHOP_METRICS_ADDR']}/metrics", timeout=DEADLINE) as resp:
        metrics = resp.read().decode()
    values = _series(metrics)
    expected = {
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Reserve",'
        'grpc_service="shop.inventory.v1.InventoryService",grpc_type="unary"}': 1.0,
        'shop_inventory_reservations_total{outcome="reserved"}': 1.0,
        "shop_inventory_watchers": 0.0,
    }
    for series, value in expected.items():
        assert values.get(series) == value, f"{series} is {values.get(series)}, not {value}, in /metrics:\n{metrics}"
    # SHOP_ZIPKIN_URL, SHOP_TRACE_SAMPLE_RATIO: the Reserve was traced.
    reserves = [line for line in _log_lines(started.log_path) if line.get("method", "").endswith("/Reserve")]
    assert reserves and all(len(line.get("trace_id", "")) == 32 and line.get("span_id") for line in reserves), reserves

    # SHOP_DB_PATH and SHOP_INVENTORY_SCHEMA: that file, with that schema.
    with sqlite3.connect(f"file:{settings['SHOP_DB_PATH']}?mode=ro", uri=True, timeout=DEADLINE) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        stocked = db.execute("SELECT on_hand FROM stock WHERE sku = ?", (PROBE_SKU,)).fetchone()
    assert PROBE_TABLE in tables, f"the schema applied is not SHOP_INVENTORY_SCHEMA's: tables {sorted(tables)}"
    assert stocked == (PROBE_STOCK,)

    # SHOP_SHUTDOWN_GRACE_SECONDS: an ImportStock stream that never half-closes
    # holds the drain until the grace period ends. The unary call after it on
    # the same connection returns only once the server has taken the stream.
    items: queue.Queue[pb.ImportStockRequest | None] = queue.Queue()
    items.put(pb.ImportStockRequest(sku=PROBE_SKU, on_hand=PROBE_STOCK))
    held = stub.ImportStock.future(iter(items.get, None), timeout=DEADLINE)
    try:
        stub.GetStock(pb.GetStockRequest(skus=[PROBE_SKU]), timeout=DEADLINE)
        assert not held.done(), f"the import ended before the shutdown: {held}"
        signalled = time.monotonic()
        started.process.send_signal(signal.SIGTERM)
        code = started.process.wait(timeout=DEADLINE)
        drained_in = time.monotonic() - signalled
    finally:
        items.put(None)
    assert code == 0, f"exit code {code}\n{started.logs()}"
    assert GRACE_SECONDS <= drained_in < DEFAULT_GRACE_SECONDS, (
        f"the drain took {drained_in:.2f} s with SHOP_SHUTDOWN_GRACE_SECONDS={GRACE_SECONDS}\n{started.logs()}"
    )
    with pytest.raises(grpc.RpcError):
        held.result(timeout=DEADLINE)

    # SHOP_LOG_LEVEL: health checks are logged, and only at debug.
    checks = [line for line in _log_lines(started.log_path) if line.get("method") == "/grpc.health.v1.Health/Check"]
    assert checks, f"no health check in the debug log:\n{started.logs()}"
    assert {line.get("level") for line in checks} == {"debug"}, checks


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHOP_SHUTDOWN_GRACE_SECONDS", "soon"),
        ("SHOP_TRACE_SAMPLE_RATIO", "2"),
        ("SHOP_MAX_STREAMS_PER_CLIENT", "many"),
    ],
)
@pytest.mark.parametrize("lang", sorted(IMPLEMENTATIONS))
def test_a_bad_value_stops_every_implementation_naming_the_variable(
    lang: str, workdir: Path, settings: dict[str, str], variable: str, value: str
) -> None:
    result = subprocess.run(
        _command(lang, workdir),
        cwd=ROOT,
        env=_environment({**settings, variable: value}),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{variable}={value!r} was accepted:\n{output}"
    assert variable in output, f"the message does not name {variable}:\n{output}"


def _series(text: str) -> dict[str, float]:
    """Prometheus text as {series: value}, each series' labels in name order
    (every client orders them its own way)."""
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if "{" in series:
            name, _, labels = series.partition("{")
            series = f"{name}{{{','.join(sorted(labels.rstrip('}').split(',')))}}}"
        found[series] = float(value)
    return found
