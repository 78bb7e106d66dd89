"""The server's one interceptor: traces, logs and counts every RPC, and turns
failures into statuses.

Per call: a server span (common/telemetry.py; health checks and reflection
make none), one line per finished call with method, code, duration_ms and
the x-request-id the caller sent (docs/conventions.md), written while the
span is current so it carries trace_id and span_id, and the per-RPC
Prometheus series. An RpcError raised by a handler becomes the
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
    """Logs each RPC and maps handler exceptions to gRPC statuses.

    A method's handler is wrapped once, on its first call, and the wrapped
    handler is reused for every later call: what varies per call (the
    x-request-id, the status) is read inside the call, not baked into a new
    handler each time.
    """

    def __init__(
        self,
        logger: logging.Logger,
        inner: Callable[[grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]] | None = None,
    ) -> None:
        self._logger = logger
        # Applied to a method's handler first, once, inside the observation
        # (the stream cap): one interceptor in grpc.aio's chain instead of two.
        self._inner = inner
        # method -> (the handler as registered, its wrapped form)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        inner = handler if self._inner is None else self._inner(handler)
        wrapped = _Method(self._logger, method, inner).handler()
        self._wrapped[method] = (handler, wrapped)
        return wrapped


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


class _Method:
    """One method's observation: wraps its behaviour once; each call logs how it ended."""

    def __init__(self, logger: logging.Logger, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> None:
        self._logger = logger
        self._method = method
        self._inner = handler
        kind = telemetry.rpc_type(
            client_streaming=handler.request_streaming, server_streaming=handler.response_streaming
        )
        service, name = telemetry.split_method(method)
        labels = (kind, service, name)
        # The label children are looked up once per method, not per call.
        self._started = telemetry.RPC_STARTED.labels(*labels)
        self._seconds = telemetry.RPC_SECONDS.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self._labels = labels
        quiet = method.startswith(_QUIET_PREFIXES)
        self._level = logging.DEBUG if quiet else logging.INFO
        self._span_attributes = None if quiet else telemetry.span_attributes(method)

    def handler(self) -> grpc.RpcMethodHandler[Any, Any]:
        handler = self._inner
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary), deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream), deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, streaming_request=True), deserializer, handler.response_serializer
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._wrap(handler.stream_stream, streaming_request=True), deserializer, handler.response_serializer
        )

    def _wrap(self, behavior: Callable[..., Any], *, streaming_request: bool = False) -> Callable[..., Any]:
        def checked(request: Any) -> Any:
            return _checked_stream(request) if streaming_request else _check_decoded(request)

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                metadata = context.invocation_metadata()
                span = self._start(metadata)
                self._started.inc()
                start = time.perf_counter()
                code: grpc.StatusCode | None = None
                error: BaseException | None = None
                try:
                    async for item in behavior(checked(request), context):
                        yield item
                except BaseException as exc:  # noqa: BLE001 - re-raised by _fail
                    code, error = self._code_of(exc, context), exc
                    await self._fail(exc, context)
                finally:
                    self._finish(context, metadata, code, start, span, error)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # Read once: grpc.aio builds a new tuple on every call of it.
            metadata = context.invocation_metadata()
            span = self._start(metadata)
            self._started.inc()
            start = time.perf_counter()
            code: grpc.StatusCode | None = None
            error: BaseException | None = None
            try:
                return await behavior(checked(request), context)
            except BaseException as exc:  # noqa: BLE001 - re-raised by _fail
                code, error = self._code_of(exc, context), exc
                await self._fail(exc, context)
            finally:
                self._finish(context, metadata, code, start, span, error)

        return unary

    @staticmethod
    def _code_of(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
        """The status a handler's exception ends the call with (None: the context says)."""
        if isinstance(exc, RpcError):
            return exc.code
        if isinstance(exc, grpc.aio.AbortError):
            return None
        if isinstance(exc, asyncio.CancelledError):
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                return grpc.StatusCode.DEADLINE_EXCEEDED
            return grpc.StatusCode.CANCELLED
        if isinstance(exc, Exception):
            return grpc.StatusCode.INTERNAL
        return None

    async def _fail(self, exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Re-raise a handler's exception in the form grpc.aio expects."""
        if isinstance(exc, RpcError):
            await context.abort_with_status(exc.to_status())
        if isinstance(exc, (grpc.aio.AbortError, asyncio.CancelledError)) or not isinstance(exc, Exception):
            raise exc
        self._logger.error(
            "unhandled exception in handler",
            exc_info=exc,
            extra={"method": self._method, "request_id": request_id_of(context.invocation_metadata())},
        )
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")
        raise AssertionError("unreachable")  # pragma: no cover - abort always raises

    def _start(self, metadata: Any) -> tuple[Any, object] | None:
        if self._span_attributes is None:
            return None
        return telemetry.start_server_span(self._method, self._span_attributes, metadata)

    def _finish(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        metadata: Any,
        code: grpc.StatusCode | None,
        start: float,
        span: tuple[Any, object] | None,
        error: BaseException | None,
    ) -> None:
        code = code or _context_code(context) or grpc.StatusCode.OK
        try:
            self._log(metadata, code, start)
        finally:
            if span is not None:
                recorded = error if code == grpc.StatusCode.INTERNAL and isinstance(error, Exception) else None
                # The peer goes on a recorded span only (most calls' are not sampled).
                peer = context.peer() if span[0].is_recording() else None
                telemetry.end_server_span(span[0], span[1], code, peer, recorded)

    def _log(self, metadata: Any, code: grpc.StatusCode, start: float) -> None:
        elapsed = time.perf_counter() - start
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = telemetry.RPC_HANDLED.labels(*self._labels, telemetry.code_label(code))
        handled.inc()
        self._seconds.observe(elapsed)
        if not self._logger.isEnabledFor(self._level):
            return
        extra: dict[str, Any] = {"method": self._method, "code": code.name, "duration_ms": round(elapsed * 1000, 3)}
        request_id = request_id_of(metadata)
        if request_id:
            extra["request_id"] = request_id
        self._logger.log(self._level, "rpc", extra=extra)


def _context_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio may report the numeric code
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return None
