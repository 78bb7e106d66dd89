"""The saga's call helper: which failed attempts it tries again."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from shop_services.orders.clients import CallFailedError, call

# What grpc core says when the HTTP/2 stream is reset under a call (a
# dependency killed after its reply started, as Envoy then resets the stream).
RESET = "Stream removed (RST_STREAM (Received RST_STREAM with error code 2))"


def failing(*codes: tuple[grpc.StatusCode, str]) -> tuple[Any, list[str]]:
    """A method that fails with each (code, message) in turn, then answers "ok"."""
    attempts: list[str] = []

    async def method(request: str, *, timeout: float, metadata: Any) -> str:  # noqa: ASYNC109 - the stub signature call() uses
        attempts.append(request)
        if len(attempts) <= len(codes):
            code, message = codes[len(attempts) - 1]
            raise AioRpcError(code, Metadata(), Metadata(), details=message)
        return "ok"

    return method, attempts


async def test_a_stream_reset_under_the_call_is_tried_again() -> None:
    method, attempts = failing((grpc.StatusCode.INTERNAL, RESET))
    assert await call(method, "reserve", budget=2, trace_id="req-1", backoff=0.01) == "ok"
    assert len(attempts) == 2


async def test_an_internal_error_the_service_answered_is_not_tried_again() -> None:
    method, attempts = failing((grpc.StatusCode.INTERNAL, "internal error; see the service log"))
    with pytest.raises(CallFailedError) as failed:
        await call(method, "reserve", budget=2, trace_id="req-1", backoff=0.01)
    assert failed.value.code == grpc.StatusCode.INTERNAL and failed.value.in_doubt
    assert len(attempts) == 1


async def test_stream_resets_count_against_the_attempts_like_unavailable() -> None:
    method, attempts = failing((grpc.StatusCode.INTERNAL, RESET), (grpc.StatusCode.INTERNAL, RESET))
    with pytest.raises(CallFailedError) as failed:
        await call(method, "reserve", budget=2, trace_id="req-1", backoff=0.01, attempts=2)
    assert failed.value.in_doubt and failed.value.retryable
    assert len(attempts) == 2
