"""`python -m shop_services.common.healthcheck ADDR [SERVICE]`: a grpc.health.v1 probe.

Exits 0 when the server at ADDR answers SERVING for SERVICE (default "", the
whole server) and 1 otherwise, printing why. Docker's HEALTHCHECK runs it, so
an image needs no grpc_health_probe binary. When the service's own TLS
variables are set (common/tls.py), it connects with the service's certificate,
as the server requires.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop_services.common.config import ConfigError
from shop_services.common.tls import Tls, tls_from_env

TIMEOUT_SECONDS = 3.0


def check(address: str, service: str = "", timeout: float = TIMEOUT_SECONDS, tls: Tls | None = None) -> str | None:
    """None when SERVING, otherwise a sentence saying what was wrong."""
    channel = grpc.insecure_channel(address) if tls is None else grpc.secure_channel(address, tls.channel_credentials())
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"health check of {address} failed: {exc.code().name}: {exc.details()}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return f"{address} is {status}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m shop_services.common.healthcheck ADDR [SERVICE]", file=sys.stderr)
        return 2
    try:
        tls = tls_from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    problem = check(argv[1], argv[2] if len(argv) == 3 else "", tls=tls)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
