"""The cap on server streams one client may hold open (SHOP_MAX_STREAMS_PER_CLIENT).

A server-streaming call (WatchStock, WatchOrder) holds a slot for as long as
it is open. Envoy bounds them per client connection and per service, not per
client, so each server counts them per client itself: a client is the
verified customer Envoy names (x-shop-customer), else the address Envoy saw it
connect from (x-shop-client-address), else, for a caller that reached the port
directly, its own address. Past the cap the call is refused at once with
RESOURCE_EXHAUSTED, before the handler runs; the slot is freed when the stream
ends, however it ends. deploy/stack.toml ([limits.services]) sets the cap and
says why; Go and Node count the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from shop_services.common.config import env_int

ENV = "SHOP_MAX_STREAMS_PER_CLIENT"
CUSTOMER_HEADER = "x-shop-customer"
CLIENT_ADDRESS_HEADER = "x-shop-client-address"


def max_streams_from_env() -> int:
    """SHOP_MAX_STREAMS_PER_CLIENT: a whole number, 0 (or unset) for no cap."""
    return env_int(ENV, 0)


def client_of(metadata: Any, peer: str) -> str:
    """Who a call counts against: customer, then Envoy's client address, then the peer address."""
    values = {key: str(value) for key, value in metadata or ()}
    if values.get(CUSTOMER_HEADER):
        return f"customer {values[CUSTOMER_HEADER]}"
    if values.get(CLIENT_ADDRESS_HEADER):
        return f"address {values[CLIENT_ADDRESS_HEADER]}"
    # grpc's peer: ipv4:127.0.0.1:5555, ipv6:[::1]:5555; the port changes per connection.
    return f"address {peer.rsplit(':', 1)[0].split(':', 1)[-1]}"


class StreamCap:
    """Refuses a client's server-streaming call past its cap of open ones.

    A wrapper of a method's handler, applied once per method by the server's
    one interceptor (common/interceptors.py), inside its observation, so a
    refused stream is traced and logged like any other call; who the client
    is, is read from each call's own metadata.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._open: Counter[str] = Counter()

    def open_streams(self, client: str) -> int:
        return self._open[client]

    def wrap(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler, capped when it is a server stream and there is a cap."""
        if self._cap <= 0 or not handler.unary_stream:
            return handler
        behavior: Callable[..., Any] = handler.unary_stream

        async def capped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            client = client_of(context.invocation_metadata(), context.peer())
            if self._open[client] >= self._cap:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Too many open streams: {client} already holds {self._cap} server streams on this server, "
                    f"the most one client may ({ENV}, deploy/stack.toml [limits.services]); close one and retry.",
                )
            self._open[client] += 1
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                self._open[client] -= 1
                if self._open[client] <= 0:
                    del self._open[client]

        return grpc.unary_stream_rpc_method_handler(capped, handler.request_deserializer, handler.response_serializer)
