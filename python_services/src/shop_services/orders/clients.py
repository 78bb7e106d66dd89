"""The saga's clients: one long-lived channel per dependency, and one call helper.

Addresses are whatever the configuration says: the real services in a local
run, Envoy's internal listener in the stack, fakes on loopback ports in the
tests. Each dependency gets one grpc.aio channel for the life of the service,
shared by every saga.

Failing fast. Calls never use wait_for_ready: a dependency that is down fails
the call with UNAVAILABLE at once, and the saga maps that to
DEPENDENCY_UNAVAILABLE instead of hanging until the caller's deadline. The
reconnect backoff is capped at two seconds so a dependency that comes back is
used again quickly (gRPC's default cap is two minutes).

Retries. Every call the saga makes is idempotent (reads, or writes keyed by a
request id derived from the order), so :func:`call` retries UNAVAILABLE once,
after a short pause, within the same time budget. That is the "one quick
retry" of the client; in the deployed stack Envoy adds its own bounded retries
of idempotent calls. Commit, the step after the charge, asks for more attempts
(see saga.py).

In doubt. A failed call either definitely did nothing (the dependency answered
with a business error, or with UNAVAILABLE and the documented reason
PROCESSOR_UNAVAILABLE, which payments sends only when nothing was recorded) or
is *in doubt*: UNAVAILABLE from the transport, DEADLINE_EXCEEDED, CANCELLED,
UNKNOWN, INTERNAL or DATA_LOSS may come after the dependency did the work. The
saga resolves an in-doubt step before compensating it.
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
    ("grpc.max_reconnect_backoff_ms", 2_000),
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
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = fields

    @property
    def in_doubt(self) -> bool:
        return self.code in _IN_DOUBT_CODES and self.reason not in _DEFINITE_REASONS

    @property
    def retryable(self) -> bool:
        return self.code == grpc.StatusCode.UNAVAILABLE

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> CallFailedError:
        details = decode_error(error)
        return cls(details.code, details.message, reason=details.reason, fields=tuple(details.field_paths))


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
    """Call method within budget seconds, retrying UNAVAILABLE up to attempts in all.

    Each attempt's timeout is what is left of the budget, so the dependency
    never sees a deadline later than the caller's. x-request-id is forwarded.
    Raises CallFailedError.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    metadata = ((REQUEST_ID_HEADER, trace_id),)
    pause = backoff
    attempt = 0
    while True:
        attempt += 1
        try:
            response: ResponseT = await method(request, timeout=max(deadline - loop.time(), 0.001), metadata=metadata)
            return response
        except grpc.aio.AioRpcError as error:
            failure = CallFailedError.from_rpc_error(error)
        if not failure.retryable or attempt >= attempts or deadline - loop.time() <= pause:
            raise failure
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
