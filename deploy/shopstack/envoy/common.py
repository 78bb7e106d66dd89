"""What the static bootstrap and the dynamic files share: where Envoy runs, and small builders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopstack.topology import EDGE_PROGRAM, LOOPBACK, ROOT, WEB_DIST, Topology

# The npm-pinned renderer of the OpenAPI page (tools/package.json).
DOCS_ASSETS = ROOT / "tools" / "node_modules" / "swagger-ui-dist"
# The files of it the page loads.
DOCS_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


@dataclass(frozen=True)
class Mode:
    """Where Envoy runs: addresses and paths as Envoy itself sees them."""

    name: str
    listen_host: str  # public listener
    internal_host: str  # internal listener
    admin_host: str
    config_dir: str  # where envoy.yaml and the dynamic files live
    descriptor_set: str
    upstream_host: str | None  # None: each cluster's own service name (Docker DNS)
    web_dir: str  # the storefront's built files (web/dist), served at "/"
    openapi: str  # the OpenAPI document `make protos` writes, served at /openapi.json
    docs_assets: str  # swagger-ui-dist's files, for the page that renders it at /docs
    certs_dir: str  # the CA, the certificates and the JWKS (`make certs`)
    # Where Envoy sends its spans (Zipkin's host:port as Envoy sees it); None: no tracing.
    zipkin: tuple[str, int] | None = None
    # The share of new traces Envoy records, 0 to 1.
    sampling_ratio: float = 1.0
    # Per cluster, the address of each host it runs on, where that is not
    # upstream_host (a hosts variant: deploy/hosts.toml).
    upstream_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def upstreams(self, cluster: str) -> tuple[str, ...]:
        """The hosts of a cluster's endpoints, one per replica."""
        return self.upstream_hosts.get(cluster) or (self.upstream_host or cluster,)

    def cert(self, name: str) -> dict[str, Any]:
        """A tls_certificates entry: name's certificate and key."""
        return {
            "certificate_chain": {"filename": f"{self.certs_dir}/{name}.crt"},
            "private_key": {"filename": f"{self.certs_dir}/{name}.key"},
        }

    @property
    def trusted_ca(self) -> dict[str, str]:
        return {"filename": f"{self.certs_dir}/ca.crt"}

    @property
    def jwks(self) -> str:
        return f"{self.certs_dir}/jwks.json"


def local_mode(
    config_dir: Path,
    descriptor_set: Path,
    certs_dir: Path,
    *,
    zipkin_port: int | None = None,
    sampling_ratio: float = 1.0,
    topology: Topology | None = None,
) -> Mode:
    """Local processes: `make up` and the tests. With zipkin_port, Envoy
    traces every request it samples and sends the spans there.

    Everything is on loopback unless the topology has a hosts variant
    (deploy/hosts.toml): then Envoy listens on its own host's address and
    reaches each implementation at its hosts' addresses.

    The OpenAPI document lies beside the descriptor set (both from `make
    protos`); the page's renderer is the npm-pinned swagger-ui-dist in tools/.
    """
    hosts = topology.hosts if topology is not None else {}
    edge = hosts.get(EDGE_PROGRAM, (LOOPBACK,))[0]
    return Mode(
        "local",
        edge,
        edge,
        edge,
        str(config_dir),
        str(descriptor_set),
        LOOPBACK,
        str(WEB_DIST),
        str(descriptor_set.parent / "openapi.json"),
        str(DOCS_ASSETS),
        str(certs_dir),
        zipkin=None if zipkin_port is None else (LOOPBACK, zipkin_port),
        sampling_ratio=sampling_ratio,
        upstream_hosts={program: addresses for program, addresses in hosts.items() if program != EDGE_PROGRAM},
    )


# Where the containers mount the certificates `make certs` wrote (docker-compose.yml).
DOCKER_CERTS_DIR = "/etc/shop/certs"


def docker_mode() -> Mode:
    """Docker Compose: listen on the container's interfaces, reach services by name."""
    return Mode(
        "docker",
        "0.0.0.0",
        "0.0.0.0",
        "0.0.0.0",
        "/etc/envoy",
        "/etc/envoy/shop_api.binpb",
        None,
        "/etc/envoy/web",
        "/etc/envoy/openapi.json",
        "/etc/envoy/docs",
        DOCKER_CERTS_DIR,
    )


# The circuit-breaker priority each listener's routes use: every cluster has
# one set of thresholds per priority, so each listener gets its own budget.
LISTENER_PRIORITY = {"public": "DEFAULT", "internal": "HIGH"}


def kubernetes_mode() -> Mode:
    """Kubernetes: like Docker, with the configuration from a ConfigMap.

    Each cluster's name is a headless Service, so Envoy's STRICT_DNS sees every
    ready pod and balances and health-checks them one by one. The descriptor
    set, the OpenAPI document and its page's renderer are baked into the Envoy
    image (envoy/Dockerfile), not the ConfigMap.
    """
    return Mode(
        "kubernetes",
        "0.0.0.0",
        "0.0.0.0",
        "0.0.0.0",
        "/etc/envoy",
        "/usr/share/shop/shop_api.binpb",
        None,
        "/usr/share/shop/web",
        "/usr/share/shop/openapi.json",
        "/usr/share/shop/docs",
        DOCKER_CERTS_DIR,
    )


Routing = Mapping[str, Mapping[str, int]]
"""Per service, the implementations receiving traffic and their weights."""


def default_routing(topology: Topology) -> dict[str, dict[str, int]]:
    return {name: {svc.impl: 100} for name, svc in topology.services.items()}


def duration(seconds: float) -> str:
    return f"{seconds:g}s"


def address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def path_source(mode: Mode, filename: str) -> dict[str, Any]:
    return {
        "resource_api_version": "V3",
        "path_config_source": {
            "path": f"{mode.config_dir}/{filename}",
            "watched_directory": {"path": mode.config_dir},
        },
    }
