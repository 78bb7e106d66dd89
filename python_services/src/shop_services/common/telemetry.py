"""Traces and metrics for every Python service, set up once per process.

Traces: OpenTelemetry's SDK with a parent-based ratio sampler (a call that
arrives with a W3C traceparent follows the caller's decision; a trace that
starts here is kept with probability SHOP_TRACE_SAMPLE_RATIO). The server's
one interceptor (common/interceptors.py) makes a span per RPC with
start_server_span and end_server_span below, continuing the caller's
traceparent, with the attributes of OpenTelemetry's RPC conventions; the
client interceptors of opentelemetry-instrumentation-grpc make the client
spans and send traceparent on. (That package's grpc.aio server interceptor
did the server side until it was measured: it re-wrapped every handler and
proxied every call's context, and cost more CPU per call than the rest of
the service's observability together; docs/performance.md.) With SHOP_ZIPKIN_URL set,
spans go to Zipkin in batches from a bounded queue on a background thread:
when Zipkin is down the export fails after its timeout, the batch is dropped
and no RPC waits for it. Without it, spans are still made (their ids are in
the logs and propagate) and dropped.

Metrics: prometheus_client's registry, served on SHOP_METRICS_ADDR
(host:port, /metrics) when set. The per-RPC series use the names of
go-grpc-middleware's Prometheus provider, so one query covers every language:
grpc_server_started_total, grpc_server_handled_total and
grpc_server_handling_seconds, by grpc_type, grpc_service, grpc_method and
grpc_code (the code's Go name, e.g. NotFound).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
import prometheus_client
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from shop_services.common.config import ConfigError, env_float, env_str

_log = logging.getLogger("shop.telemetry")

# Seconds an export to Zipkin may take before the batch is dropped.
EXPORT_TIMEOUT_SECONDS = 2
# Spans waiting for export; past it new spans are dropped, never waited for.
MAX_QUEUE_SIZE = 4096
# How often a batch is sent; short so a trace is searchable within a second.
SCHEDULE_DELAY_MS = 500

# Health checks (Envoy's, every second) and reflection make no spans.
_UNTRACED = filters.negate(filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection.")))

# Go's names for the codes (codes.Code.String()), as go-grpc-middleware labels them.
_GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
RPC_STARTED = prometheus_client.Counter("grpc_server_started", "RPCs started on the server.", _LABELS)
RPC_HANDLED = prometheus_client.Counter(
    "grpc_server_handled", "RPCs completed on the server, whatever their status.", (*_LABELS, "grpc_code")
)
RPC_SECONDS = prometheus_client.Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, in seconds.",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(frozen=True)
class TelemetryConfig:
    """SHOP_ZIPKIN_URL, SHOP_TRACE_SAMPLE_RATIO and SHOP_METRICS_ADDR."""

    zipkin_url: str | None
    sample_ratio: float
    metrics_addr: str | None

    @classmethod
    def from_env(cls) -> TelemetryConfig:
        ratio = env_float("SHOP_TRACE_SAMPLE_RATIO", 1.0)
        if ratio > 1:
            raise ConfigError(f"environment variable SHOP_TRACE_SAMPLE_RATIO must be between 0 and 1, got {ratio:g}")
        zipkin = env_str("SHOP_ZIPKIN_URL", "") or None
        if zipkin is not None and not zipkin.startswith(("http://", "https://")):
            raise ConfigError(f"environment variable SHOP_ZIPKIN_URL must be an http(s) URL, got {zipkin!r}")
        metrics = env_str("SHOP_METRICS_ADDR", "") or None
        if metrics is not None and not metrics.rpartition(":")[2].isdigit():
            raise ConfigError(f"environment variable SHOP_METRICS_ADDR must be host:port, got {metrics!r}")
        return cls(zipkin_url=zipkin, sample_ratio=ratio, metrics_addr=metrics)


class _WarningExporter(SpanExporter):
    """Zipkin's exporter, with a failed export (Zipkin down or slow) logged as
    one warning in the service's own format instead of the SDK's error with a
    stack trace; the batch is dropped either way."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self._inner.export(spans)
        except OSError as exc:  # requests' errors are OSErrors
            _log.warning("telemetry export failed", extra={"error": str(exc), "spans": len(spans)})
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Telemetry:
    """The process's tracer provider and metrics server; shutdown() flushes and stops them."""

    def __init__(self, service: str, config: TelemetryConfig, *, impl: str | None = None) -> None:
        attributes: dict[str, str] = {"service.name": service, "service.namespace": "shop"}
        if impl is not None:
            attributes["shop.impl"] = impl
        self.provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        if config.zipkin_url is not None:
            exporter = _WarningExporter(ZipkinExporter(endpoint=config.zipkin_url, timeout=EXPORT_TIMEOUT_SECONDS))
            self.provider.add_span_processor(
                BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE_SIZE, schedule_delay_millis=SCHEDULE_DELAY_MS)
            )
        trace.set_tracer_provider(self.provider)
        self._metrics_server: object | None = None
        if config.metrics_addr is not None:
            host, _, port = config.metrics_addr.rpartition(":")
            try:
                server, _thread = prometheus_client.start_http_server(int(port), addr=host or "127.0.0.1")
            except OSError as exc:
                raise OSError(f"cannot serve metrics on {config.metrics_addr}: {exc}") from exc
            self._metrics_server = server

    def shutdown(self) -> None:
        """Send the spans still queued (bounded by the export timeout) and stop."""
        self.provider.shutdown()
        shutdown = getattr(self._metrics_server, "shutdown", None)
        if shutdown is not None:
            shutdown()


# The codes that mark a server span as failed: the server's faults, as the
# RPC conventions (and opentelemetry-instrumentation-grpc) have them.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# The headers a caller's trace context may come in (W3C trace context and baggage).
_PROPAGATED = frozenset({"traceparent", "tracestate", "baggage"})


def span_attributes(method: str) -> dict[str, str]:
    """The attributes every server span of method starts with."""
    service, name = split_method(method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def start_server_span(method: str, attributes: dict[str, str], metadata: Any) -> tuple[trace.Span, object]:
    """Start the call's server span, a child of the caller's traceparent when
    it sent one, and make it current; end_server_span ends it. A call that
    is not sampled gets a non-recording span, which costs almost nothing
    but still carries the trace id to the logs and to the calls it makes."""
    carrier = {key: value for key, value in metadata or () if key in _PROPAGATED}
    parent = propagate.extract(carrier) if carrier else None
    span = _server_tracer().start_span(method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_server_span(
    span: trace.Span,
    token: object,
    code: grpc.StatusCode,
    peer: str | None,
    error: BaseException | None = None,
) -> None:
    """Record how the call ended on its span, end it, and restore the context."""
    try:
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if peer and not peer.startswith("unix:"):
                address = unquote(peer.split(",")[0].split(":", 1)[-1])
                host, _, port = address.rpartition(":")
                if host:
                    span.set_attribute("net.peer.ip", host.strip("[]"))
                    span.set_attribute("net.peer.port", port)
            if error is not None:
                span.record_exception(error)
            if code in _SERVER_FAULTS:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
        span.end()
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]


_tracer: trace.Tracer | None = None


def _server_tracer() -> trace.Tracer:
    # Looked up on first use, once the process's provider is set (Telemetry).
    global _tracer
    if _tracer is None or isinstance(_tracer, trace.ProxyTracer):
        _tracer = trace.get_tracer("shop_services.grpc")
    return _tracer


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel to another service: a client span per call,
    and the caller's trace context sent on as traceparent."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(filter_=_UNTRACED)  # type: ignore[no-untyped-call]
    return list(interceptors)


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids (hex), or None outside a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def code_label(code: grpc.StatusCode) -> str:
    return _GO_CODE_NAMES.get(code, code.name)


def rpc_type(*, client_streaming: bool, server_streaming: bool) -> str:
    """go-grpc-middleware's grpc_type label."""
    if client_streaming and server_streaming:
        return "bidi_stream"
    if client_streaming:
        return "client_stream"
    if server_streaming:
        return "server_stream"
    return "unary"


def split_method(method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


__all__ = [
    "RPC_HANDLED",
    "RPC_SECONDS",
    "RPC_STARTED",
    "Telemetry",
    "TelemetryConfig",
    "client_interceptors",
    "code_label",
    "current_ids",
    "end_server_span",
    "rpc_type",
    "span_attributes",
    "split_method",
    "start_server_span",
    "tracer",
]
