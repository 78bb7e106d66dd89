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
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shopstack.topology import Method, Service, Topology, methods

IMPL_HEADER = "x-shop-impl"
# The gRPC-Web and CORS headers a browser client sends and may read.
_CORS_ALLOW_HEADERS = (
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,x-request-id,x-shop-impl,"
    "x-accept-content-transfer-encoding,x-accept-response-streaming"
)
_CORS_EXPOSE_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin,x-request-id"
# Public services JSON transcoding exposes (their google.api.http rules).
_TRANSCODED = (
    "shop.catalog.v1.CatalogService",
    "shop.inventory.v1.InventoryService",
    "shop.orders.v1.OrderService",
)


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

    def upstream(self, cluster: str) -> str:
        return self.upstream_host or cluster


def local_mode(config_dir: Path, descriptor_set: Path) -> Mode:
    """Everything on loopback: `make up` and the tests."""
    return Mode(
        "local",
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.1",
        str(config_dir),
        str(descriptor_set),
        "127.0.0.1",
    )


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
    )


Routing = Mapping[str, Mapping[str, int]]
"""Per service, the implementations receiving traffic and their weights."""


def default_routing(topology: Topology) -> dict[str, dict[str, int]]:
    return {name: {svc.impl: 100} for name, svc in topology.services.items()}


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _path_source(mode: Mode, filename: str) -> dict[str, Any]:
    return {
        "resource_api_version": "V3",
        "path_config_source": {
            "path": f"{mode.config_dir}/{filename}",
            "watched_directory": {"path": mode.config_dir},
        },
    }


def _access_log(listener: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "service": "envoy",
                        "msg": "access",
                        "listener": listener,
                        "request_id": "%REQ(X-REQUEST-ID)%",
                        "method": "%REQ(:PATH)%",
                        "content_type": "%REQ(CONTENT-TYPE)%",
                        "code": "%GRPC_STATUS%",
                        "http_status": "%RESPONSE_CODE%",
                        "flags": "%RESPONSE_FLAGS%",
                        "cluster": "%UPSTREAM_CLUSTER%",
                        "duration_ms": "%DURATION%",
                        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                    }
                },
            },
        }
    ]


def _hcm(mode: Mode, listener: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": listener,
            "codec_type": "AUTO",
            # An x-request-id is made at the edge when the caller sent none,
            # and a caller's own id is kept, so every hop logs the same id.
            "generate_request_id": True,
            "preserve_external_request_id": True,
            "rds": {
                "route_config_name": listener,
                "config_source": _path_source(mode, f"rds_{listener}.yaml"),
            },
            "http_filters": [*filters, _router()],
            "access_log": _access_log(listener),
            # Long-lived streams (WatchStock, WatchOrder) end when idle this long.
            "stream_idle_timeout": "300s",
            "http2_protocol_options": {"max_concurrent_streams": 1024},
        },
    }


def _router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def _fault_filters(topology: Topology) -> list[dict[str, Any]]:
    """Fault injection on the internal listener, off unless switched on at runtime.

    One filter per service, keyed to its clusters, so a test (or a curious
    user) can slow one dependency down through the admin interface:
    POST /runtime_modify?fault.payments.delay_percent=100&fault.payments.delay_ms=3000
    """
    filters = []
    for name, service in topology.services.items():
        if name == "reflection":
            continue
        for impl in service.implementations.values():
            filters.append(
                {
                    "name": "envoy.filters.http.fault",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                        "upstream_cluster": impl.cluster,
                        "delay": {
                            "fixed_delay": "0.001s",
                            "percentage": {"numerator": 0},
                        },
                        "delay_percent_runtime": f"fault.{name}.delay_percent",
                        "delay_duration_runtime": f"fault.{name}.delay_ms",
                        "abort": {"grpc_status": 14, "percentage": {"numerator": 0}},
                        "abort_percent_runtime": f"fault.{name}.abort_percent",
                        "abort_grpc_status_runtime": f"fault.{name}.abort_grpc_status",
                    },
                }
            )
    return filters


def _public_filters(mode: Mode) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.filters.http.grpc_web",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"},
        },
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                "proto_descriptor": mode.descriptor_set,
                "services": list(_TRANSCODED),
                "convert_grpc_status": True,
                "print_options": {
                    "add_whitespace": True,
                    "always_print_primitive_fields": True,
                },
                "request_validation_options": {
                    "reject_unknown_method": False,
                    "reject_unknown_query_parameters": True,
                },
            },
        },
    ]


def bootstrap(topology: Topology, mode: Mode) -> dict[str, Any]:
    """envoy.yaml: admin, the two listeners, and the watched dynamic files."""
    return {
        "node": {"id": f"shop-edge-{mode.name}", "cluster": "shop-edge"},
        "admin": {"address": _address(mode.admin_host, topology.admin_port)},
        "dynamic_resources": {"cds_config": _path_source(mode, "cds.yaml")},
        # The admin layer lets /runtime_modify switch the fault filters on.
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "public",
                    "address": _address(mode.listen_host, topology.public_port),
                    "filter_chains": [{"filters": [_hcm(mode, "public", _public_filters(mode))]}],
                },
                {
                    "name": "internal",
                    "address": _address(mode.internal_host, topology.internal_port),
                    "filter_chains": [{"filters": [_hcm(mode, "internal", _fault_filters(topology))]}],
                },
            ]
        },
    }


def _cluster(topology: Topology, service: Service, lang: str, mode: Mode) -> dict[str, Any]:
    impl = service.implementations[lang]
    port = topology.port_of(impl) if mode.name == "local" else impl.port
    health_service = "" if service.name == "reflection" else service.proto
    return {
        "name": impl.cluster,
        "type": "STATIC" if mode.upstream_host else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1024}},
            }
        },
        "load_assignment": {
            "cluster_name": impl.cluster,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(mode.upstream(impl.cluster), port)}}]}],
        },
        # grpc.health.v1 every second: a draining service (NOT_SERVING) stops
        # receiving new calls after two failed checks.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "1s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": health_service},
            }
        ],
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        # A host that cannot be reached (connect failures, resets, timeouts:
        # errors Envoy itself sees) is ejected for a while; with one host per
        # cluster that means failing fast with UNAVAILABLE instead of piling
        # up timeouts. gRPC errors a healthy host answers with (payments'
        # UNAVAILABLE for a card network that is down, say) are the
        # application's business and never eject it.
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "interval": "2s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 100,
        },
        # Deliberate limits: one HTTP/2 connection multiplexes everything, so
        # connections stay few; requests are capped well above this machine's
        # capacity so overload is refused fast rather than queued; retries are
        # capped by a budget so they cannot multiply an outage.
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 64,
                    "max_pending_requests": 256,
                    "max_requests": 1024,
                    "retry_budget": {
                        "budget_percent": {"value": 20.0},
                        "min_retry_concurrency": 5,
                    },
                }
            ]
        },
    }


def clusters(topology: Topology, routing: Routing, mode: Mode) -> dict[str, Any]:
    """cds.yaml: a cluster for every implementation that receives traffic or is warming."""
    resources = []
    for name, weights in routing.items():
        service = topology.services[name]
        for lang in sorted(weights):
            resources.append(
                {
                    "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                    **_cluster(topology, service, lang, mode),
                }
            )
    return {"resources": resources}


def _route_action(service: Service, method: Method | None, targets: Mapping[str, int]) -> dict[str, Any]:
    action: dict[str, Any]
    live = {lang: w for lang, w in targets.items() if w > 0}
    if len(live) == 1:
        (lang,) = live
        action = {"cluster": service.implementations[lang].cluster}
    else:
        action = {
            "weighted_clusters": {
                "clusters": [
                    {"name": service.implementations[lang].cluster, "weight": w} for lang, w in sorted(live.items())
                ]
            }
        }
    streaming = method is None or method.streaming
    if streaming or service.timeout_seconds == 0:
        action["timeout"] = "0s"
    else:
        action["timeout"] = _duration(service.timeout_seconds)
        # The caller's grpc-timeout is honoured up to the route's timeout.
        action["max_stream_duration"] = {"grpc_timeout_header_max": _duration(service.timeout_seconds)}
        if method is not None and method.retry_safe:
            action["retry_policy"] = {
                "retry_on": "unavailable,reset,connect-failure,refused-stream",
                "num_retries": 2,
                "per_try_timeout": _duration(service.per_try_timeout_seconds),
                "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
                "retry_host_predicate": [
                    {
                        "name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                        },
                    }
                ],
                "host_selection_retry_max_attempts": 3,
            }
    return action


def _denied(path: str, service: Service) -> dict[str, Any]:
    return {
        "name": f"deny {path}",
        "match": {"path": path, "grpc": {}},
        # Envoy answers a gRPC request's local reply as gRPC: HTTP 403 becomes
        # grpc-status 7 (PERMISSION_DENIED) with this text as grpc-message.
        "direct_response": {
            "status": 403,
            "body": {"inline_string": f"{path} is internal to the shop; call it on the internal listener"},
        },
    }


def routes(
    topology: Topology,
    routing: Routing,
    listener: str,
    rpcs: Mapping[str, list[Method]],
) -> dict[str, Any]:
    """rds_<listener>.yaml: one route per RPC, plus the reflection route."""
    public = listener == "public"
    entries: list[dict[str, Any]] = []
    for name, targets in routing.items():
        service = topology.services[name]
        if name == "reflection":
            continue
        for method in rpcs.get(service.proto, []):
            if public and service.is_internal(method.name):
                entries.append(_denied(method.path, service))
                continue
            # While two implementations run, x-shop-impl pins a call to one.
            pinnable = sorted(targets) if len(targets) > 1 else []
            for lang in pinnable:
                entries.append(
                    {
                        "name": f"{method.path} pinned to {lang}",
                        "match": {
                            "path": method.path,
                            "grpc": {},
                            "headers": [{"name": IMPL_HEADER, "string_match": {"exact": lang}}],
                        },
                        "route": _route_action(service, method, {lang: 1}),
                    }
                )
            entries.append(
                {
                    "name": method.path,
                    "match": {"path": method.path},
                    "route": _route_action(service, method, targets),
                }
            )
    reflection = topology.services["reflection"]
    entries.append(
        {
            "name": "api reflection",
            "match": {"prefix": "/grpc.reflection."},
            "route": _route_action(reflection, None, routing["reflection"]),
        }
    )
    virtual_host: dict[str, Any] = {"name": "shop", "domains": ["*"], "routes": entries}
    if public:
        virtual_host["typed_per_filter_config"] = {
            "envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                # Browsers on a local development origin may call the API.
                "allow_origin_string_match": [
                    {"safe_regex": {"regex": r"https?://(localhost|127\.0\.0\.1)(:[0-9]+)?"}}
                ],
                "allow_methods": "GET, POST, OPTIONS",
                "allow_headers": _CORS_ALLOW_HEADERS,
                "expose_headers": _CORS_EXPOSE_HEADERS,
                "max_age": "600",
            }
        }
    return {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": listener,
                "virtual_hosts": [virtual_host],
            }
        ]
    }


def static_bootstrap(topology: Topology, mode: Mode, routing: Routing | None = None) -> dict[str, Any]:
    """The same configuration with clusters and routes inlined.

    `envoy --mode validate` checks only a bootstrap's static parts, so the
    tests validate this form to check the dynamic files' contents too.
    """
    routing = routing or default_routing(topology)
    rpcs = methods()
    config = bootstrap(topology, mode)
    del config["dynamic_resources"]
    config["static_resources"]["clusters"] = [
        {k: v for k, v in c.items() if k != "@type"} for c in clusters(topology, routing, mode)["resources"]
    ]
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        route_config = routes(topology, routing, listener["name"], rpcs)["resources"][0]
        del hcm["rds"]
        hcm["route_config"] = {k: v for k, v in route_config.items() if k != "@type"}
    return config


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so Envoy's directory watch never sees half a file."""
    text = yaml.safe_dump(data, sort_keys=False, width=120)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def render(
    topology: Topology,
    out_dir: Path,
    mode: Mode,
    routing: Routing | None = None,
    *,
    descriptor_set: Path | None = None,
    bootstrap_too: bool = True,
) -> None:
    """Write envoy.yaml (unless bootstrap_too is False) and the dynamic files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    routing = routing or default_routing(topology)
    rpcs = methods(descriptor_set) if descriptor_set else methods()
    # Clusters first: a route must never name a cluster Envoy does not have.
    _write_atomic(out_dir / "cds.yaml", clusters(topology, routing, mode))
    for listener in ("public", "internal"):
        _write_atomic(out_dir / f"rds_{listener}.yaml", routes(topology, routing, listener, rpcs))
    if bootstrap_too:
        _write_atomic(out_dir / "envoy.yaml", bootstrap(topology, mode))
