"""A server interceptor that logs every RPC and turns failures into statuses.

One line per finished call: method, code, duration_ms and the x-request-id the
caller sent (docs/conventions.md), and the per-RPC Prometheus series
(common/telemetry.py). An RpcError raised by a handler becomes the
call's status with its details; any other exception is logged with its stack
and becomes INTERNAL, and the server keeps serving.

A request that cannot be deserialized is INTERNAL too, as grpc-go, grpc-js
and grpcio's synchronous server answer it (grpc.aio alone would say UNKNOWN
"Unexpected DecodeError"), so every implementation refuses it alike.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from shop_services.common import telemetry
from shop_services.common.errors import RpcError

REQUEST_ID_HEADER = "x-request-id"
# Called by Envoy's health checker every second: logged at debug only.
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def request_id_of(metadata: Any) -> str | None:
    """The x-request-id in a call's invocation metadata, or None."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            return str(value)
    return None


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Logs each RPC and maps handler exceptions to gRPC statuses."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        kind = telemetry.rpc_type(
            client_streaming=handler.request_streaming, server_streaming=handler.response_streaming
        )
        call = _Call(self._logger, method, request_id_of(metadata), kind)
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.wrap(handler.unary_unary), deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap(handler.unary_stream), deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                call.wrap(handler.stream_unary, streaming_request=True), deserializer, handler.response_serializer
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            call.wrap(handler.stream_stream, streaming_request=True), deserializer, handler.response_serializer
        )


class _Undecodable:
    """Stands for a request message whose bytes could not be deserialized."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The deserializer, returning _Undecodable instead of raising, so the
    failure reaches _Call, which answers it with INTERNAL."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is answered, not raised
            return _Undecodable(exc)

    return deserialize


def _check_decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise RpcError(grpc.StatusCode.INTERNAL, f"The request could not be deserialized: {request.error}")
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _check_decoded(request)


class _Call:
    """One RPC's observation: wraps its behaviour and logs how it ended."""

    def __init__(self, logger: logging.Logger, method: str, request_id: str | None, kind: str) -> None:
        self._logger = logger
        self._method = method
        self._request_id = request_id
        service, name = telemetry.split_method(method)
        self._labels = (kind, service, name)

    def wrap(self, behavior: Callable[..., Any], *, streaming_request: bool = False) -> Callable[..., Any]:
        def checked(request: Any) -> Any:
            return _checked_stream(request) if streaming_request else _check_decoded(request)

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                telemetry.RPC_STARTED.labels(*self._labels).inc()
                start = time.perf_counter()
                code = grpc.StatusCode.OK
                try:
                    async for item in behavior(checked(request), context):
                        yield item
                except BaseException as exc:  # noqa: BLE001 - re-raised by _fail
                    code = await self._fail(exc, context)
                finally:
                    self._log(context, code, start)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            telemetry.RPC_STARTED.labels(*self._labels).inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await behavior(checked(request), context)
            except BaseException as exc:  # noqa: BLE001 - re-raised by _fail
                code = await self._fail(exc, context)
            finally:
                self._log(context, code, start)

        return unary

    async def _fail(self, exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
        """Record why the call ended and re-raise in the form grpc.aio expects."""
        if isinstance(exc, RpcError):
            self._code = exc.code
            await context.abort_with_status(exc.to_status())
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, asyncio.CancelledError):
            remaining = context.time_remaining()
            self._code = (
                grpc.StatusCode.DEADLINE_EXCEEDED
                if remaining is not None and remaining <= 0
                else grpc.StatusCode.CANCELLED
            )
            raise exc
        if not isinstance(exc, Exception):
            raise exc
        self._logger.error(
            "unhandled exception in handler",
            exc_info=exc,
            extra={"method": self._method, "request_id": self._request_id},
        )
        self._code = grpc.StatusCode.INTERNAL
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")
        raise AssertionError("unreachable")  # pragma: no cover - abort always raises

    _code: grpc.StatusCode | None = None

    def _log(self, context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode, start: float) -> None:
        code = self._code or _context_code(context) or default
        elapsed = time.perf_counter() - start
        telemetry.RPC_HANDLED.labels(*self._labels, telemetry.code_label(code)).inc()
        telemetry.RPC_SECONDS.labels(*self._labels).observe(elapsed)
        level = logging.DEBUG if self._method.startswith(_QUIET_PREFIXES) else logging.INFO
        extra: dict[str, Any] = {
            "method": self._method,
            "code": code.name,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if self._request_id:
            extra["request_id"] = self._request_id
        self._logger.log(level, "rpc", extra=extra)


def _context_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio may report the numeric code
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return None
