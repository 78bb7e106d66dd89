"""The bench's bare grpc.aio server: grpc.health.v1 Check and nothing else.

No interceptors, no logging, no telemetry, default options; the same mutual
TLS the shop's Python services serve. `make bench` measures it beside the
services: what grpc.aio itself costs per request on this machine is the floor
each Python service's figures are compared with (docs/performance.md). It runs
on the repository's .venv, so on the grpcio and grpcio-health-checking the
services run on.

    .venv/bin/python bench/floor/python/floor.py LISTEN_ADDR CERT KEY CA
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc


async def serve(address: str, credentials: grpc.ServerCredentials) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # SERVING for ""
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise SystemExit(f"floor-python: cannot listen on {address}")
    await server.start()
    # The bench reads the bound port from this line.
    print(f"listening {address.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit("usage: floor.py LISTEN_ADDR CERT KEY CA (the floor serves mutual TLS, as the services do)")
    address, cert, key, ca = (sys.argv[1], *(Path(f).read_bytes() for f in sys.argv[2:]))
    # Mutual TLS as the services serve it (shop_services/common/tls.py).
    asyncio.run(
        serve(address, grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True))
    )
