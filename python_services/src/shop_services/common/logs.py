"""JSON-lines logging with the keys every service in the shop uses."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from shop_services.common.telemetry import current_ids

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
# The level names every service in the shop writes (Go's slog and pino agree).
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, service, msg, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
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
            "msg": record.getMessage(),
        }
        # The record's extras, in the order the caller gave them.
        line.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and k[0] != "_"})
        # Logged inside a traced call (or a saga step): the ids that find it in Zipkin.
        ids = current_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str, level: str = "info") -> logging.Logger:
    """Send every log record to stdout as JSON lines and return the service's logger."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if level.lower() != "warn" else "WARNING")
    return logging.getLogger(f"shop.{service}")
