"""The dynamic files: cds.yaml (clusters) and rds_<listener>.yaml (routes).

These are what a swap or a canary rewrites while Envoy runs: one cluster per
running implementation, and one route per RPC pointing at the implementations
that receive traffic, with their weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shopstack.envoy import docs
from shopstack.envoy.common import LISTENER_PRIORITY, Mode, Routing, address, duration
from shopstack.topology import WEB_DIST, ListenerLimits, Method, Service, Topology

# A request header that pins a call to one implementation while several run,
# and the response header naming the cluster that served a call.
IMPL_HEADER = "x-shop-impl"
# The services public reflection leaves out (go_service/internal/apireflection, HideHeader).
REFLECTION_HIDE_HEADER = "x-shop-reflection-hide"
# For the edge's grpc.health.v1: each service a listener's callers may ask
# about and the clusters taking its traffic (apireflection.ClustersHeader).
HEALTH_CLUSTERS_HEADER = "x-shop-health-clusters"
# The address Envoy saw a client connect from, set on every call (a caller's own
# value is overwritten): with x-shop-customer, what the services' per-client
# stream cap counts by ([limits.services] in stack.toml).
CLIENT_ADDRESS_HEADER = "x-shop-client-address"
# Set by jwt_authn from a verified token's scope claim (bootstrap.py strips any a caller sends).
_SCOPE_HEADER = "x-shop-scope"
# The gRPC-Web and CORS headers a browser client sends and may read.
_CORS_ALLOW_HEADERS = (
    "content-type,authorization,x-grpc-web,x-user-agent,grpc-timeout,x-request-id,x-shop-impl,traceparent,tracestate,"
    "x-accept-content-transfer-encoding,x-accept-response-streaming,connect-protocol-version"
)
_CORS_EXPOSE_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin,x-request-id,x-shop-impl,x-trace-id"
# Where the storefront's runtime configuration is served (see _storefront_routes).
STOREFRONT_CONFIG_PATH = "/storefront.json"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}
# Envoy refuses a direct_response body above this size (its default is 4 KiB).
MAX_STATIC_FILE_BYTES = 2 * 1024 * 1024


def _cluster(topology: Topology, service: Service, lang: str, mode: Mode) -> dict[str, Any]:
    impl = service.implementations[lang]
    port = topology.port_of(impl) if mode.name == "local" else impl.port
    health_service = "" if service.name == "reflection" else service.proto
    return {
        "name": impl.cluster,
        # Mutual TLS to every service: Envoy presents its own certificate and
        # accepts only the service's SPIFFE id; health checks go the same way.
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [mode.cert("envoy")],
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": mode.trusted_ca,
                        "match_typed_subject_alt_names": [
                            {
                                "san_type": "URI",
                                "matcher": {"exact": topology.security.spiffe_id(service.name)},
                            }
                        ],
                    },
                },
            },
        },
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
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": address(host, port)}} for host in mode.upstreams(impl.cluster)
                    ]
                }
            ],
        },
        # grpc.health.v1 every second while a host is healthy, five times a
        # second while it is not, so a restarted service gets traffic back
        # within a fifth of a second of answering SERVING (envoy/README.md).
        # A draining service (NOT_SERVING) stops receiving new calls after
        # two failed checks; one success brings a host back.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "1s",
                "interval_jitter": "0.1s",
                "unhealthy_interval": "0.2s",
                "unhealthy_edge_interval": "0.2s",
                "healthy_edge_interval": "1s",
                # A cluster no call has used yet (a canary at weight 0, a
                # freshly swapped-in implementation) is checked as often.
                "no_traffic_interval": "1s",
                "no_traffic_healthy_interval": "1s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": health_service},
            }
        ],
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        # A host that cannot be reached (connect failures, resets, timeouts:
        # errors Envoy itself sees) is ejected for a moment; with one host per
        # cluster that means failing fast with UNAVAILABLE instead of piling
        # up timeouts. The next successful active health check brings it back
        # at once (successful_active_health_check_uneject_host, Envoy's
        # default), so a restart costs at most one health-check interval.
        # gRPC errors a healthy host answers with (payments' UNAVAILABLE for
        # a card network that is down, say) are the application's business
        # and never eject it.
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": "1s",
            "max_ejection_time": "5s",
            "max_ejection_percent": 100,
        },
        # One set of limits per listener (stack.toml [limits.*]): public
        # routes use the DEFAULT priority, internal routes HIGH, and Envoy
        # keeps separate connection pools and counters per priority, so a
        # public flood can never take what the saga needs. Retries are capped
        # by a budget so they cannot multiply an outage.
        "circuit_breakers": {
            "thresholds": [
                _thresholds(LISTENER_PRIORITY["public"], topology.limits.public),
                _thresholds(LISTENER_PRIORITY["internal"], topology.limits.internal),
            ]
        },
    }


def _thresholds(priority: str, limits: ListenerLimits) -> dict[str, Any]:
    return {
        "priority": priority,
        "max_connections": limits.max_connections_per_cluster,
        "max_pending_requests": limits.max_pending_requests_per_cluster,
        "max_requests": limits.max_requests_per_cluster,
        "retry_budget": {
            "budget_percent": {"value": 20.0},
            "min_retry_concurrency": 5,
        },
        # Expose remaining capacity as gauges (circuit_breakers.<priority>.remaining_rq).
        "track_remaining": True,
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


def _route_action(service: Service, method: Method | None, targets: Mapping[str, int], listener: str) -> dict[str, Any]:
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
    # The listener's own circuit-breaker thresholds (see _cluster).
    action["priority"] = LISTENER_PRIORITY[listener]
    streaming = method is None or method.streaming
    if streaming or service.timeout_seconds == 0:
        action["timeout"] = "0s"
    else:
        action["timeout"] = duration(service.timeout_seconds)
        # The caller's grpc-timeout is honoured up to the route's timeout. The
        # route timeout starts only once the request is complete, so a call
        # whose request never completes (a truncated gRPC frame, a client that
        # stalls) is also bounded from its start, by the same time.
        action["max_stream_duration"] = {
            "max_stream_duration": duration(service.timeout_seconds),
            "grpc_timeout_header_max": duration(service.timeout_seconds),
        }
        if method is not None and method.retry_safe:
            action["retry_policy"] = {
                "retry_on": _retry_on(method),
                "num_retries": 2,
                "per_try_timeout": duration(service.per_try_timeout_seconds),
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


def _retry_on(method: Method) -> str:
    """When Envoy retries a call that is safe to retry.

    Always when the call never reached the service (connect-failure,
    refused-stream) or the service answered UNAVAILABLE (it did nothing:
    shutting down, or payments' PROCESSOR_UNAVAILABLE). After a reset, which
    may come after the service did the work, only reads: a mutation's caller
    (the saga) must learn that its call is in doubt, and Envoy marks a reply it
    made itself without forwarding the call (see bootstrap.py), which would
    hide an earlier attempt that did reach the service.
    """
    never_reached = "unavailable,connect-failure,refused-stream"
    return f"{never_reached},reset" if method.read_only else never_reached


def _denied(path: str, service: Service) -> dict[str, Any]:
    return {
        "name": f"deny {path}",
        # Any request, not only gRPC ones: Envoy picks a gRPC-Web call's
        # route before its grpc_web filter makes it gRPC, and a browser's
        # preflight must be refused here too, with 403, not a 404.
        "match": {"path": path},
        # Envoy answers a gRPC request's local reply as gRPC: HTTP 403 becomes
        # grpc-status 7 (PERMISSION_DENIED) with this text as grpc-message.
        "direct_response": {
            "status": 403,
            "body": {"inline_string": f"{path} is internal to the shop; call it on the internal listener"},
        },
        # The refusal needs no message: the frame check would wait for one
        # that a body-less request never sends.
        "typed_per_filter_config": {
            "envoy.filters.http.grpc_field_extraction": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
        },
    }


def _origin_matcher(origin: str) -> dict[str, Any]:
    """stack.toml's cors_origins entry as an Envoy string matcher."""
    if origin.endswith(":*"):
        return {"safe_regex": {"regex": re.escape(origin[:-2]) + "(:[0-9]+)?"}}
    return {"exact": origin}


def _cors_policy(topology: Topology) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [_origin_matcher(o) for o in topology.cors_origins],
        "allow_methods": "GET, POST, OPTIONS",
        "allow_headers": _CORS_ALLOW_HEADERS,
        "expose_headers": _CORS_EXPOSE_HEADERS,
        "max_age": "600",
        # A preflight from another origin is answered here too (without the
        # CORS headers, so the browser refuses), never sent to a service.
        "forward_not_matching_preflights": False,
    }


def _preflight(topology: Topology, routing: Routing) -> dict[str, Any]:
    """Every CORS preflight, answered by the CORS filter itself.

    Envoy's CORS filter acts only on a route that forwards, and a JSON route's
    preflight (OPTIONS /v1/orders) matches no RPC route: the transcoder maps
    only the real method. So this route, after every other, takes the
    preflights left; with forward_not_matching_preflights off the filter
    answers all of them (allowed origins get the CORS headers, others none),
    and the cluster named here never sees one. An internal RPC's preflight
    never gets here: its refusal (a 403) answers it first.
    """
    present = {"present_match": True}
    return {
        "name": "CORS preflight",
        "match": {
            "prefix": "/",
            "headers": [
                {"name": ":method", "string_match": {"exact": "OPTIONS"}},
                {"name": "origin", **present},
                {"name": "access-control-request-method", **present},
            ],
        },
        "route": {
            "cluster": topology.services["reflection"].implementations[next(iter(routing["reflection"]))].cluster,
            # The public listener's budget, like every public route (it never forwards anyway).
            "priority": LISTENER_PRIORITY["public"],
        },
    }


def _static(path: str, body: dict[str, Any], content_type: str) -> dict[str, Any]:
    return {
        "name": f"storefront {path}",
        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": 200, "body": body},
        "response_headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in (
                ("content-type", content_type),
                # Files change with every `make build`; the browser revalidates.
                ("cache-control", "no-cache"),
                ("x-content-type-options", "nosniff"),
            )
        ],
    }


def storefront_files(dist: Path | None = None) -> dict[str, Path]:
    """The built storefront by URL path: index.html at "/", the rest under their names."""
    dist = dist or WEB_DIST
    if not (dist / "index.html").is_file():
        return {}
    files = {"/": dist / "index.html"}
    for path in sorted(dist.rglob("*")):
        if path.is_file() and path.name != "index.html":
            files["/" + path.relative_to(dist).as_posix()] = path
    return files


def _storefront_routes(topology: Topology, routing: Routing, mode: Mode) -> list[dict[str, Any]]:
    """The storefront (web/dist), served by Envoy itself on the API's origin.

    Each built file is a direct_response Envoy reads when it loads the routes.
    /storefront.json tells the page which implementations of each service run
    and their weights (so the "under the hood" panel can offer to pin one),
    and, when the stack traces, the port of Zipkin's UI (so each call links to
    its trace); it is rewritten with the routes on every swap and canary.
    """
    web_dir = mode.web_dir
    dist = WEB_DIST
    files = storefront_files(dist)
    if not files:
        return [
            {
                "name": "storefront not built",
                "match": {"path": "/"},
                "direct_response": {
                    "status": 404,
                    "body": {"inline_string": "The storefront is not built: run `make build`, then `make up`.\n"},
                },
            }
        ]
    entries = []
    for url, path in files.items():
        if path.stat().st_size > MAX_STATIC_FILE_BYTES:
            raise ValueError(f"{path} is over {MAX_STATIC_FILE_BYTES} bytes, Envoy's direct_response limit here")
        served = f"{web_dir}/{path.relative_to(dist).as_posix()}"
        content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        entries.append(_static(url, {"filename": served}, content_type))
    config = {
        name: {
            "implementations": sorted(topology.services[name].implementations),
            "weights": dict(sorted(weights.items())),
        }
        for name, weights in routing.items()
        if name != "reflection"
    }
    # The operator scope: the panel offers pinning only to a token with it.
    storefront: dict[str, Any] = {"services": config, "operator_scope": topology.security.operator_scope}
    if mode.zipkin is not None:
        # Zipkin serves its UI on the port it takes spans on; the page links
        # to it on the host it was itself loaded from.
        storefront["trace_ui_port"] = mode.zipkin[1]
    entries.append(_static(STOREFRONT_CONFIG_PATH, {"inline_string": json.dumps(storefront)}, "application/json"))
    return entries


def _operator_scope(topology: Topology) -> dict[str, Any]:
    """A header matcher: the verified token's scopes include the operator scope."""
    scope = re.escape(topology.security.operator_scope)
    return {"name": _SCOPE_HEADER, "string_match": {"safe_regex": {"regex": f"(.* )?{scope}( .*)?"}}}


def routes(
    topology: Topology,
    routing: Routing,
    listener: str,
    rpcs: Mapping[str, list[Method]],
    mode: Mode | None = None,
) -> dict[str, Any]:
    """rds_<listener>.yaml: one route per RPC, plus the reflection route.

    Given the mode, the public listener also serves the OpenAPI document and
    its page (docs.py) and the storefront from mode.web_dir (where Envoy finds
    web/dist), and answers CORS preflights for the JSON routes under /v1/.
    """
    public = listener == "public"
    entries: list[dict[str, Any]] = []
    if public and mode:
        entries.extend(docs.routes(mode))
        entries.extend(_storefront_routes(topology, routing, mode))
    for name, targets in routing.items():
        service = topology.services[name]
        if name == "reflection":
            continue
        for method in rpcs.get(service.proto, []):
            if public and service.is_internal(method.name):
                entries.append(_denied(method.path, service))
                continue
            # While two implementations run, x-shop-impl pins a call to one:
            # on the internal listener for any caller (all hold the shop's
            # certificates), on the public one only with an operator token.
            pinnable = sorted(targets) if len(targets) > 1 else []
            for lang in pinnable:
                headers: list[dict[str, Any]] = [{"name": IMPL_HEADER, "string_match": {"exact": lang}}]
                if public:
                    headers.append(_operator_scope(topology))
                entries.append(
                    {
                        "name": f"{method.path} pinned to {lang}",
                        # No gRPC matcher: Envoy picks a gRPC-Web call's route
                        # before its grpc_web filter makes it gRPC.
                        "match": {"path": method.path, "headers": headers},
                        "route": _route_action(service, method, {lang: 1}, listener),
                    }
                )
            entry: dict[str, Any] = {
                "name": method.path,
                "match": {"path": method.path},
                "route": _route_action(service, method, targets, listener),
            }
            if public:
                # Anyone else's x-shop-impl goes no further.
                entry["request_headers_to_remove"] = [IMPL_HEADER]
            entries.append(entry)
    reflection = topology.services["reflection"]
    api_reflection: dict[str, Any] = {
        "name": "api reflection",
        "match": {"prefix": "/grpc.reflection."},
        "route": _route_action(reflection, None, routing["reflection"], listener),
    }
    hidden = sorted(
        service.proto
        for name, service in topology.services.items()
        if name != "reflection"
        and rpcs.get(service.proto)
        and all(service.is_internal(m.name) for m in rpcs[service.proto])
    )
    # grpc.health.v1 at the edge (grpc_health_probe -addr <listener>): the API
    # reflection server, reached through Envoy, answers "" for the edge itself
    # and, for a shop service, whether Envoy has a healthy host in a cluster
    # taking its traffic (from Envoy's admin; envoy/README.md). The header
    # names those clusters, per service a caller of this listener may call.
    asked = {
        topology.services[name].proto: sorted(
            topology.services[name].implementations[lang].cluster for lang, weight in targets.items() if weight > 0
        )
        for name, targets in sorted(routing.items())
        if name != "reflection" and not (public and topology.services[name].proto in hidden)
    }
    entries.append(
        {
            "name": "edge health",
            "match": {"prefix": "/grpc.health.v1.Health/"},
            "route": _route_action(reflection, None, routing["reflection"], listener),
            "request_headers_to_add": [
                {
                    "header": {
                        "key": HEALTH_CLUSTERS_HEADER,
                        "value": ";".join(f"{proto}={','.join(clusters)}" for proto, clusters in sorted(asked.items())),
                    },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
    )
    if public:
        # Public reflection lists only services with at least one public RPC:
        # the reflection server leaves out what this header names.
        api_reflection["request_headers_to_add"] = [
            {
                "header": {"key": REFLECTION_HIDE_HEADER, "value": ",".join(hidden)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    entries.append(api_reflection)
    if public:
        # Last: an internal RPC's refusal above answers its preflight too.
        entries.append(_preflight(topology, routing))
    virtual_host: dict[str, Any] = {
        "name": "shop",
        "domains": ["*"],
        "routes": entries,
        "request_headers_to_add": [
            {
                "header": {"key": CLIENT_ADDRESS_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }
    if public:
        virtual_host["typed_per_filter_config"] = {"envoy.filters.http.cors": _cors_policy(topology)}
        # Which implementation served the call (inventory-go, ...): the
        # storefront's "under the hood" panel shows it. Empty, and so left
        # out, on Envoy's own answers (static files, refusals).
        virtual_host["response_headers_to_add"] = [
            {
                "header": {"key": IMPL_HEADER, "value": "%UPSTREAM_CLUSTER%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    route_config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": listener,
        "virtual_hosts": [virtual_host],
    }
    if public and mode:
        # The storefront's files and swagger-ui's bundle are direct responses.
        route_config["max_direct_response_body_size_bytes"] = max(MAX_STATIC_FILE_BYTES, docs.MAX_BODY_BYTES)
    return {"resources": [route_config]}
