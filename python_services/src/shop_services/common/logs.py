"""JSON-lines logging with the keys every service in the shop uses.

Each record is one JSON object on one line of stdout, written whole by one
write to the process's stdout as soon as it is logged (no buffering in
memory: a line is in the log file when the call that logged it returns, so
it is there before an orderly shutdown completes and `grep <x-request-id>`
sees it at once). The line is encoded by orjson: the standard library's
encoder took 12 of the ~30 µs of Python a per-call line cost
(docs/performance.md, P7); orjson writes the same object, compact (no
blanks after `:` and `,`), as Go's slog and pino do.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

import orjson

from shop_services.common.telemetry import current_ids

# A LogRecord's own attributes: every other attribute is an extra of the call.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
# What orjson would write differently from str() (dataclasses, datetimes)
# goes through str() as before, as do dict keys that are not strings.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
# For the rare value orjson refuses (an integer past 64 bits): the standard encoder.
_FALLBACK = json.JSONEncoder(default=str, separators=(",", ":")).encode
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
        return self.encode(record).decode()

    def encode(self, record: logging.LogRecord) -> bytes:
        """The record as one JSON object, UTF-8, without the newline."""
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
        try:
            return orjson.dumps(line, default=str, option=_ORJSON_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            return _FALLBACK(line).encode()


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record's JSON line to a binary stream (stdout's) as it
    is logged: one write of the encoded bytes and a flush, so the line
    goes out in one system call, as a text stream's write did, without
    its encoding step."""

    def __init__(self, stream: IO[bytes], formatter: JsonFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self._json = formatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self._json.encode(record) + b"\n"
            stream = self.stream
            stream.write(data)
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


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
    formatter = JsonFormatter(service, impl)
    binary = getattr(sys.stdout, "buffer", None)
    handler: logging.Handler
    if binary is None:  # stdout replaced by a text-only stream
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(formatter)
    else:
        # Anything already written to stdout's text layer goes first.
        sys.stdout.flush()
        handler = JsonLinesHandler(binary, formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if level.lower() != "warn" else "WARNING")
    return logging.getLogger(f"shop.{service}")
