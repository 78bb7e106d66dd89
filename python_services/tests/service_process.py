"""A service started as a real process, for the tests that need one (SIGTERM,
exit codes, log lines): its JSON log lines are read as they come."""

from __future__ import annotations

import asyncio
import json
from typing import Any

# Generous: the test machine has two cores and other builds run beside the tests.
READ_TIMEOUT = 30.0


class ServiceProcess:
    """A service process whose JSON log lines the test reads as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def next_line(self, msg: str, **fields: object) -> dict[str, Any]:
        """Read log lines until one has this msg (and these fields); fail with
        every line seen if the process ends first."""
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout=READ_TIMEOUT)
            if not raw:
                raise AssertionError(f"the process ended before logging {msg!r}; it logged {self.lines}")
            line = json.loads(raw)
            self.lines.append(line)
            if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items()):
                return line
