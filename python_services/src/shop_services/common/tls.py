"""Mutual TLS for every Python service, from three files named in the configuration.

SHOP_TLS_CERT_FILE and SHOP_TLS_KEY_FILE are the service's own certificate
(its SPIFFE-style identity in the SAN) and key; SHOP_TLS_CA_FILE is the CA
that every caller's certificate must come from. Set all three and the server
serves TLS only and refuses a connection without a client certificate from
that CA; the same files make the client credentials orders calls Envoy's
internal listener with. Set none and the server is plaintext, which only the
unit tests do (the stack, Docker and Kubernetes always set them); set some
and the service refuses to start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc

from shop_services.common.config import ConfigError

CERT_VAR = "SHOP_TLS_CERT_FILE"
KEY_VAR = "SHOP_TLS_KEY_FILE"
CA_VAR = "SHOP_TLS_CA_FILE"


@dataclass(frozen=True)
class Tls:
    """A service's certificate, key and the CA it trusts, read once at start-up."""

    cert: bytes
    key: bytes
    ca: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve with our certificate; require a client certificate from the CA."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Call with our certificate; trust servers whose certificate comes from the CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def tls_from_env() -> Tls | None:
    """The TLS files the environment names, read; None when it names none.

    Raises ConfigError when only some are set or a file cannot be read.
    """
    names = (CERT_VAR, KEY_VAR, CA_VAR)
    paths = {name: os.environ.get(name, "").strip() for name in names}
    given = [name for name in names if paths[name]]
    if not given:
        return None
    if len(given) != len(names):
        missing = ", ".join(name for name in names if not paths[name])
        raise ConfigError(f"TLS needs {', '.join(names)} together; {missing} not set")
    contents = {}
    for name in names:
        try:
            with open(paths[name], "rb") as handle:
                contents[name] = handle.read()
        except OSError as exc:
            raise ConfigError(f"environment variable {name}: cannot read {paths[name]!r}: {exc.strerror}") from exc
    return Tls(cert=contents[CERT_VAR], key=contents[KEY_VAR], ca=contents[CA_VAR])
