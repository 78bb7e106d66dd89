"""Server bootstrap shared by the Python services.

create_server() builds a grpc.aio server with the service, health and
reflection registered and binds it (port 0 picks a free port, so tests use the
real port it returns). serve() runs it until SIGTERM or SIGINT, then drains:
health goes NOT_SERVING, new calls are refused, in-flight calls get the grace
period, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2

from shop_services.common import telemetry
from shop_services.common.config import ConfigError
from shop_services.common.interceptors import ObservabilityInterceptor
from shop_services.common.limits import StreamCap, max_streams_from_env
from shop_services.common.tls import Tls

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

C = TypeVar("C")

# Generous message size limits are set by Envoy at the edge; each service
# refuses anything over 4 MiB with RESOURCE_EXHAUSTED (the gRPC default).
_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


@dataclass
class Service:
    """One gRPC service to register: its full name and how to add it."""

    full_name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass
class Running:
    """A started server: the real port it listens on and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    names: Sequence[str] = field(default_factory=tuple)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.names):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Drain: NOT_SERVING, refuse new calls, wait up to grace for in-flight ones."""
        await self.set_serving(False)
        await self.server.stop(grace)


async def create_server(
    address: str,
    services: Sequence[Service],
    logger: logging.Logger,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    reflection_pool: descriptor_pool.DescriptorPool | None = None,
    reflected: Sequence[str] = (),
    tls: Tls | None = None,
) -> Running:
    """Build, register and bind a server; it is started and SERVING on return.

    With tls, the port serves mutual TLS only (common/tls.py); without, plaintext.
    Each client may hold SHOP_MAX_STREAMS_PER_CLIENT server streams open at
    once (common/limits.py; service_main has checked the variable).

    Reflection describes the registered services (plus `reflected`, looked up
    in `reflection_pool` when given, else in the default pool).
    """
    # One interceptor traces, logs and counts every call (common/interceptors.py).
    # The stream cap wraps each streaming handler inside it, so a refused
    # stream is traced and logged like any other call; every interceptor in
    # grpc.aio's chain costs a coroutine per call, so the cap is not one.
    server = grpc.aio.server(
        interceptors=[
            ObservabilityInterceptor(logger, inner=StreamCap(max_streams_from_env()).wrap),
            *interceptors,
        ],
        options=_OPTIONS,
    )
    names = [s.full_name for s in services]
    for service in services:
        service.register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    register_reflection(server, [*names, *reflected, health_name], pool=reflection_pool)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot listen on {address}: the address is in use or invalid")
    await server.start()
    running = Running(server=server, port=port, health=health, names=names)
    await running.set_serving(True)
    host = address.rsplit(":", 1)[0]
    logger.info("listening", extra={"addr": f"{host}:{port}", "tls": "mutual" if tls else "off"})
    return running


def register_reflection(
    server: grpc.aio.Server,
    names: Sequence[str],
    pool: descriptor_pool.DescriptorPool | None = None,
) -> None:
    """Serve reflection (v1alpha and v1) for the given services plus itself."""
    listed = [*names, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(listed, pool=pool)
    # grpc.reflection.v1 is wire-identical to v1alpha (only the package name
    # differs), so grpcio-reflection's v1alpha servicer and messages answer
    # v1 callers too; grpcurl and Envoy-era tools ask for v1 first.
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service_name in (reflection.SERVICE_NAME, REFLECTION_V1):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service_name, {"ServerReflectionInfo": handler}),)
        )


def service_main(
    name: str,
    from_env: Callable[[], C],
    run: Callable[[C], Coroutine[Any, Any, int]],
    *,
    impl: str | None = None,
) -> int:
    """A service's `main`: read its config and the telemetry settings (exit 2
    naming the bad variable), set up traces and metrics (exit 1 when the
    metrics port cannot be bound), then run it on a fresh event loop, flush
    the spans still queued, and return its exit code. (uvloop was measured
    here and saved nothing: grpc.aio does its I/O in its C core;
    docs/performance.md, P4.)"""
    try:
        config = from_env()
        telemetry_config = telemetry.TelemetryConfig.from_env()
        max_streams_from_env()  # create_server reads it again; a bad value stops the start here
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    try:
        tel = telemetry.Telemetry(name, telemetry_config, impl=impl)
    except OSError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(config))
    finally:
        tel.shutdown()


async def serve(
    running: Running,
    logger: logging.Logger,
    grace: float,
    on_stopped: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain for up to grace seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        logger.info("draining", extra={"grace_seconds": grace})
        await running.stop(grace)
    waiter.cancel()
    stopper.cancel()
    if on_stopped is not None:
        await on_stopped()
    logger.info("stopped")
