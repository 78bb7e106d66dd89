"""Envoy's generated configuration: the rules the edge promises, checked per RPC.

These read the rendered configuration; tests/e2e and tests/faults check the
same rules against a running Envoy.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from shopstack import envoy, pki, topology
from shopstack.stack import VENV_BIN

TOPOLOGY = topology.load()
RPCS = topology.methods()


def routes_by_path(listener: str, routing: envoy.Routing | None = None) -> dict[str, list[dict]]:
    config = envoy.routes(TOPOLOGY, routing or envoy.default_routing(TOPOLOGY), listener, RPCS)
    found: dict[str, list[dict]] = {}
    for route in config["resources"][0]["virtual_hosts"][0]["routes"]:
        key = route["match"].get("path") or route["match"]["prefix"]
        found.setdefault(key, []).append(route)
    return found


def all_methods() -> list[topology.Method]:
    return [m for service in TOPOLOGY.services.values() for m in RPCS.get(service.proto, [])]


def service_of(method: topology.Method) -> topology.Service:
    return next(s for s in TOPOLOGY.services.values() if s.proto == method.service)


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.path)
def test_every_rpc_has_a_route_on_both_listeners(method: topology.Method) -> None:
    assert method.path in routes_by_path("public")
    assert method.path in routes_by_path("internal")


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.path)
def test_internal_rpcs_are_refused_publicly_and_served_internally(
    method: topology.Method,
) -> None:
    public = routes_by_path("public")[method.path][0]
    internal = routes_by_path("internal")[method.path][0]
    assert "route" in internal, internal
    if service_of(method).is_internal(method.name):
        assert public["direct_response"]["status"] == 403, public
    else:
        assert "route" in public, public


def test_internal_rpcs_are_the_ones_the_issue_names() -> None:
    internal = sorted(m.path for m in all_methods() if service_of(m).is_internal(m.name))
    assert internal == sorted(
        [
            "/shop.inventory.v1.InventoryService/Reserve",
            "/shop.inventory.v1.InventoryService/Commit",
            "/shop.inventory.v1.InventoryService/Release",
            "/shop.inventory.v1.InventoryService/ImportStock",
            "/shop.payments.v1.PaymentService/Charge",
            "/shop.payments.v1.PaymentService/Refund",
            "/shop.payments.v1.PaymentService/GetPayment",
        ]
    )


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.path)
def test_timeouts_and_retries_follow_the_proto(method: topology.Method) -> None:
    action = routes_by_path("internal")[method.path][0]["route"]
    service = service_of(method)
    if method.streaming:
        assert action["timeout"] == "0s" and "retry_policy" not in action
        return
    assert action["timeout"] == f"{service.timeout_seconds:g}s"
    if method.retry_safe:
        policy = action["retry_policy"]
        assert 0 < policy["num_retries"] <= 3
        assert policy["per_try_timeout"] == f"{service.per_try_timeout_seconds:g}s"
        assert "unavailable" in policy["retry_on"]
    else:
        assert "retry_policy" not in action


def test_only_idempotent_rpcs_are_retried() -> None:
    retried = {m.name for m in all_methods() if m.retry_safe and not m.streaming}
    # QuoteCart and ImportStock stream; everything unary is a read or carries
    # a request_id (or is naturally idempotent, like Commit and Release).
    assert {
        "GetProduct",
        "Reserve",
        "Charge",
        "PlaceOrder",
        "Commit",
        "Refund",
    } <= retried


def test_reflection_goes_to_the_api_wide_reflection_server() -> None:
    route = routes_by_path("public")["/grpc.reflection."][0]
    assert route["route"]["cluster"] == TOPOLOGY.impl_of("reflection").cluster


def test_a_canary_splits_by_weight_and_the_header_pins_an_implementation() -> None:
    routing = {**envoy.default_routing(TOPOLOGY), "inventory": {"node": 90, "go": 10}}
    routes = routes_by_path("public", routing)["/shop.inventory.v1.InventoryService/GetStock"]
    pinned = {r["match"]["headers"][0]["string_match"]["exact"]: r["route"]["cluster"] for r in routes[:-1]}
    assert pinned == {"go": "inventory-go", "node": "inventory-node"}
    split = routes[-1]["route"]["weighted_clusters"]["clusters"]
    assert {c["name"]: c["weight"] for c in split} == {
        "inventory-go": 10,
        "inventory-node": 90,
    }


def _public_host(topo: topology.Topology = TOPOLOGY, web_dir: str | None = None) -> dict:
    mode = None if web_dir is None else replace(envoy.docker_mode(), web_dir=web_dir)
    config = envoy.routes(topo, envoy.default_routing(topo), "public", RPCS, mode)
    return config["resources"][0]["virtual_hosts"][0]


def test_cors_origins_come_from_stack_toml() -> None:
    topo = replace(TOPOLOGY, cors_origins=("https://shop.example", "http://localhost:*"))
    matchers = _public_host(topo)["typed_per_filter_config"]["envoy.filters.http.cors"]["allow_origin_string_match"]
    assert matchers[0] == {"exact": "https://shop.example"}
    regex = re.compile(matchers[1]["safe_regex"]["regex"])
    assert regex.fullmatch("http://localhost:3000") and regex.fullmatch("http://localhost")
    assert not regex.fullmatch("http://localhost.evil.example") and not regex.fullmatch("https://localhost:3000")
    assert TOPOLOGY.cors_origins, "deploy/stack.toml names the origins allowed by default"


def test_every_preflight_is_answered_by_the_cors_filter_and_responses_name_the_cluster() -> None:
    host = _public_host()
    preflight = host["routes"][-1]
    assert preflight["match"]["prefix"] == "/" and "route" in preflight, preflight
    assert [h["name"] for h in preflight["match"]["headers"]] == [":method", "origin", "access-control-request-method"]
    policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["forward_not_matching_preflights"] is False
    assert host["response_headers_to_add"][0]["header"] == {"key": "x-shop-impl", "value": "%UPSTREAM_CLUSTER%"}


def test_the_storefront_is_served_from_the_built_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "assets" / "app.js").write_text("export {}")
    (tmp_path / "assets" / "app.css").write_text("body {}")
    monkeypatch.setattr("shopstack.envoy.dynamic.WEB_DIST", tmp_path)
    routes = {r["match"].get("path"): r for r in _public_host(web_dir="/srv/web")["routes"]}
    served = {
        path: (r["direct_response"]["body"].get("filename"), r["response_headers_to_add"][0]["header"]["value"])
        for path, r in routes.items()
        if r["name"].startswith("storefront")
    }
    assert served == {
        "/": ("/srv/web/index.html", "text/html; charset=utf-8"),
        "/assets/app.css": ("/srv/web/assets/app.css", "text/css; charset=utf-8"),
        "/assets/app.js": ("/srv/web/assets/app.js", "text/javascript; charset=utf-8"),
        "/storefront.json": (None, "application/json"),
    }
    assert all(r["match"]["headers"][0]["string_match"] == {"exact": "GET"} for p, r in routes.items() if p in served)
    # Not built: "/" says how to build it rather than serving nothing.
    monkeypatch.setattr("shopstack.envoy.dynamic.WEB_DIST", tmp_path / "missing")
    root = next(r for r in _public_host(web_dir="/srv/web")["routes"] if r["match"].get("path") == "/")
    assert "make build" in root["direct_response"]["body"]["inline_string"]


def test_every_cluster_health_checks_ejects_and_limits() -> None:
    for cluster in envoy.clusters(TOPOLOGY, envoy.default_routing(TOPOLOGY), envoy.docker_mode())["resources"]:
        assert cluster["health_checks"][0]["grpc_health_check"] is not None, cluster["name"]
        outlier = cluster["outlier_detection"]
        # Unreachable hosts are ejected; a host answering gRPC errors is not.
        assert outlier["consecutive_local_origin_failure"] > 0
        assert outlier["split_external_local_origin_errors"] is True
        assert outlier["enforcing_consecutive_5xx"] == outlier["enforcing_consecutive_gateway_failure"] == 0
        thresholds = cluster["circuit_breakers"]["thresholds"][0]
        assert {
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "retry_budget",
        } <= set(thresholds)


@pytest.mark.parametrize("mode_name", ["local", "local-traced", "docker", "kubernetes"])
def test_envoy_accepts_the_generated_configuration(mode_name: str, tmp_path: Path) -> None:
    """`envoy --mode validate` on each generated configuration, dynamic parts inlined."""
    certs = pki.Certs(tmp_path / "certs", TOPOLOGY.security.trust_domain)
    pki.make_all(certs, TOPOLOGY.identities())
    if mode_name == "local":
        mode = envoy.local_mode(tmp_path, topology.DESCRIPTOR_SET, certs.directory)
    elif mode_name == "local-traced":
        mode = envoy.local_mode(
            tmp_path, topology.DESCRIPTOR_SET, certs.directory, zipkin_port=9411, sampling_ratio=0.25
        )
    else:
        # The container's files (the descriptor set, the certificates, the
        # OpenAPI document, its page's renderer and the storefront) are not at their container
        # paths here; everything else is the container's config.
        local = envoy.local_mode(tmp_path, topology.DESCRIPTOR_SET, certs.directory)
        container_mode = envoy.docker_mode() if mode_name == "docker" else envoy.kubernetes_mode()
        mode = replace(
            container_mode,
            descriptor_set=local.descriptor_set,
            certs_dir=local.certs_dir,
            openapi=local.openapi,
            docs_assets=local.docs_assets,
            web_dir=local.web_dir,
        )
    config = tmp_path / "envoy-static.yaml"
    config.write_text(yaml.safe_dump(envoy.static_bootstrap(TOPOLOGY, mode)))
    result = subprocess.run(
        [
            str(VENV_BIN / "envoy"),
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_each_listener_has_its_own_circuit_breaker_budget_from_stack_toml() -> None:
    limits = TOPOLOGY.limits
    for cluster in envoy.clusters(TOPOLOGY, envoy.default_routing(TOPOLOGY), envoy.docker_mode())["resources"]:
        by_priority = {t["priority"]: t for t in cluster["circuit_breakers"]["thresholds"]}
        for listener, priority in (("public", "DEFAULT"), ("internal", "HIGH")):
            mine = getattr(limits, listener)
            assert by_priority[priority]["max_requests"] == mine.max_requests_per_cluster, cluster["name"]
            assert by_priority[priority]["max_pending_requests"] == mine.max_pending_requests_per_cluster
            assert by_priority[priority]["max_connections"] == mine.max_connections_per_cluster
    for listener, priority in (("public", "DEFAULT"), ("internal", "HIGH")):
        for path, entries in routes_by_path(listener).items():
            for route in entries:
                if "route" in route:
                    assert route["route"]["priority"] == priority, (listener, path)


@pytest.mark.parametrize("method", [m for m in all_methods() if m.retry_safe and not m.streaming], ids=lambda m: m.path)
def test_envoy_retries_a_mutation_only_when_it_never_reached_the_service(method: topology.Method) -> None:
    """After a reset the saga must learn that a mutation is in doubt; reads are retried after resets too."""
    retry_on = set(routes_by_path("internal")[method.path][0]["route"]["retry_policy"]["retry_on"].split(","))
    assert {"connect-failure", "refused-stream", "unavailable"} <= retry_on
    assert ("reset" in retry_on) == method.read_only


def test_replies_envoy_makes_without_forwarding_are_marked_and_public_overflow_is_resource_exhausted() -> None:
    from shop_services.orders.clients import NOT_FORWARDED_HEADER  # the saga reads what Envoy writes

    assert envoy.NOT_FORWARDED_HEADER == NOT_FORWARDED_HEADER
    config = envoy.bootstrap(TOPOLOGY, envoy.docker_mode())
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        mappers = hcm["local_reply_config"]["mappers"]
        marked = mappers[-1]
        assert set(marked["filter"]["response_flag_filter"]["flags"]) == {"UH", "UO", "UF"}
        assert marked["headers_to_add"][0]["header"]["key"] == NOT_FORWARDED_HEADER
        limits = getattr(TOPOLOGY.limits, listener["name"])
        assert hcm["http2_protocol_options"]["max_concurrent_streams"] == limits.max_concurrent_streams_per_connection
        filters = [f["name"] for f in hcm["http_filters"]]
        if listener["name"] == "public":
            overflow = next(m for m in mappers if "grpc-status" in str(m.get("headers_to_add")))
            status = {h["header"]["key"]: h["header"]["value"] for h in overflow["headers_to_add"]}
            assert status["grpc-status"] == "8", "an overflowing public client gets RESOURCE_EXHAUSTED"
            assert "envoy.filters.http.local_ratelimit" in filters
            bucket = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.local_ratelimit")
            assert bucket["typed_config"]["token_bucket"]["tokens_per_fill"] == limits.requests_per_second
            assert bucket["typed_config"]["rate_limited_as_resource_exhausted"] is True
        else:
            assert "envoy.filters.http.local_ratelimit" not in filters, "the saga's calls are never rate limited"
    monitors = {m["name"]: m["typed_config"] for m in config["overload_manager"]["resource_monitors"]}
    connections = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert connections["max_active_downstream_connections"] == TOPOLOGY.limits.max_downstream_connections
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == TOPOLOGY.limits.max_heap_bytes


def test_health_checks_bring_a_restarted_host_back_within_a_fraction_of_a_second() -> None:
    for cluster in envoy.clusters(TOPOLOGY, envoy.default_routing(TOPOLOGY), envoy.docker_mode())["resources"]:
        check = cluster["health_checks"][0]
        assert check["healthy_threshold"] == 1
        assert float(check["unhealthy_interval"].rstrip("s")) <= 0.25
        assert float(check["no_traffic_interval"].rstrip("s")) <= 1
        # Ejection for unreachable hosts is short, and a passing health check ends it.
        assert float(cluster["outlier_detection"]["base_ejection_time"].rstrip("s")) <= 1


def test_both_listeners_check_grpc_framing_for_every_rpc() -> None:
    config = envoy.bootstrap(TOPOLOGY, envoy.docker_mode())
    for listener in config["static_resources"]["listeners"]:
        filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        check = next(f for f in filters if f["name"] == "envoy.filters.http.grpc_field_extraction")
        covered = set(check["typed_config"]["extractions_by_method"])
        expected = {f"{m.service}.{m.name}" for m in all_methods() if not m.client_streaming}
        assert covered == expected, listener["name"]


def test_public_reflection_hides_services_without_a_public_rpc_and_health_goes_to_the_edge_helper() -> None:
    public = routes_by_path("public")
    reflection = public["/grpc.reflection."][0]
    headers = {h["header"]["key"]: h["header"]["value"] for h in reflection["request_headers_to_add"]}
    assert headers == {envoy.REFLECTION_HIDE_HEADER: "shop.payments.v1.PaymentService"}
    assert "request_headers_to_add" not in routes_by_path("internal")["/grpc.reflection."][0]
    health = public["/grpc.health.v1.Health/"][0]
    assert health["route"]["cluster"] == TOPOLOGY.impl_of("reflection").cluster


def test_edge_health_names_the_clusters_taking_each_services_traffic_per_listener() -> None:
    routing = {**envoy.default_routing(TOPOLOGY), "inventory": {"node": 90, "go": 10, "python": 0}}

    def asked(listener: str) -> dict[str, str]:
        health = routes_by_path(listener, routing)["/grpc.health.v1.Health/"][0]
        assert health["route"]["cluster"] == TOPOLOGY.impl_of("reflection").cluster
        (header,) = health["request_headers_to_add"]
        assert header["header"]["key"] == envoy.HEALTH_CLUSTERS_HEADER
        return dict(entry.split("=") for entry in header["header"]["value"].split(";"))

    internal = asked("internal")
    assert internal["shop.inventory.v1.InventoryService"] == "inventory-go,inventory-node"  # weight 0 left out
    assert internal["shop.payments.v1.PaymentService"] == TOPOLOGY.impl_of("payments").cluster
    assert set(internal) == {s.proto for name, s in TOPOLOGY.services.items() if name != "reflection"}
    # The public listener answers only for services it serves an RPC of, as public reflection lists.
    assert set(asked("public")) == set(internal) - {"shop.payments.v1.PaymentService"}


@pytest.mark.parametrize("listener", ["public", "internal"])
def test_every_call_carries_the_client_address_envoy_saw_whatever_the_caller_sent(listener: str) -> None:
    config = envoy.routes(TOPOLOGY, envoy.default_routing(TOPOLOGY), listener, RPCS)
    (added,) = config["resources"][0]["virtual_hosts"][0]["request_headers_to_add"]
    assert added == {
        "header": {"key": envoy.CLIENT_ADDRESS_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def _listener(name: str) -> dict:
    config = envoy.bootstrap(TOPOLOGY, envoy.docker_mode())
    return next(lis for lis in config["static_resources"]["listeners"] if lis["name"] == name)


def _http_filters(listener: str) -> dict[str, dict]:
    hcm = _listener(listener)["filter_chains"][0]["filters"][0]["typed_config"]
    return {f["name"]: f["typed_config"] for f in hcm["http_filters"]}


def test_the_public_listener_serves_tls_with_alpn_h2_and_http11_and_no_client_certificate() -> None:
    tls = _listener("public")["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"].endswith("/edge.crt")
    assert not tls.get("require_client_certificate")


def test_the_internal_listener_requires_a_client_certificate_from_the_ca() -> None:
    tls = _listener("internal")["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].endswith("/ca.crt")


def test_every_cluster_speaks_mutual_tls_and_accepts_only_its_services_identity() -> None:
    routing = {name: {lang: 1 for lang in svc.implementations} for name, svc in TOPOLOGY.services.items()}
    for cluster in envoy.clusters(TOPOLOGY, routing, envoy.docker_mode())["resources"]:
        service = cluster["name"].rsplit("-", 1)[0]
        context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert context["tls_certificates"][0]["certificate_chain"]["filename"].endswith("/envoy.crt")
        sans = context["validation_context"]["match_typed_subject_alt_names"]
        assert sans == [{"san_type": "URI", "matcher": {"exact": f"spiffe://shop.local/{service}"}}], cluster["name"]


def test_internal_rbac_allows_each_identity_exactly_its_rpcs_from_stack_toml() -> None:
    policies = _http_filters("internal")["envoy.filters.http.rbac"]["rules"]["policies"]
    assert set(policies) == {"orders", "operator"}
    saga = {p["url_path"]["path"]["exact"] for p in policies["orders"]["permissions"]}
    assert saga == {
        "/shop.catalog.v1.CatalogService/BatchGetProducts",
        "/shop.inventory.v1.InventoryService/Reserve",
        "/shop.inventory.v1.InventoryService/Commit",
        "/shop.inventory.v1.InventoryService/Release",
        "/shop.payments.v1.PaymentService/Charge",
        "/shop.payments.v1.PaymentService/Refund",
    }
    principal = policies["orders"]["principals"][0]["authenticated"]["principal_name"]["exact"]
    assert principal == "spiffe://shop.local/orders"
    assert policies["operator"]["permissions"] == [{"any": True}]


def test_order_rpcs_need_a_customer_token_and_the_rest_check_one_only_when_sent() -> None:
    jwt = _http_filters("public")["envoy.filters.http.jwt_authn"]
    rules = jwt["rules"]
    assert rules[0] == {"match": {"prefix": "/shop.orders.v1.OrderService/"}, "requires": {"provider_name": "shop"}}
    assert rules[-1]["match"] == {"prefix": "/"}
    assert {"allow_missing": {}} in rules[-1]["requires"]["requires_any"]["requirements"]
    provider = jwt["providers"]["shop"]
    assert provider["issuer"] == TOPOLOGY.security.token_issuer
    assert provider["audiences"] == [TOPOLOGY.security.token_audience]
    assert provider["forward"] is False


def test_callers_cannot_send_the_identity_headers_envoy_sets() -> None:
    filters = list(_http_filters("public"))
    mutation = _http_filters("public")["envoy.filters.http.header_mutation"]
    removed = {m["remove"] for m in mutation["mutations"]["request_mutations"]}
    assert removed == {"x-shop-customer", "x-shop-scope"}
    assert filters.index("envoy.filters.http.header_mutation") < filters.index("envoy.filters.http.jwt_authn")


def test_a_token_refused_stays_401_and_only_a_bad_path_becomes_400() -> None:
    """The public listener's local replies: jwt_authn's 403 (a foreign audience)
    becomes 401 before any other mapper sees it; the 403 -> 400 mapper needs the
    path the bad-path RBAC filter refuses, and that filter runs before jwt_authn."""
    hcm = _listener("public")["filter_chains"][0]["filters"][0]["typed_config"]
    mappers = hcm["local_reply_config"]["mappers"]
    # JSON callers first (a google.rpc.Status body), then everyone else.
    json_jwt, jwt, bad_path = mappers[:3]
    assert "jwt_authn" in str(json_jwt["filter"]["and_filter"]) and json_jwt["status_code"] == 401
    assert "jwt_authn" in jwt["filter"]["extension_filter"]["typed_config"]["expression"]
    assert jwt["status_code"] == 401
    assert bad_path["status_code"] == 400
    conditions = bad_path["filter"]["and_filter"]["filters"]
    path_check = next(c["header_filter"]["header"] for c in conditions if "header_filter" in c)
    assert path_check["name"] == ":path" and path_check["invert_match"] is True
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters.index("envoy.filters.http.rbac") < filters.index("envoy.filters.http.jwt_authn")


def test_the_public_impl_pin_needs_the_operator_scope_and_is_stripped_otherwise() -> None:
    routing = {**envoy.default_routing(TOPOLOGY), "inventory": {"node": 90, "go": 10}}
    routes = routes_by_path("public", routing)["/shop.inventory.v1.InventoryService/GetStock"]
    for pinned in routes[:-1]:
        names = [h["name"] for h in pinned["match"]["headers"]]
        assert names == ["x-shop-impl", "x-shop-scope"], pinned
    assert routes[-1]["request_headers_to_remove"] == ["x-shop-impl"]
    internal = routes_by_path("internal", routing)["/shop.inventory.v1.InventoryService/GetStock"]
    assert [h["name"] for h in internal[0]["match"]["headers"]] == ["x-shop-impl"]
