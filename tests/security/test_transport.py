"""Certificates: TLS at the edge, mutual TLS on every service port and on the
internal listener, and Envoy's RBAC by identity there (who may call what)."""

from __future__ import annotations

import socket
import ssl

import grpc
import pytest
from conftest import session_routing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shopstack import pki, topology
from shopstack.stack import Stack

from .conftest import CALL_TIMEOUT, describe, rpc_error

TOPOLOGY = topology.load()
RPCS = topology.methods()
# Every implementation the session stack runs, by cluster name.
CLUSTERS = sorted(
    TOPOLOGY.services[name].implementations[lang].cluster
    for name, weights in session_routing().items()
    for lang in weights
)


def _impl(cluster: str) -> topology.Implementation:
    service, lang = cluster.rsplit("-", 1)
    return TOPOLOGY.services[service].implementations[lang]


def _health(channel: grpc.Channel) -> str:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _foreign_client(stack: Stack, stranger: pki.Certs, address: str) -> grpc.Channel:
    """Trusts the shop's CA (so the server is accepted) but presents a
    certificate from another CA, with a shop identity in it."""
    pair = stranger.pair(pki.OPERATOR)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=stack.certs.ca.read_bytes(),
        private_key=pair.key.read_bytes(),
        certificate_chain=pair.cert.read_bytes(),
    )
    return grpc.secure_channel(address, credentials)


def _refusals(stack: Stack, stranger: pki.Certs, address: str) -> dict[str, grpc.Channel]:
    return {
        "plaintext": grpc.insecure_channel(address),
        "TLS without a client certificate": stack.channel(address, identity=None),
        "a certificate from another CA": _foreign_client(stack, stranger, address),
    }


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_a_service_port_serves_only_callers_with_a_certificate_from_the_shop_ca(
    stack: Stack, stranger: pki.Certs, cluster: str
) -> None:
    address = f"127.0.0.1:{stack.topology.port_of(_impl(cluster))}"
    for what, channel in _refusals(stack, stranger, address).items():
        with channel:
            err = rpc_error(lambda c=channel: _health(c))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{cluster}, {what}: {describe(err)}"
    with stack.channel(address) as channel:
        assert _health(channel) == "SERVING"


def test_the_internal_listener_serves_only_callers_with_a_certificate_from_the_shop_ca(
    stack: Stack, stranger: pki.Certs
) -> None:
    request = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    for what, channel in _refusals(stack, stranger, stack.internal_addr).items():
        with channel:
            stub = catalog_grpc.CatalogServiceStub(channel)
            err = rpc_error(lambda s=stub: s.GetProduct(request, timeout=CALL_TIMEOUT))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{what}: {describe(err)}"


def _unary_or_client_streaming() -> list[topology.Method]:
    """Every shop RPC a probe can call and see end (server streams would not)."""
    return [m for service in TOPOLOGY.services.values() for m in RPCS.get(service.proto, []) if not m.server_streaming]


def _allowed(identity: str, path: str) -> bool:
    rpcs = TOPOLOGY.security.internal_access.get(identity, ())
    return "*" in rpcs or path in rpcs


def test_internal_rbac_allows_each_identity_exactly_its_rpcs(stack: Stack) -> None:
    """The table in stack.toml, live: each identity calls every RPC on the
    internal listener with an empty request. Allowed calls reach the service
    (any answer but PERMISSION_DENIED, usually INVALID_ARGUMENT); the rest
    are PERMISSION_DENIED by Envoy's RBAC."""
    methods = _unary_or_client_streaming()
    wrong: list[str] = []
    for identity in sorted(stack.topology.identities()):
        with stack.internal_channel(identity=identity) as channel:
            for method in methods:
                if method.client_streaming:
                    call = channel.stream_unary(method.path)
                    probe = lambda c=call: c(iter(()), timeout=CALL_TIMEOUT)  # noqa: E731
                else:
                    call = channel.unary_unary(method.path)
                    probe = lambda c=call: c(b"", timeout=CALL_TIMEOUT)  # noqa: E731
                try:
                    probe()
                    outcome, details = grpc.StatusCode.OK, ""
                except grpc.RpcError as err:
                    outcome, details = err.code(), err.details()  # type: ignore[attr-defined]
                denied = outcome == grpc.StatusCode.PERMISSION_DENIED
                if _allowed(identity, method.path) == denied:
                    wrong.append(f"{identity} {method.path}: {outcome.name} {details}")
                elif denied and "RBAC" not in details:
                    wrong.append(f"{identity} {method.path}: denied, but not by RBAC: {details}")
    assert not wrong, "\n".join(wrong)


def test_the_edge_negotiates_h2_and_http11_over_tls(stack: Stack) -> None:
    host, port = stack.public_addr.rsplit(":", 1)
    for offered in ("h2", "http/1.1"):
        context = ssl.create_default_context(cafile=str(stack.certs.ca))
        context.set_alpn_protocols([offered])
        with (
            socket.create_connection((host, int(port)), timeout=CALL_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.selected_alpn_protocol() == offered
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_the_edge_refuses_plaintext_and_needs_no_client_certificate(stack: Stack, edge: grpc.Channel) -> None:
    request = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    with grpc.insecure_channel(stack.public_addr) as plaintext:
        err = rpc_error(lambda: catalog_grpc.CatalogServiceStub(plaintext).GetProduct(request, timeout=CALL_TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, describe(err)
    product = catalog_grpc.CatalogServiceStub(edge).GetProduct(request, timeout=CALL_TIMEOUT).product
    assert product.id == "sku-aeropress"


def test_a_client_that_trusts_another_ca_refuses_the_edge(stack: Stack, stranger: pki.Certs) -> None:
    request = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    credentials = grpc.ssl_channel_credentials(root_certificates=stranger.ca.read_bytes())
    with grpc.secure_channel(stack.public_addr, credentials) as channel:
        err = rpc_error(lambda: catalog_grpc.CatalogServiceStub(channel).GetProduct(request, timeout=CALL_TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, describe(err)
