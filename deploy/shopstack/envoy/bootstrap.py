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
                        "trace_id": "%TRACE_ID%",
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
                "config_source": path_source(mode, f"rds_{listener}.yaml"),
            },
            "http_filters": [*filters, _grpc_stats(), _router()],
            "access_log": _access_log(listener),
            **_tracing(mode),
            # Long-lived streams (WatchStock, WatchOrder) end when idle this long.
            "stream_idle_timeout": "300s",
            "http2_protocol_options": {"max_concurrent_streams": 1024},
        },
    }


ZIPKIN_CLUSTER = "zipkin"
# The response header that tells a caller its call's trace id (the storefront
# links it to the trace in Zipkin's UI).
TRACE_ID_HEADER = "x-trace-id"


def _tracing(mode: Mode) -> dict[str, Any]:
    """Zipkin tracing on a listener: a server span per request and a client
    span per upstream attempt (retries show as separate spans).

    Envoy reads the caller's W3C traceparent (or B3, which it prefers when
    both come) and sends both on upstream, so the services, whose
    OpenTelemetry SDKs speak W3C, continue the same trace. The x-request-id
    does not decide sampling (callers may send any id, not only a UUID):
    random_sampling does, for requests that carry no sampling decision.
    """
    if mode.zipkin is None:
        return {}
    return {
        "request_id_extension": {
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "use_request_id_for_trace_sampling": False,
            }
        },
        "tracing": {
            "random_sampling": {"value": round(mode.sampling_ratio * 100, 4)},
            "spawn_upstream_span": True,
            "provider": {
                "name": "envoy.tracers.zipkin",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                    "collector_cluster": ZIPKIN_CLUSTER,
                    "collector_endpoint": "/api/v2/spans",
                    "collector_endpoint_version": "HTTP_JSON",
                    "trace_id_128bit": True,
                    "shared_span_context": False,
                    "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION",
                },
            },
        },
    }


def _zipkin_cluster(mode: Mode) -> list[dict[str, Any]]:
    if mode.zipkin is None:
        return []
    host, port = mode.zipkin
    return [
        {
            "name": ZIPKIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": ZIPKIN_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(host, port)}}]}],
            },
        }
    ]


def _trace_id_header(mode: Mode) -> list[dict[str, Any]]:
    """x-trace-id on every response of the public listener, so a caller can
    open its call's trace (gRPC: an initial-metadata entry; JSON: a header)."""
    if mode.zipkin is None:
        return []
    return [
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {
                    "response_mutations": [
                        {
                            "append": {
                                "header": {"key": TRACE_ID_HEADER, "value": "%TRACE_ID%"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        }
                    ]
                },
            },
        }
    ]


def _grpc_stats() -> dict[str, Any]:
    """Per-method counters by gRPC status (cluster.<c>.grpc.<service>.<method>.<code>),
    which Envoy's own upstream_rq_<http status> cannot give: a NOT_FOUND is HTTP 200."""
    return {
        "name": "envoy.filters.http.grpc_stats",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "stats_for_all_methods": True,
            "enable_upstream_stats": True,
            # shop_catalog_v1_CatalogService: Envoy's tag extractors then split
            # the name right (envoy_grpc_bridge_service, envoy_grpc_bridge_method).
            "replace_dots_in_grpc_service_name": True,
            "emit_filter_state": True,
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
        *_trace_id_header(mode),
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
        "admin": {"address": address(mode.admin_host, topology.admin_port)},
        "dynamic_resources": {"cds_config": path_source(mode, "cds.yaml")},
        # The admin layer lets /runtime_modify switch the fault filters on.
        # The static layer sends spans to Zipkin every second (Envoy's
        # default, 5 s, makes a fresh trace look incomplete for a while).
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {"tracing.zipkin.flush_interval_ms": 1000}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
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
            ],
            "clusters": _zipkin_cluster(mode),
        },
    }
