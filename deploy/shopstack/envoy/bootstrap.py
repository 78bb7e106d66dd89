"""envoy.yaml, the static bootstrap: admin, the two listeners and their filters.

It changes only when the topology's edge does (ports, filters); a swap or a
canary never rewrites it. The listeners read their routes, and Envoy its
clusters, from the watched dynamic files that dynamic.py renders.
"""

from __future__ import annotations

from typing import Any

from shopstack.envoy.common import Mode, address, path_source
from shopstack.topology import Topology

# Public services JSON transcoding exposes (their google.api.http rules).
_TRANSCODED = (
    "shop.catalog.v1.CatalogService",
    "shop.inventory.v1.InventoryService",
    "shop.orders.v1.OrderService",
)


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
            # ...and every response carries it, so a caller can quote it.
            "always_set_request_id_in_response": True,
            "rds": {
                "route_config_name": listener,
                "config_source": path_source(mode, f"rds_{listener}.yaml"),
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
        # After the transcoder: a JSON call (GET /v1/products) has become the
        # gRPC call its route matches by the time CORS looks up the policy.
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
    ]


def bootstrap(topology: Topology, mode: Mode) -> dict[str, Any]:
    """envoy.yaml: admin, the two listeners, and the watched dynamic files."""
    return {
        "node": {"id": f"shop-edge-{mode.name}", "cluster": "shop-edge"},
        "admin": {"address": address(mode.admin_host, topology.admin_port)},
        "dynamic_resources": {"cds_config": path_source(mode, "cds.yaml")},
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
                    "address": address(mode.listen_host, topology.public_port),
                    "filter_chains": [{"filters": [_hcm(mode, "public", _public_filters(mode))]}],
                },
                {
                    "name": "internal",
                    "address": address(mode.internal_host, topology.internal_port),
                    "filter_chains": [{"filters": [_hcm(mode, "internal", _fault_filters(topology))]}],
                },
            ]
        },
    }
