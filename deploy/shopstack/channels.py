"""gRPC channels that know the stack's certificates: the one way every tool,
test and benchmark talks to a stack.

- to the public listener: TLS, trusting the stack's CA, no client certificate
  (customers have tokens, not certificates);
- to the internal listener or a service's own port: mutual TLS, presenting an
  identity's certificate (the operator's by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import grpc

from shopstack.pki import OPERATOR, Certs

ChannelOptions = Sequence[tuple[str, object]]


@cache
def _read(path: Path, mtime_ns: int) -> bytes:
    return path.read_bytes()


def _bytes(path: Path) -> bytes:
    # Keyed by modification time, so a `make certs` rotation is picked up.
    return _read(path, path.stat().st_mtime_ns)


def credentials(certs: Certs, identity: str | None = OPERATOR) -> grpc.ChannelCredentials:
    """TLS trusting certs' CA; with identity, its certificate as the client's."""
    if identity is None:
        return grpc.ssl_channel_credentials(root_certificates=_bytes(certs.ca))
    pair = certs.pair(identity)
    return grpc.ssl_channel_credentials(
        root_certificates=_bytes(certs.ca),
        private_key=_bytes(pair.key),
        certificate_chain=_bytes(pair.cert),
    )


def channel(certs: Certs, address: str, identity: str | None = OPERATOR, options: ChannelOptions = ()) -> grpc.Channel:
    return grpc.secure_channel(address, credentials(certs, identity), options=list(options))


def aio_channel(
    certs: Certs, address: str, identity: str | None = OPERATOR, options: ChannelOptions = ()
) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, credentials(certs, identity), options=list(options))
