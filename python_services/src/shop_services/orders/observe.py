"""What the saga tells Zipkin and Prometheus about each order.

Every saga step is a span (the downstream call's client span is its child):
`saga <step>` going forward, `saga compensate <step>` for Release and Refund,
`saga resolve <step>` for replaying an in-doubt Reserve or Charge. Each
carries order_id, step, kind and outcome ("succeeded", or "failed" with the
gRPC code); a failed step's span has an error status.

Series (the bootstrap serves them on the metrics port):
- shop_orders_total{outcome, reason}: orders that reached CONFIRMED or FAILED,
  FAILED ones by failure reason;
- shop_saga_compensations_total{step, outcome}: Release and Refund calls;
- shop_saga_step_seconds{step, kind, outcome}: each step's latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import prometheus_client
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from shop_services.orders.clients import CallFailedError
from shop_services.orders.store import STEP_REFUND, STEP_RELEASE

_TRACER = trace.get_tracer("shop_services.orders.saga")

ORDERS = prometheus_client.Counter(
    "shop_orders", "Orders that reached a final state, by outcome and failure reason.", ("outcome", "reason")
)
COMPENSATIONS = prometheus_client.Counter(
    "shop_saga_compensations", "Compensating calls (Release, Refund) made by the saga.", ("step", "outcome")
)
STEP_SECONDS = prometheus_client.Histogram(
    "shop_saga_step_seconds",
    "How long each saga step's call took (retries included), in seconds.",
    ("step", "kind", "outcome"),
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)

FORWARD = "forward"
COMPENSATE = "compensate"
RESOLVE = "resolve"


def undo_kind(step: str) -> str:
    """An undo call's kind: Release and Refund compensate; a replayed Reserve or Charge resolves."""
    return COMPENSATE if step in (STEP_RELEASE, STEP_REFUND) else RESOLVE


@contextmanager
def step(order_id: str, name: str, kind: str) -> Iterator[None]:
    """Trace and time one saga step; the body makes its call (which may raise CallFailedError)."""
    title = f"saga {name}" if kind == FORWARD else f"saga {kind} {name}"
    attributes = {"order_id": order_id, "step": name, "kind": kind}
    with _TRACER.start_as_current_span(title, attributes=attributes, record_exception=False) as span:
        start = time.perf_counter()
        outcome = "succeeded"
        try:
            yield
        except CallFailedError as failure:
            outcome = "failed"
            span.set_attribute("error.code", failure.code.name)
            span.set_status(Status(StatusCode.ERROR, str(failure)))
            raise
        except BaseException as exc:
            outcome = "failed"
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.set_attribute("outcome", outcome)
            STEP_SECONDS.labels(name, kind, outcome).observe(time.perf_counter() - start)
            if kind == COMPENSATE:
                COMPENSATIONS.labels(name, outcome).inc()


def order_finished(outcome: str, reason: str = "") -> None:
    """Count an order that reached CONFIRMED ("confirmed") or FAILED ("failed", with its reason)."""
    ORDERS.labels(outcome, reason).inc()
    trace.get_current_span().add_event(f"order {outcome}", {"reason": reason} if reason else {})
