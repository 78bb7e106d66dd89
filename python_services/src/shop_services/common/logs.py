"""JSON-lines logging with the keys every service in the shop uses."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
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

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "service": self._service,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
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
