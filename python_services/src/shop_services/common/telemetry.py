"""Traces and metrics for every Python service, set up once per process.

Traces: OpenTelemetry's SDK with a parent-based ratio sampler (a call that
arrives with a W3C traceparent follows the caller's decision; a trace that
starts here is kept with probability SHOP_TRACE_SAMPLE_RATIO). The grpc.aio
server and client interceptors of opentelemetry-instrumentation-grpc make a
span per RPC and carry traceparent across calls. With SHOP_ZIPKIN_URL set,
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

import grpc
import prometheus_client
from opentelemetry import trace
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
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


def server_interceptors() -> Sequence[grpc.aio.ServerInterceptor]:
    """A server span per call (health checks and reflection excepted),
    continuing the caller's traceparent; from the process's tracer provider."""
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(filter_=_UNTRACED)  # type: ignore[no-untyped-call]
    return [interceptor]


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
    "rpc_type",
    "split_method",
    "tracer",
]
