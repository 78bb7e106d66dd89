"""The JSON lines every Python service writes (common/logs.py, docs/conventions.md "Logs").

The per-call line keeps the convention's fields, in the order the caller
gives them, as one JSON object on one line, and each line is written to
stdout when it is logged, not held in memory: a process that dies right
after logging has every line in its output.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from shop_services.common.logs import JsonFormatter

SRC = Path(__file__).resolve().parents[1] / "src"


def _logger(out: io.StringIO, impl: str | None = None) -> logging.Logger:
    logger = logging.Logger("shop.test")
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("inventory", impl))
    logger.addHandler(handler)
    return logger


def test_a_call_line_is_one_json_object_with_the_convention_fields() -> None:
    out = io.StringIO()
    logger = _logger(out, impl="python")
    # A span current while the line is logged, as the interceptor's is.
    with TracerProvider().get_tracer("test").start_as_current_span("GetStock") as span:
        extra = {
            "method": "/shop.inventory.v1.InventoryService/GetStock",
            "code": "OK",
            "duration_ms": 0.125,
            "request_id": "req-7",
        }
        logger.info("rpc", extra=extra)
        ids = span.get_span_context()
    trace_id, span_id = f"{ids.trace_id:032x}", f"{ids.span_id:016x}"
    text = out.getvalue()
    expected = (
        r'\{"time": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", "level": "info", "service": "inventory", '
        r'"impl": "python", "msg": "rpc", "method": "/shop\.inventory\.v1\.InventoryService/GetStock", "code": "OK", '
        rf'"duration_ms": 0\.125, "request_id": "req-7", "trace_id": "{trace_id}", "span_id": "{span_id}"\}}\n'
    )
    assert re.fullmatch(expected, text), text


def test_every_line_is_in_stdout_when_logging_returns() -> None:
    # os._exit skips logging.shutdown and every exit handler: only what was
    # written by the time each call returned reaches the file.
    program = (
        "import os, sys\n"
        "from shop_services.common.logs import setup_logging\n"
        "log = setup_logging('payments')\n"
        "for i in range(500):\n"
        "    log.info('rpc', extra={'method': '/m', 'code': 'OK', 'duration_ms': 1.5, 'request_id': f'r-{i}'})\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("PYTHONUNBUFFERED", None)  # the handler must not rely on it
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, timeout=60, check=True)
    lines = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert [line["request_id"] for line in lines] == [f"r-{i}" for i in range(500)]


def test_values_json_cannot_hold_are_written_as_their_text() -> None:
    out = io.StringIO()
    when = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    _logger(out).warning("odd values", extra={"path": Path("/x/y"), "when": when, "huge": 2**70, "keys": {1: "a"}})
    line = json.loads(out.getvalue())
    assert line["path"] == "/x/y"
    assert line["when"] == str(when)
    assert line["huge"] == 2**70
    assert line["keys"] == {"1": "a"}


def test_an_exception_is_logged_with_its_stack() -> None:
    out = io.StringIO()
    try:
        raise ValueError("boom")
    except ValueError:
        _logger(out).exception("failed", extra={"method": "/m"})
    line = json.loads(out.getvalue())
    assert line["level"] == "error" and line["method"] == "/m"
    assert "ValueError: boom" in line["error"]
