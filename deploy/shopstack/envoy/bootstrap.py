"""envoy.yaml, the static bootstrap: admin, the two listeners and their filters.

It changes only when the topology's edge does (ports, filters); a swap or a
canary never rewrites it. The listeners read their routes, and Envoy its
clusters, from the watched dynamic files that dynamic.py renders.
"""

from __future__ import annotations

from typing import Any

from shopstack.envoy.common import Mode, address, path_source
from shopstack.topology import ListenerLimits, Topology, methods

# Envoy marks a reply it made itself without forwarding the call with this
# header, holding its response flags: UH (no healthy upstream), UO (a circuit
# breaker's overflow), UF (no connection to the host could be made). The saga
# (python_services/src/shop_services/orders/clients.py) retries such a call and
# never counts it as "in doubt". Mutations are never retried by Envoy after a
# reset (dynamic.py), so the marker cannot hide an earlier attempt that
# reached the service.
NOT_FORWARDED_HEADER = "x-shop-not-forwarded"
_NOT_FORWARDED_FLAGS = ["UH", "UO", "UF"]
# The gRPC status code RESOURCE_EXHAUSTED.
_RESOURCE_EXHAUSTED = "8"

# A request path whose percent-encoding is sound: every % starts an escape of
# two hex digits, and the escaped bytes form UTF-8 (a lead byte followed by
# its continuation bytes). RE2 matches the whole path.
_CONT = "%[89ABab][0-9A-Fa-f]"
SOUND_PATH = (
    "([^%]|%[0-7][0-9A-Fa-f]"
    f"|%[Cc][2-9A-Fa-f]{_CONT}|%[Dd][0-9A-Fa-f]{_CONT}"
    f"|%[Ee][0-9A-Fa-f]({_CONT}){{2}}|%[Ff][0-4]({_CONT}){{3}})*"
)
_BAD_PATH_MESSAGE = (
    "The request path has bad percent-encoding: every % must start two hex digits, and the escaped bytes must be UTF-8."
)

# Headers only Envoy may set: the verified customer and scopes of a token
# (from jwt_authn's claim_to_headers). Whatever a caller sends in them is
# removed at the public listener before the token is checked.
CUSTOMER_HEADER = "x-shop-customer"
SCOPE_HEADER = "x-shop-scope"
JWT_PROVIDER = "shop"
# A caller's x-request-id is kept when it looks like an id: at most this long,
# letters, digits and - _ . : only. Anything else is replaced by a fresh UUID,
# so it never reaches a log verbatim.
REQUEST_ID_MAX = 128
_REQUEST_ID_LUA = """
local seeded = false
local function fresh_id()
  if not seeded then
    -- one Lua state per worker: mix the time with this state's own address
    local here = tonumber(string.match(tostring({}), "0x(%x+)") or "0", 16)
    math.randomseed((os.time() * 1000003 + math.floor(os.clock() * 1e6) + here) % 2147483647)
    seeded = true
  end
  local b = {}
  for i = 1, 16 do b[i] = math.random(0, 255) end
  b[7] = bit.bor(bit.band(b[7], 0x0f), 0x40)
  b[9] = bit.bor(bit.band(b[9], 0x3f), 0x80)
  return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", unpack(b))
end

function envoy_on_request(handle)
  local id = handle:headers():get("x-request-id")
  if id == nil then
    return
  end
  if #id <= MAX and string.find(id, "^[%w%-_.:]+$") ~= nil then
    return
  end
  handle:headers():replace("x-request-id", fresh_id())
end
""".replace("MAX", str(REQUEST_ID_MAX))

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


# jwt_authn answers a token whose audience is not ours with 403; a token that
# is not for this API authenticates nobody, so the edge answers it like every
# other bad token: 401, which gRPC callers see as UNAUTHENTICATED.
def _jwt_denied_is_unauthenticated() -> dict[str, Any]:
    return {
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": "response.code == 403 && response.code_details.startsWith('jwt_authn')",
                },
            }
        },
        "status_code": 401,
    }


def _not_forwarded_mapper() -> dict[str, Any]:
    return {
        "filter": {"response_flag_filter": {"flags": _NOT_FORWARDED_FLAGS}},
        "headers_to_add": [
            {
                "header": {"key": NOT_FORWARDED_HEADER, "value": "%RESPONSE_FLAGS%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def _overflow_mapper() -> dict[str, Any]:
    """A public client past its listener's share of a service: RESOURCE_EXHAUSTED, saying so.

    Envoy answers a gRPC call's overflow with UNAVAILABLE, which a client
    would retry at once; RESOURCE_EXHAUSTED tells it that it is the one asking
    too much. The status is rewritten in the (trailers-only) headers.
    """
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    {"response_flag_filter": {"flags": ["UO"]}},
                    {
                        "header_filter": {
                            "header": {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
                        }
                    },
                ]
            }
        },
        "headers_to_add": [
            {
                "header": {"key": "grpc-status", "value": _RESOURCE_EXHAUSTED},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
            {
                "header": {"key": NOT_FORWARDED_HEADER, "value": "%RESPONSE_FLAGS%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
        ],
        "body": {
            "inline_string": "Too many concurrent calls from the public listener to this service "
            "(stack.toml [limits.public]); close some streams or retry later."
        },
    }


def _bad_path_header() -> dict[str, Any]:
    return {"name": ":path", "string_match": {"safe_regex": {"regex": SOUND_PATH}}, "invert_match": True}


def _bad_path_check() -> dict[str, Any]:
    """Refuse a path with bad percent-encoding before the JSON transcoder binds it to a field.

    Otherwise `GET /v1/products/%FF%FE` reaches the catalog as a string that is
    not UTF-8, and comes back as HTTP 500. Envoy's RBAC filter denies it (403),
    and _bad_path_mapper turns that into 400 with a message.
    """
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "DENY",
                "policies": {
                    "bad percent-encoding": {
                        "permissions": [{"header": _bad_path_header()}],
                        "principals": [{"any": True}],
                    }
                },
            },
        },
    }


def _bad_path_mapper() -> dict[str, Any]:
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    {
                        "status_code_filter": {
                            "comparison": {
                                "op": "EQ",
                                "value": {"default_value": 403, "runtime_key": "bad_path.status"},
                            }
                        }
                    },
                    {"header_filter": {"header": _bad_path_header()}},
                ]
            }
        },
        "status_code": 400,
        "body": {"inline_string": _BAD_PATH_MESSAGE},
        "body_format_override": _status_json(3),
    }


# The gRPC code (google.rpc.Code) of each HTTP status Envoy answers with by
# itself, the inverse of the transcoder's mapping for upstream errors.
_LOCAL_REPLY_CODES = {
    400: 3,  # INVALID_ARGUMENT: a body or query the transcoder cannot parse
    401: 16,  # UNAUTHENTICATED: a missing or bad token (jwt_authn)
    403: 7,  # PERMISSION_DENIED: an internal RPC on the public listener
    404: 5,  # NOT_FOUND: no route
    413: 8,  # RESOURCE_EXHAUSTED: a body over the buffer limit
    429: 8,  # RESOURCE_EXHAUSTED
    503: 14,  # UNAVAILABLE: no healthy upstream, overflow
    504: 4,  # DEADLINE_EXCEEDED: the route's timeout
}


_NO_ROUTE = "no route for this path; the JSON API's routes are in /openapi.json, rendered at /docs"


def _status_json(code: int) -> dict[str, Any]:
    return {
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
        "content_type": "application/json",
    }


def _local_replies(listener: str) -> dict[str, Any]:
    """Envoy's own replies: the first mapper whose filter matches applies.

    Public listener, in order: jwt_authn's 403 (a token for another audience)
    becomes 401, so no later mapper can turn a token's refusal into anything
    else; the 403 of the bad-path RBAC filter becomes 400 (its header filter
    requires the path that filter refuses, and that filter runs before
    jwt_authn); a public client's overflow becomes RESOURCE_EXHAUSTED; then
    JSON callers get google.rpc.Status JSON for whatever else Envoy answers.
    Both listeners end with the not-forwarded marker the saga reads.
    """
    public = _public_local_replies() if listener == "public" else []
    return {"mappers": [*public, _not_forwarded_mapper()]}


def _public_local_replies() -> list[dict[str, Any]]:
    """Envoy's own error replies to JSON callers as google.rpc.Status JSON.

    Upstream errors reach JSON callers as google.rpc.Status already (the
    transcoder's convert_grpc_status). What Envoy answers itself (a malformed
    body or query, no route) would be plain text; these mappers give them the
    same shape. gRPC and gRPC-Web callers are left alone: Envoy answers them
    with grpc-status and grpc-message.
    """

    def json_caller() -> dict[str, Any]:
        # The transcoder marks a request it transcoded with x-envoy-original-path
        # (its content-type is application/grpc by then); any other request
        # that is not gRPC or gRPC-Web is a plain HTTP caller's.
        return {
            "or_filter": {
                "filters": [
                    {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
                    {
                        "header_filter": {
                            "header": {
                                "name": "content-type",
                                "string_match": {"prefix": "application/grpc"},
                                "invert_match": True,
                                "treat_missing_header_as_empty": True,
                            }
                        }
                    },
                ]
            }
        }

    mappers = [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        json_caller(),
                        {
                            "status_code_filter": {
                                "comparison": {
                                    "op": "EQ",
                                    "value": {"default_value": status, "runtime_key": f"local_reply.status_{status}"},
                                }
                            }
                        },
                    ]
                }
            },
            "body_format_override": _status_json(code),
            **({"body": {"inline_string": _NO_ROUTE}} if status == 404 else {}),
        }
        for status, code in _LOCAL_REPLY_CODES.items()
    ]
    # Any other status Envoy answers with by itself: UNKNOWN.
    mappers.append(
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        json_caller(),
                        {
                            "status_code_filter": {
                                "comparison": {
                                    "op": "GE",
                                    "value": {"default_value": 400, "runtime_key": "local_reply.status_min"},
                                }
                            }
                        },
                    ]
                }
            },
            "body_format_override": _status_json(2),
        }
    )
    # A token jwt_authn refuses as not ours (403) is answered as any other bad
    # token (401, UNAUTHENTICATED): to a JSON caller as a google.rpc.Status,
    # to everyone else as main's mapper does.
    jwt_denied = _jwt_denied_is_unauthenticated()
    json_jwt_denied = {
        "filter": {"and_filter": {"filters": [json_caller(), jwt_denied["filter"]]}},
        "status_code": 401,
        "body_format_override": _status_json(16),
    }
    return [json_jwt_denied, jwt_denied, _bad_path_mapper(), _overflow_mapper(), *mappers]


def _hcm(mode: Mode, listener: str, filters: list[dict[str, Any]], limits: ListenerLimits) -> dict[str, Any]:
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
            # Callers learn the id their call is logged under (their own, or
            # the one made for them, or the one that replaced a malformed one).
            "always_set_request_id_in_response": True,
            "rds": {
                "route_config_name": listener,
                "config_source": path_source(mode, f"rds_{listener}.yaml"),
            },
            "http_filters": [*filters, _grpc_stats(), _router()],
            "access_log": _access_log(listener),
            "local_reply_config": _local_replies(listener),
            **_tracing(mode),
            # Long-lived streams (WatchStock, WatchOrder) end when idle this long.
            "stream_idle_timeout": "300s",
            # A client connection that sends nothing (a half-open or stalled
            # connection) is closed, so it cannot hold a slot forever.
            "common_http_protocol_options": {"idle_timeout": "600s"},
            # The streams one client connection may have open at once (stack.toml).
            "http2_protocol_options": {"max_concurrent_streams": limits.max_concurrent_streams_per_connection},
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
    OpenTelemetry SDKs speak W3C, continue the same trace.

    random_sampling decides for requests that carry no sampling decision,
    and Envoy draws it from the x-request-id's random bits (UUID4), which it
    generates when the caller sends none. `use_request_id_for_trace_sampling:
    false` looks like "sample at random instead", but Envoy 1.40 then traces
    every request whatever random_sampling says (two spans exported per
    request: measured in docs/observability.md, "Overhead"). So a caller's
    own x-request-id that is not a UUID is not sampled at random; a sampled
    traceparent traces it. pack_trace_reason is off so that Envoy never
    rewrites a caller's request id (it would set the UUID's 14th nibble to
    the trace decision, and `grep <x-request-id>` would miss the services'
    lines).
    """
    if mode.zipkin is None:
        return {}
    return {
        "request_id_extension": {
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "pack_trace_reason": False,
                "use_request_id_for_trace_sampling": True,
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


def _frame_check(mode: Mode) -> dict[str, Any]:
    """Bad gRPC framing is refused at the edge, INVALID_ARGUMENT, before any service sees it.

    grpc_field_extraction parses each call's first request message against the
    descriptor set (extracting one string field, which nothing reads: the parse
    is the point). A message whose compressed flag is not 0 (this edge accepts
    no compressed requests), or a frame shorter than its length prefix, is
    answered at once with INVALID_ARGUMENT. Without it, the Python services
    (grpcio) read a frame with a bad flag as an empty request, and wait forever
    for the rest of a truncated frame; Node ignores the flag (docs/reliability.md).
    Client-streaming methods (QuoteCart, ImportStock) are not covered: a client
    stream may send no message at all, which the filter would refuse.
    """
    extractions = {
        f"{method.service}.{method.name}": {"request_field_extractions": {method.request_string_field: {}}}
        for rpcs in methods().values()
        for method in rpcs
        # A client stream may legitimately send no message at all, which the
        # filter would refuse; its frames are left to the services.
        if method.request_string_field and not method.client_streaming
    }
    return {
        "name": "envoy.filters.http.grpc_field_extraction",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_field_extraction.v3.GrpcFieldExtractionConfig",
            "descriptor_set": {"filename": mode.descriptor_set},
            "extractions_by_method": extractions,
        },
    }


def _rate_limit(limits: ListenerLimits) -> dict[str, Any]:
    """A token bucket for the whole public listener; past it, RESOURCE_EXHAUSTED (HTTP 429 for JSON)."""
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "public_rate_limit",
            "token_bucket": {
                "max_tokens": limits.burst,
                "tokens_per_fill": limits.requests_per_second,
                "fill_interval": "1s",
            },
            "filter_enabled": {"default_value": {"numerator": 100}, "runtime_key": "public_rate_limit.enabled"},
            "filter_enforced": {"default_value": {"numerator": 100}, "runtime_key": "public_rate_limit.enforced"},
            "rate_limited_as_resource_exhausted": True,
            "response_headers_to_add": [
                {
                    "header": {"key": "x-shop-rate-limited", "value": "true"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        },
    }


# An x-request-id the edge keeps as it is (what the Lua filter above accepts).
_GOOD_REQUEST_ID = f"[A-Za-z0-9_.:-]{{1,{REQUEST_ID_MAX}}}"


def _request_id_filter() -> dict[str, Any]:
    """The Lua filter that replaces a malformed x-request-id, run only when the id is malformed.

    The connection manager has set x-request-id before any filter runs (its
    own UUID when the caller sent none), so nearly every request carries an
    id Lua would keep: a matcher on the header skips the filter for those,
    which saves starting a Lua coroutine per request (envoy/README.md,
    "Performance"). The Lua code still checks the id itself, so the two
    cannot disagree in the unsafe direction.
    """
    lua = {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": _REQUEST_ID_LUA},
        },
    }
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": lua,
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": {
                                "single_predicate": {
                                    "input": {
                                        "name": "request-id",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                                            "header_name": "x-request-id",
                                        },
                                    },
                                    "value_match": {"safe_regex": {"google_re2": {}, "regex": _GOOD_REQUEST_ID}},
                                }
                            },
                            "on_match": {
                                "action": {
                                    "name": "skip",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
                                    },
                                }
                            },
                        }
                    ]
                }
            },
        },
    }


def _strip_identity_headers() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": CUSTOMER_HEADER}, {"remove": SCOPE_HEADER}]},
        },
    }


def _customer_paths(topology: Topology) -> list[dict[str, Any]]:
    """jwt_authn match rules for the RPCs that need a customer token (customer_rpcs)."""
    rpcs = methods()
    matches: list[dict[str, Any]] = []
    for service in topology.services.values():
        if "*" in service.customer_rpcs:
            matches.append({"prefix": f"/{service.proto}/"})
            continue
        for method in rpcs.get(service.proto, []):
            if service.needs_customer(method.name):
                matches.append({"path": method.path})
    return matches


def _jwt_filter(topology: Topology, mode: Mode) -> dict[str, Any]:
    """Customer tokens: required on customer_rpcs, optional (but checked when sent) elsewhere.

    A verified token's subject and scopes reach the services as
    x-shop-customer and x-shop-scope; a missing, expired, forged or foreign
    token on a customer RPC is answered 401 (UNAUTHENTICATED) with jwt_authn's
    reason ("Jwt is missing", "Jwt is expired", "Jwt issuer is not configured",
    "Audiences in Jwt are not allowed", "Jwt verification fails").
    """
    security = topology.security
    required = {"provider_name": JWT_PROVIDER}
    optional = {"requires_any": {"requirements": [required, {"allow_missing": {}}]}}
    rules = [{"match": match, "requires": required} for match in _customer_paths(topology)]
    rules.append({"match": {"prefix": "/"}, "requires": optional})
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                JWT_PROVIDER: {
                    "issuer": security.token_issuer,
                    "audiences": [security.token_audience],
                    "local_jwks": {"filename": mode.jwks},
                    # The token itself goes no further than the edge.
                    "forward": False,
                    "claim_to_headers": [
                        {"header_name": CUSTOMER_HEADER, "claim_name": "sub"},
                        {"header_name": SCOPE_HEADER, "claim_name": "scope"},
                    ],
                    # Routes may depend on the verified scope (the x-shop-impl pin).
                    "clear_route_cache": True,
                }
            },
            "rules": rules,
            "bypass_cors_preflight": True,
        },
    }


def _rbac_filter(topology: Topology) -> dict[str, Any]:
    """Who may call what on the internal listener, by the peer certificate's
    SPIFFE id ([security.internal_access] in stack.toml); the rest is 403,
    which gRPC callers get as PERMISSION_DENIED."""
    security = topology.security
    policies = {}
    for identity, rpcs in security.internal_access.items():
        if "*" in rpcs:
            permissions: list[dict[str, Any]] = [{"any": True}]
        else:
            permissions = [{"url_path": {"path": {"exact": path}}} for path in rpcs]
        policies[identity] = {
            "permissions": permissions,
            "principals": [{"authenticated": {"principal_name": {"exact": security.spiffe_id(identity)}}}],
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies},
        },
    }


def _downstream_tls(mode: Mode, cert: str, alpn: list[str], client_certificate: bool) -> dict[str, Any]:
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [mode.cert(cert)],
            "alpn_protocols": alpn,
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        },
    }
    if client_certificate:
        context["require_client_certificate"] = True
        context["common_tls_context"]["validation_context"] = {"trusted_ca": mode.trusted_ca}
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _public_filters(topology: Topology, mode: Mode, limits: ListenerLimits) -> list[dict[str, Any]]:
    return [
        _request_id_filter(),
        _strip_identity_headers(),
        *_trace_id_header(mode),
        {
            "name": "envoy.filters.http.grpc_web",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"},
        },
        # Before the transcoder, which would bind a bad path to a string field.
        _bad_path_check(),
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
        # Before jwt_authn: the CORS filter answers every preflight itself (a
        # preflight carries no token), and jwt_authn's 401 passes back through
        # it, so a page on another origin can read why it was refused.
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
        # After CORS, so a preflight is answered whatever the bucket holds.
        _rate_limit(limits),
        # After gRPC-Web and the transcoder, which turn a browser's or a JSON
        # caller's request into gRPC frames.
        _frame_check(mode),
        # After the transcoder, so a JSON call is checked by its gRPC method.
        _jwt_filter(topology, mode),
    ]


def bootstrap(topology: Topology, mode: Mode) -> dict[str, Any]:
    """envoy.yaml: admin, the two listeners, and the watched dynamic files."""
    limits = topology.limits
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
        # Envoy's own limits (stack.toml [limits.edge]): downstream connections and heap.
        "overload_manager": _overload_manager(topology),
        "static_resources": {
            "listeners": [
                {
                    # TLS for everyone (customers have tokens, not certificates);
                    # ALPN offers h2 for gRPC and http/1.1 for JSON and gRPC-Web.
                    "name": "public",
                    "address": address(mode.listen_host, topology.public_port),
                    "filter_chains": [
                        {
                            "filters": [
                                _hcm(mode, "public", _public_filters(topology, mode, limits.public), limits.public)
                            ],
                            "transport_socket": _downstream_tls(mode, "edge", ["h2", "http/1.1"], False),
                        }
                    ],
                },
                {
                    # Mutual TLS: only holders of a certificate from the shop's CA
                    # connect; RBAC then allows each identity its own RPCs.
                    "name": "internal",
                    "address": address(mode.internal_host, topology.internal_port),
                    "filter_chains": [
                        {
                            # RBAC first: a caller that may not make this call is
                            # refused before anything reads its message.
                            "filters": [
                                _hcm(
                                    mode,
                                    "internal",
                                    [_rbac_filter(topology), _frame_check(mode), *_fault_filters(topology)],
                                    limits.internal,
                                )
                            ],
                            "transport_socket": _downstream_tls(mode, "envoy", ["h2"], True),
                        }
                    ],
                },
            ],
            "clusters": _zipkin_cluster(mode),
        },
    }


def _overload_manager(topology: Topology) -> dict[str, Any]:
    """Envoy protects itself: a cap on downstream connections, and heap pressure actions (stack.toml [limits.edge])."""
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": topology.limits.max_downstream_connections,
                },
            },
            {
                "name": "envoy.resource_monitors.fixed_heap",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": topology.limits.max_heap_bytes,
                },
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": 0.95}}],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": 0.98}}],
            },
        ],
    }
