"""The saga's clients: one long-lived channel per dependency, and one call helper.

Addresses are whatever the configuration says: the real services in a local
run, Envoy's internal listener in the stack, fakes on loopback ports in the
tests. Each dependency gets one grpc.aio channel for the life of the service,
shared by every saga.

Failing fast. Calls never use wait_for_ready: a dependency that is down fails
the call with UNAVAILABLE at once, and the saga maps that to
DEPENDENCY_UNAVAILABLE instead of hanging until the caller's deadline. The
reconnect backoff is capped at half a second, like the saga's own retry pause,
so a dependency (or Envoy) that comes back is used again within half a second
(gRPC's default cap is two minutes). With a two-second cap a restart of Envoy
that took three seconds under load cost five: the next reconnect came after
the step's budget, and a Commit in doubt went to compensation. On loopback a
connection attempt twice a second while a dependency is down costs nothing.

Never sent, answered, or in doubt. A failed call is one of three kinds:

- *never sent*: it certainly never reached the service. Two cases are
  certain: Envoy answered it locally without forwarding it ("no healthy
  upstream", a circuit breaker's overflow, a refused connection to the host),
  which Envoy marks with the ``x-shop-not-forwarded`` header (its response
  flags; see envoy/README.md); or gRPC itself could not connect ("failed to
  connect to all addresses", a refused connection to Envoy or the service).
- *answered*: the service said what happened: a business error, or
  UNAVAILABLE with the documented reason PROCESSOR_UNAVAILABLE, which payments
  sends only when nothing was recorded.
- *in doubt*: anything else that may come after the service did the work:
  UNAVAILABLE from the transport, DEADLINE_EXCEEDED, CANCELLED, UNKNOWN,
  INTERNAL or DATA_LOSS. An attempt that was never sent does not clear the
  doubt an earlier attempt of the same call left.

Retries. Every call the saga makes is idempotent (reads, or writes keyed by a
request id derived from the order), so :func:`call` retries:

- a call that was never sent, with exponential backoff, for as long as its
  time budget allows: a dependency (or Envoy) restarting costs latency, not
  the order;
- UNAVAILABLE that may have reached the service, and a stream the transport
  reset under the call (INTERNAL "Received RST_STREAM": the dependency was
  killed after its reply had started, too late for Envoy to retry), a
  bounded number of times (``attempts``; Commit, the step after the charge,
  asks for more, see saga.py).

In the deployed stack Envoy adds its own bounded retries on connect failures
and refused streams (envoy/README.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from shop.catalog.v1 import catalog_service_pb2_grpc
from shop.inventory.v1 import inventory_service_pb2_grpc
from shop.payments.v1 import payment_service_pb2_grpc

from shop_services.common.errors import decode_error
from shop_services.common.interceptors import REQUEST_ID_HEADER
from shop_services.common.telemetry import client_interceptors
from shop_services.common.tls import Tls

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 500),
]

# Codes after which the dependency may or may not have done the work.
_IN_DOUBT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
    }
)
# ErrorInfo reasons that a dependency documents as "nothing was done".
_DEFINITE_REASONS = frozenset({"PROCESSOR_UNAVAILABLE"})
# Envoy adds this header (its response flags) to a reply it made itself
# without forwarding the call: UH (no healthy upstream), UO (overflow), UF
# (no connection to the host). deploy/shopstack/envoy/bootstrap.py sets it.
NOT_FORWARDED_HEADER = "x-shop-not-forwarded"
# gRPC core's words when no connection could be made, so nothing was sent.
_NO_CONNECTION = "failed to connect to all addresses"
# gRPC core's words when the HTTP/2 stream was reset under the call: the
# transport's failure, not an INTERNAL the service answered.
_STREAM_RESET = "RST_STREAM"
# The longest pause between two retries of a call that was never sent.
_MAX_BACKOFF = 0.5


@dataclass(frozen=True)
class Dependencies:
    """Where the saga's dependencies listen (host:port)."""

    catalog: str
    inventory: str
    payments: str


class CallFailedError(Exception):
    """A downstream call failed; says how, and whether it may have done the work."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        fields: tuple[str, ...] = (),
        never_sent: bool = False,
        doubt_before: bool = False,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = fields
        # This attempt certainly never reached the service.
        self.never_sent = never_sent
        # An earlier attempt of the same call may have reached it.
        self.doubt_before = doubt_before

    @property
    def in_doubt(self) -> bool:
        """The service may have done the work: this attempt, or an earlier one, may have reached it."""
        if self.never_sent:
            return self.doubt_before
        return self.code in _IN_DOUBT_CODES and self.reason not in _DEFINITE_REASONS

    @property
    def retryable(self) -> bool:
        """Worth another attempt of the same (idempotent) call, within its bound."""
        if self.code == grpc.StatusCode.INTERNAL:
            return _STREAM_RESET in self.message
        return self.code == grpc.StatusCode.UNAVAILABLE

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> CallFailedError:
        details = decode_error(error)
        return cls(
            details.code,
            details.message,
            reason=details.reason,
            fields=tuple(details.field_paths),
            never_sent=details.code == grpc.StatusCode.UNAVAILABLE and _never_sent(error, details.message),
        )


def _never_sent(error: grpc.aio.AioRpcError, message: str) -> bool:
    if message.startswith(_NO_CONNECTION):
        return True
    # Envoy's local reply to a gRPC call is trailers-only: its headers are the trailers.
    for metadata in (error.trailing_metadata(), error.initial_metadata()):
        for key, _ in metadata or ():
            if key == NOT_FORWARDED_HEADER:
                return True
    return False


class Clients:
    """One channel and stub per dependency, for the life of the service."""

    def __init__(self, dependencies: Dependencies, tls: Tls | None = None) -> None:
        addresses = (dependencies.catalog, dependencies.inventory, dependencies.payments)
        # Each call is a client span, and the caller's trace context travels on as traceparent.
        if tls is None:
            self._channels = [
                grpc.aio.insecure_channel(a, options=_CHANNEL_OPTIONS, interceptors=client_interceptors())
                for a in addresses
            ]
        else:
            # Our own certificate identifies us to Envoy's internal listener,
            # whose RBAC allows orders exactly the saga's RPCs.
            credentials = tls.channel_credentials()
            self._channels = [
                grpc.aio.secure_channel(a, credentials, options=_CHANNEL_OPTIONS, interceptors=client_interceptors())
                for a in addresses
            ]
        catalog, inventory, payments = self._channels
        self.catalog: catalog_service_pb2_grpc.CatalogServiceAsyncStub = catalog_service_pb2_grpc.CatalogServiceStub(
            catalog
        )
        self.inventory: inventory_service_pb2_grpc.InventoryServiceAsyncStub = (
            inventory_service_pb2_grpc.InventoryServiceStub(inventory)
        )
        self.payments: payment_service_pb2_grpc.PaymentServiceAsyncStub = payment_service_pb2_grpc.PaymentServiceStub(
            payments
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def call(
    method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
    request: RequestT,
    *,
    budget: float,
    trace_id: str,
    backoff: float,
    attempts: int = 2,
) -> ResponseT:
    """Call method within budget seconds; retry what was never sent, and what is retryable up to attempts.

    Each attempt's timeout is what is left of the budget, so the dependency
    never sees a deadline later than the caller's. x-request-id is forwarded.
    Attempts that were never sent do not count against attempts. Raises
    CallFailedError, in doubt if any attempt may have reached the service.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    metadata = ((REQUEST_ID_HEADER, trace_id),)
    pause = backoff
    reached = 0
    doubt = False
    while True:
        try:
            response: ResponseT = await method(request, timeout=max(deadline - loop.time(), 0.001), metadata=metadata)
            return response
        except grpc.aio.AioRpcError as error:
            failure = CallFailedError.from_rpc_error(error)
        failure.doubt_before = doubt
        doubt = failure.in_doubt
        if not failure.never_sent:
            reached += 1
        retry = failure.never_sent or (failure.retryable and reached < attempts)
        if not retry or deadline - loop.time() <= pause:
            raise failure
        await asyncio.sleep(pause)
        pause = min(pause * 2, max(_MAX_BACKOFF, backoff))
