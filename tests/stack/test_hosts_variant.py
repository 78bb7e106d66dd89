"""deploy/hosts.toml, the topology variant with every program on a host of its own.

`make test-hosts` runs the stack on those hosts (tests/hosts); these check,
without starting anything, that the variant is consistent with stack.toml and
that the Envoy configuration, the services' settings and the certificates
generated from it name the hosts' addresses and never loopback.
"""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

import pytest
from cryptography import x509
from shopstack import envoy, netns, pki, topology
from shopstack.stack import Stack

TOPOLOGY = topology.load()
HOSTS = topology.load_hosts(TOPOLOGY)
PLACED = TOPOLOGY.with_hosts(HOSTS.addresses)


def _stack(tmp_path: Path) -> Stack:
    network = netns.Network.plan(TOPOLOGY, HOSTS, run="shop0")
    return Stack(run_dir=tmp_path, topology=PLACED, netns=network.namespaces)


def test_the_variant_places_every_default_program_on_its_own_address_in_its_subnet() -> None:
    subnet = ipaddress.ip_network(HOSTS.subnet)
    every = [HOSTS.client, *(a for addresses in HOSTS.addresses.values() for a in addresses)]
    assert len(every) == len(set(every))
    assert all(ipaddress.ip_address(a) in subnet for a in every)
    for service in TOPOLOGY.services.values():
        assert service.implementations[service.impl].cluster in HOSTS.addresses, service.name
    # Only addresses: the ports are stack.toml's.
    assert PLACED.public_port == TOPOLOGY.public_port
    assert PLACED.ports == TOPOLOGY.ports


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[network]\nsubnet = "10.9.0.0/24"\nclient = "10.9.0.2"\n[addresses]\nenvoy = "10.9.0.3"\n', "no address for"),
        ('[network]\nsubnet = "10.9.0.0/24"\nclient = "10.9.0.2"\n[addresses]\nenvoy = "10.8.0.3"\n', "is not in"),
        ('[network]\nsubnet = "10.9.0.0/24"\nclient = "10.9.0.2"\n[addresses]\nenvoy = "10.9.0.2"\n', "is both"),
        ('[network]\nsubnet = "10.9.0.0/24"\nclient = "10.9.0.2"\n[addresses]\nshop-x = "10.9.0.3"\n', "not a program"),
        (
            '[network]\nsubnet = "10.9.0.0/24"\nclient = "10.9.0.2"\n[addresses]\norders-python = ["10.9.0.3", "10.9.0.4"]\n',
            "only the stateless services",
        ),
    ],
)
def test_a_wrong_variant_is_refused_saying_why(text: str, error: str, tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        topology.load_hosts(TOPOLOGY, path)


def test_envoy_listens_on_its_host_and_reaches_every_replica_at_its_hosts(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = envoy.static_bootstrap(PLACED, stack.envoy_mode(), stack.routing)
    edge = HOSTS.addresses["envoy"][0]
    assert config["admin"]["address"]["socket_address"]["address"] == edge
    for listener in config["static_resources"]["listeners"]:
        assert listener["address"]["socket_address"]["address"] == edge, listener["name"]
    for cluster in envoy.clusters(PLACED, stack.routing, stack.envoy_mode())["resources"]:
        endpoints = [
            e["endpoint"]["address"]["socket_address"]["address"]
            for group in cluster["load_assignment"]["endpoints"]
            for e in group["lb_endpoints"]
        ]
        assert tuple(endpoints) == HOSTS.addresses[cluster["name"]], cluster["name"]


def test_each_replica_runs_in_its_hosts_namespace_listening_and_dialling_host_addresses(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    programs = stack.programs()
    assert [p for p, _, _ in programs if p.startswith("catalog-go")] == ["catalog-go", "catalog-go-2"]
    conf = stack.supervisord_conf()
    for replica, (program, impl, host) in enumerate(p for p in programs if p[1].service == "catalog"):
        env = stack.program_env(impl, host, replica)
        assert env["SHOP_LISTEN_ADDR"] == f"{host}:{impl.port}"
        assert env["SHOP_METRICS_ADDR"] == f"{host}:{impl.metrics_port}"
        # Each catalog replica seeds and reads its own copy.
        assert env["SHOP_DB_PATH"].endswith("catalog.db" if replica == 0 else f"catalog-{replica + 1}.db")
        assert _launched_with(conf, program)[:4] == ["ip", "netns", "exec", f"shop0-{program}"]
    # Every address a service is given is its own host's or Envoy's (the
    # internal listener for orders, the admin for the reflection server).
    edge = HOSTS.addresses["envoy"][0]
    for program, impl, host in programs:
        env = stack.program_env(impl, host)
        given = {k: v.rpartition(":")[0] for k, v in env.items() if k.startswith("SHOP_") and k.endswith("_ADDR")}
        assert set(given.values()) <= {host, edge}, f"{program}: {given}"
    orders = stack.program_env(PLACED.impl_of("orders"))
    assert orders["SHOP_PAYMENTS_ADDR"] == f"{edge}:{PLACED.internal_port}"
    assert _launched_with(conf, "envoy")[:4] == ["ip", "netns", "exec", "shop0-envoy"]


def _launched_with(conf: str, program: str) -> list[str]:
    """The program's command in supervisord.conf, after the shell that points
    its output at its log file (`sh -c 'exec "$0" "$@" >>LOG 2>&1' COMMAND...`)."""
    section = conf.split(f"[program:{program}]\n", 1)[1]
    command = shlex.split(section.split("command=", 1)[1].split("\n", 1)[0])
    assert command[:2] == ["/bin/sh", "-c"], command
    return command[3:]


def test_certificates_name_the_hosts_addresses_so_clients_that_dial_them_can_verify(tmp_path: Path) -> None:
    certs = pki.Certs(tmp_path / "certs", PLACED.security.trust_domain)
    pki.make_all(certs, PLACED.identities())

    def addresses(name: str) -> set[str]:
        cert = x509.load_pem_x509_certificate(certs.pair(name).cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}

    assert set(HOSTS.addresses["envoy"]) <= addresses(pki.ENVOY)
    assert set(HOSTS.addresses["envoy"]) <= addresses(pki.EDGE)
    assert set(HOSTS.addresses["catalog-go"]) <= addresses("catalog")
    inventory = {a for c in ("inventory-node", "inventory-go", "inventory-python") for a in HOSTS.addresses[c]}
    assert inventory <= addresses("inventory")
    # Without the variant, nothing but loopback (make up, Docker, Kubernetes).
    plain = pki.Certs(tmp_path / "plain", TOPOLOGY.security.trust_domain)
    pki.make_all(plain, TOPOLOGY.identities())
    cert = x509.load_pem_x509_certificate(plain.pair("catalog").cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
