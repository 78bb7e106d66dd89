"""Envoy configuration, rendered from the topology for every way we run.

The bootstrap (envoy.yaml) holds the two listeners and points at three
dynamic files that Envoy watches in the same directory:

- cds.yaml: one cluster per running implementation (catalog-go,
  inventory-node, ...), with gRPC health checks, outlier detection and
  circuit breakers;
- rds_public.yaml and rds_internal.yaml: one route per RPC, generated from the
  descriptor set: a timeout on each, retries only on methods whose
  idempotency_level makes them safe, internal-only RPCs refused on the public
  listener with PERMISSION_DENIED, and, while two implementations of a service
  run, a weighted split plus an `x-shop-impl` header that pins one.

Swapping or canarying an implementation rewrites the dynamic files (atomic
renames); Envoy picks them up without a restart. The local stack, the tests and
Docker Compose render from this one module; only addresses and paths differ.

The package's modules follow that split: bootstrap.py renders envoy.yaml,
dynamic.py the files a swap rewrites, render.py writes them; common.py holds
where Envoy runs (Mode) and what both halves share.
"""

from shopstack.envoy.bootstrap import NOT_FORWARDED_HEADER, bootstrap
from shopstack.envoy.common import (
    DOCKER_CERTS_DIR,
    Mode,
    Routing,
    default_routing,
    docker_mode,
    kubernetes_mode,
    local_mode,
)
from shopstack.envoy.dynamic import (
    CLIENT_ADDRESS_HEADER,
    HEALTH_CLUSTERS_HEADER,
    IMPL_HEADER,
    REFLECTION_HIDE_HEADER,
    clusters,
    routes,
)
from shopstack.envoy.render import render, static_bootstrap

__all__ = [
    "CLIENT_ADDRESS_HEADER",
    "DOCKER_CERTS_DIR",
    "HEALTH_CLUSTERS_HEADER",
    "IMPL_HEADER",
    "NOT_FORWARDED_HEADER",
    "REFLECTION_HIDE_HEADER",
    "Mode",
    "Routing",
    "bootstrap",
    "clusters",
    "default_routing",
    "docker_mode",
    "kubernetes_mode",
    "local_mode",
    "render",
    "routes",
    "static_bootstrap",
]
