"""Shared support of every Python service's tests: the health wait, a failed
call's decoded google.rpc.Status (through the one decoder,
shop_services.common.errors.decode_error), and a service started as a real
process for the tests that need one (SIGTERM, exit codes, log lines)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop_services.common.errors import ErrorDetails, decode_error

# Generous: the test machine has two cores and other builds run beside the tests.
DEADLINE = 30.0
READ_TIMEOUT = 30.0


async def wait_serving(channel: grpc.aio.Channel, service: str = "") -> None:
    """Wait, through grpc.health.v1, until the server answers SERVING."""
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE, wait_for_ready=True)
    assert response.status == health_pb2.HealthCheckResponse.SERVING, response


async def fails(call: Awaitable[object]) -> ErrorDetails:
    """Await a call that must fail and decode its error."""
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return decode_error(exc)
    raise AssertionError(f"the call succeeded with {result}")


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
