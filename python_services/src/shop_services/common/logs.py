"""JSON-lines logging with the keys every service in the shop uses."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from shop_services.common.telemetry import current_ids

# A LogRecord's own attributes: every other attribute is an extra of the call.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
# One encoder for every line (json.dumps with an argument builds one per call).
_ENCODE = json.JSONEncoder(default=str).encode
# The level names every service in the shop writes (Go's slog and pino agree).
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, service, impl (when
    the service names one), msg, extras."""

    def __init__(self, service: str, impl: str | None = None) -> None:
        super().__init__()
        self._service = service
        self._impl = impl
        # The RFC 3339 text of the last whole second formatted: most lines
        # of a busy second reuse it and add only their milliseconds.
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "service": self._service,
        }
        if self._impl is not None:
            line["impl"] = self._impl
        line["msg"] = record.getMessage()
        # The record's extras, in the order the caller gave them.
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key[0] != "_":
                line[key] = value
        # Logged inside a traced call (or a saga step): the ids that find it in Zipkin.
        ids = current_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _ENCODE(line)


def setup_logging(service: str, level: str = "info", *, impl: str | None = None) -> logging.Logger:
    """Send every log record to stdout as JSON lines and return the service's
    logger; with impl, every line says which implementation wrote it."""
    # What a record would otherwise collect on every call and no line shows
    # (the logging HOWTO, "Optimization"): the caller's file, function and
    # line (a walk up the stack), the thread, the process id (a system call)
    # and the process name. Half the cost of the per-call line (docs/performance.md, P6).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service, impl))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if level.lower() != "warn" else "WARNING")
    return logging.getLogger(f"shop.{service}")
