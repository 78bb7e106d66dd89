"""Envoy as the shop's edge: which RPCs each listener serves, reflection of
the whole API, gRPC-Web, JSON transcoding, CORS, and x-request-id carried
through every service a PlaceOrder touches.
"""

from __future__ import annotations

import ssl
import struct
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_pbg
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.payments.v1 import payment_service_pb2 as payments_pb
from shop.payments.v1 import payment_service_pb2_grpc as payments_pbg

from .support import CALL_TIMEOUT, Shop, describe_order, log_lines, new_id, replicas_of, wait_for

SHOP_SERVICES = {
    "shop.catalog.v1.CatalogService",
    "shop.inventory.v1.InventoryService",
    "shop.orders.v1.OrderService",
    "shop.payments.v1.PaymentService",
}
# Public reflection lists only services with at least one public RPC.
PUBLIC_SERVICES = SHOP_SERVICES - {"shop.payments.v1.PaymentService"}
ORIGIN = "http://localhost:3000"
HEALTH_PROBE = Path(__file__).resolve().parents[2] / ".tmp" / "bin" / "grpc-health-probe"


# -- internal RPCs -------------------------------------------------------------


def _internal_calls(channel: grpc.Channel) -> dict[str, Callable[[], Any]]:
    """Every internal-only RPC, each with a request a real caller could send."""
    inventory = inventory_pbg.InventoryServiceStub(channel)
    payments = payments_pbg.PaymentServiceStub(channel)
    sku = "sku-knock-box"
    return {
        "inventory.Reserve": lambda: inventory.Reserve(
            inventory_pb.ReserveRequest(
                request_id=new_id("req"), lines=[inventory_pb.ReservationLine(sku=sku, quantity=1)]
            ),
            timeout=CALL_TIMEOUT,
        ),
        "inventory.Commit": lambda: inventory.Commit(
            inventory_pb.CommitRequest(reservation_id=new_id("res")), timeout=CALL_TIMEOUT
        ),
        "inventory.Release": lambda: inventory.Release(
            inventory_pb.ReleaseRequest(reservation_id=new_id("res")), timeout=CALL_TIMEOUT
        ),
        "inventory.ImportStock": lambda: inventory.ImportStock(
            iter([inventory_pb.ImportStockRequest(sku=sku, on_hand=20)]), timeout=CALL_TIMEOUT
        ),
        "payments.Charge": lambda: payments.Charge(
            payments_pb.ChargeRequest(
                request_id=new_id("req"),
                amount={"currency_code": "EUR", "units": 1},
                payment_token="tok_success",
            ),
            timeout=CALL_TIMEOUT,
        ),
        "payments.Refund": lambda: payments.Refund(
            payments_pb.RefundRequest(payment_id=new_id("pay")), timeout=CALL_TIMEOUT
        ),
        "payments.GetPayment": lambda: payments.GetPayment(
            payments_pb.GetPaymentRequest(payment_id=new_id("pay")), timeout=CALL_TIMEOUT
        ),
    }


INTERNAL_RPCS = sorted(_internal_calls(grpc.insecure_channel("127.0.0.1:1")))


@pytest.mark.parametrize("rpc", INTERNAL_RPCS)
def test_internal_rpcs_are_refused_on_the_public_listener(shop: Shop, rpc: str) -> None:
    try:
        reply = _internal_calls(shop.public)[rpc]()
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, f"{rpc}: {err.code().name} {err.details()!r}"
    else:
        raise AssertionError(f"{rpc} succeeded on the public listener: {reply}")


@pytest.mark.parametrize("rpc", INTERNAL_RPCS)
def test_internal_rpcs_reach_their_service_on_the_internal_listener(shop: Shop, rpc: str) -> None:
    # Reaching the service is the point: its own answer (OK, or NOT_FOUND for
    # an unknown id) proves the internal listener forwarded the call.
    try:
        _internal_calls(shop.internal)[rpc]()
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, f"{rpc}: {err.code().name} {err.details()!r}"
        assert "internal to the shop" not in (err.details() or "")


# -- reflection ----------------------------------------------------------------


def test_reflection_through_envoy_lists_and_describes_every_shop_service_v1alpha(shop: Shop) -> None:
    database = ProtoReflectionDescriptorDatabase(shop.public)
    services = set(database.get_services())
    assert services >= PUBLIC_SERVICES, f"public reflection (v1alpha) listed {sorted(services)}"
    assert "shop.payments.v1.PaymentService" not in services, "every PaymentService RPC is internal"
    internal = set(ProtoReflectionDescriptorDatabase(shop.internal).get_services())
    assert internal >= SHOP_SERVICES, f"internal reflection (v1alpha) listed {sorted(internal)}"
    pool = descriptor_pool.DescriptorPool(database)
    orders = pool.FindServiceByName("shop.orders.v1.OrderService")
    assert {"PlaceOrder", "GetOrder", "ListOrders", "WatchOrder"} <= {m.name for m in orders.methods}
    reserve = pool.FindServiceByName("shop.inventory.v1.InventoryService").methods_by_name["Reserve"]
    assert reserve.input_type.full_name == "shop.inventory.v1.ReserveRequest"


def test_reflection_through_envoy_lists_every_shop_service_v1(shop: Shop) -> None:
    # grpc.reflection.v1 has the same messages as v1alpha, under another path.
    info = shop.public.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shop.payments.v1.PaymentService"),
    ]
    listed, described = list(info(iter(requests), timeout=CALL_TIMEOUT))
    services = {s.name for s in listed.list_services_response.service}
    assert services >= PUBLIC_SERVICES, f"public reflection (v1) listed {sorted(services)}"
    assert "shop.payments.v1.PaymentService" not in services, "every PaymentService RPC is internal"
    # Hidden from the list, its descriptors still resolve (other messages may use them).
    assert described.file_descriptor_response.file_descriptor_proto, described


def test_grpc_health_probe_through_the_public_listener_says_the_edge_is_serving(shop: Shop) -> None:
    result = subprocess.run(
        [
            str(HEALTH_PROBE),
            "-addr",
            shop.stack.public_addr,
            # The edge speaks TLS only: trust the stack's CA, no client certificate.
            "-tls",
            "-tls-ca-cert",
            str(shop.stack.certs.ca),
            "-connect-timeout",
            "5s",
            "-rpc-timeout",
            "5s",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status: SERVING" in result.stdout + result.stderr


# -- JSON transcoding, gRPC-Web, CORS ---------------------------------------------


@pytest.fixture(scope="module")
def http(shop: Shop) -> httpx.Client:
    # TLS, trusting the stack's CA, as `curl --cacert .run/certs/ca.crt` does.
    with httpx.Client(
        base_url=f"https://{shop.stack.public_addr}",
        timeout=CALL_TIMEOUT,
        verify=ssl.create_default_context(cafile=str(shop.stack.certs.ca)),
    ) as client:
        yield client


def test_json_lists_a_page_of_products(http: httpx.Client) -> None:
    reply = http.get("/v1/products", params={"page_size": 2})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert len(body["products"]) == 2
    assert body["nextPageToken"]
    assert [p["id"] for p in body["products"]] == sorted(p["id"] for p in body["products"])


def test_json_gets_one_product(http: httpx.Client) -> None:
    reply = http.get("/v1/products/sku-aeropress")
    assert reply.status_code == 200, reply.text
    product = reply.json()["product"]
    assert product["id"] == "sku-aeropress"
    assert product["price"]["currencyCode"] == "EUR"


def test_json_unknown_product_is_a_404_with_a_google_rpc_status(http: httpx.Client) -> None:
    reply = http.get("/v1/products/sku-does-not-exist")
    assert reply.status_code == 404, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert body["message"]
    infos = [d for d in body.get("details", []) if d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert infos, f"no ErrorInfo in {body}"
    assert infos[0]["reason"] == "PRODUCT_NOT_FOUND" and infos[0]["domain"] == "catalog.shop.example"
    assert infos[0]["metadata"]["product_ids"] == "sku-does-not-exist"


def test_json_prices_a_cart(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/cart:price",
        json={"items": [{"productId": "sku-tote-bag", "quantity": 2}, {"productId": "sku-aeropress", "quantity": 1}]},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [line["productId"] for line in body["lines"]] == ["sku-aeropress", "sku-tote-bag"]
    assert body["itemCount"] == 3 and body["total"]["currencyCode"] == "EUR"


def test_json_places_an_order_and_reads_it_back(shop: Shop, http: httpx.Client) -> None:
    sku = "sku-honey-500g"
    shop.import_stock({sku: 100})
    customer = new_id("cust")
    signed_in = {"authorization": f"Bearer {shop.stack.token(customer)}"}
    body = {
        "requestId": new_id("req"),
        "lines": [{"productId": sku, "quantity": 2}],
        "paymentToken": "tok_success",
    }
    placed = http.post("/v1/orders", json=body, timeout=30, headers=signed_in)
    assert placed.status_code == 200, placed.text
    order = placed.json()["order"]
    assert order["state"] == "ORDER_STATE_CONFIRMED", order
    assert order["customerId"] == customer  # from the token, not the body
    assert order["paymentId"]
    assert shop.stock(sku).on_hand == 98

    fetched = http.get(f"/v1/orders/{order['orderId']}", headers=signed_in)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["order"] == order

    missing = http.get(f"/v1/orders/ord_{uuid.uuid4().hex}", headers=signed_in)
    assert missing.status_code == 404, missing.text
    assert any(d.get("reason") == "ORDER_NOT_FOUND" for d in missing.json().get("details", [])), missing.text


def _grpc_web_frames(payload: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while payload:
        flag, length = payload[0], struct.unpack(">I", payload[1:5])[0]
        frames.append((flag, payload[5 : 5 + length]))
        payload = payload[5 + length :]
    return frames


def test_grpc_web_unary_call_answers_a_data_frame_and_a_trailer_frame(http: httpx.Client) -> None:
    message = catalog_pb.GetProductRequest(product_id="sku-aeropress").SerializeToString()
    reply = http.post(
        "/shop.catalog.v1.CatalogService/GetProduct",
        content=b"\x00" + struct.pack(">I", len(message)) + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN},
    )
    assert reply.status_code == 200, reply.content
    assert reply.headers["content-type"].startswith("application/grpc-web")
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "grpc-status" in reply.headers["access-control-expose-headers"]
    frames = _grpc_web_frames(reply.content)
    assert [flag for flag, _ in frames] == [0x00, 0x80], f"frames: {frames}"
    product = catalog_pb.GetProductResponse.FromString(frames[0][1]).product
    assert product.id == "sku-aeropress" and product.price.currency_code == "EUR"
    trailers = dict(line.split(":", 1) for line in frames[1][1].decode().split("\r\n") if line)
    assert trailers.get("grpc-status", "").strip() == "0", trailers


def test_cors_preflight_from_a_local_origin_is_allowed(http: httpx.Client) -> None:
    reply = http.options(
        "/shop.catalog.v1.CatalogService/GetProduct",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent",
        },
    )
    assert reply.status_code in (200, 204), reply.headers
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in reply.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"} <= allowed, allowed
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message"} <= exposed, exposed


def test_cors_preflight_for_a_json_route_is_answered(http: httpx.Client) -> None:
    reply = http.options(
        "/v1/orders",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert reply.status_code in (200, 204), (reply.status_code, reply.headers, reply.text)
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in reply.headers["access-control-allow-methods"]


def test_an_order_rpc_preflight_needs_no_token_and_its_401_is_readable_cross_origin(http: httpx.Client) -> None:
    """CORS runs before jwt_authn: a preflight (never carrying a token) is
    answered, and the refusal of the tokenless call carries the CORS headers."""
    path = "/shop.orders.v1.OrderService/ListOrders"
    preflight = http.options(
        path,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web",
        },
    )
    assert preflight.status_code in (200, 204), (preflight.status_code, preflight.headers, preflight.text)
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert "authorization" in allowed, allowed
    json_preflight = http.options("/v1/orders", headers={"origin": ORIGIN, "access-control-request-method": "GET"})
    assert json_preflight.status_code in (200, 204), (json_preflight.status_code, json_preflight.text)

    message = orders_pb.ListOrdersRequest().SerializeToString()
    refused = http.post(
        path,
        content=b"\x00" + struct.pack(">I", len(message)) + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN},
    )
    assert refused.headers["access-control-allow-origin"] == ORIGIN, refused.headers
    assert refused.headers.get("grpc-status") == str(grpc.StatusCode.UNAUTHENTICATED.value[0]), refused.headers
    assert "Jwt is missing" in refused.headers.get("grpc-message", ""), refused.headers
    json_refused = http.get("/v1/orders", headers={"origin": ORIGIN})
    assert json_refused.status_code == 401, json_refused.text
    assert json_refused.headers["access-control-allow-origin"] == ORIGIN, json_refused.headers


def test_json_responses_carry_cors_headers_for_an_allowed_origin(http: httpx.Client) -> None:
    reply = http.get("/v1/products", params={"page_size": 1}, headers={"origin": "http://127.0.0.1:5173"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "x-shop-impl", "grpc-status"} <= exposed, exposed


def test_an_origin_not_in_stack_toml_gets_no_cors_headers(http: httpx.Client) -> None:
    preflight = http.options(
        "/v1/orders",
        headers={"origin": "https://elsewhere.example", "access-control-request-method": "POST"},
    )
    # Answered by Envoy without the CORS headers, so the browser refuses.
    assert "access-control-allow-origin" not in preflight.headers, preflight.headers
    plain = http.get("/v1/products", params={"page_size": 1}, headers={"origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in plain.headers, plain.headers


def test_an_internal_rpc_is_refused_over_grpc_web_and_at_its_preflight(http: httpx.Client) -> None:
    path = "/shop.payments.v1.PaymentService/GetPayment"
    preflight = http.options(
        path,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent",
        },
    )
    # Refused as the listener refuses the call (403, PERMISSION_DENIED's
    # HTTP status), not a 404; no CORS headers, so no browser sends it.
    assert preflight.status_code == 403, (preflight.status_code, preflight.text)
    assert "internal to the shop" in preflight.text
    assert "access-control-allow-origin" not in preflight.headers, preflight.headers
    message = payments_pb.GetPaymentRequest(payment_id="pay-x").SerializeToString()
    reply = http.post(
        path,
        content=b"\x00" + struct.pack(">I", len(message)) + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert reply.headers.get("grpc-status") == str(grpc.StatusCode.PERMISSION_DENIED.value[0]), reply.headers
    assert "internal to the shop" in reply.headers.get("grpc-message", ""), reply.headers


def test_envoy_names_the_implementation_that_served_a_call(shop: Shop, http: httpx.Client) -> None:
    message = inventory_pb.GetStockRequest(skus=["sku-tote-bag"]).SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(message)) + message
    # Pinning at the edge needs an operator's token (tests/security checks that
    # anyone else's pin is ignored); over gRPC-Web, as the storefront pins.
    operator = {"authorization": f"Bearer {shop.stack.operator_token()}"}
    for lang in sorted(shop.stack.routing["inventory"]):
        reply = http.post(
            "/shop.inventory.v1.InventoryService/GetStock",
            content=frame,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "x-shop-impl": lang, **operator},
        )
        assert reply.status_code == 200, reply.content
        assert reply.headers["x-shop-impl"] == f"inventory-{lang}", reply.headers


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/", {}),
        ("GET", "/v1/products?page_size=1", {}),
        ("GET", "/v1/products/sku-does-not-exist", {}),
        ("POST", "/shop.payments.v1.PaymentService/GetPayment", {"content-type": "application/grpc-web+proto"}),
        ("GET", "/no/such/path", {}),
    ],
    ids=["storefront", "json", "json-404", "internal-refused", "unknown-path"],
)
def test_every_response_carries_the_edges_x_request_id(
    http: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> None:
    reply = http.request(method, path, headers=headers, content=b"\x00\x00\x00\x00\x00" if method == "POST" else None)
    assert reply.headers.get("x-request-id"), (reply.status_code, reply.headers)
    mine = http.request(method, path, headers={**headers, "x-request-id": "edge-test-id"})
    assert mine.headers.get("x-request-id") == "edge-test-id", mine.headers


# -- the storefront --------------------------------------------------------------


def test_the_storefront_is_served_on_the_api_origin(shop: Shop, http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/assets/app.js">' in page.text
    script = http.get("/assets/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "application/grpc-web" in script.text  # the bundled gRPC-Web transport
    style = http.get("/assets/app.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    config = http.get("/storefront.json").json()
    assert config["services"]["inventory"]["weights"] == shop.stack.routing["inventory"]
    if getattr(shop.stack, "telemetry", False):
        # The "under the hood" panel links each call to its trace in Zipkin's UI.
        zipkin = urllib.parse.urlsplit(shop.stack.zipkin_url)
        assert config["trace_ui_port"] == zipkin.port, config


# -- x-request-id ----------------------------------------------------------------

# The services a PlaceOrder touches, and the RPC each must log under its id.
_SAGA_RPCS = {
    "orders-python": "/shop.orders.v1.OrderService/PlaceOrder",
    "catalog-go": "/shop.catalog.v1.CatalogService/BatchGetProducts",
    "inventory-node": "/shop.inventory.v1.InventoryService/Reserve",
    "payments-python": "/shop.payments.v1.PaymentService/Charge",
}


def _assert_logged_everywhere(shop: Shop, request_id: str) -> None:
    for program, method in _SAGA_RPCS.items():
        wait_for(
            f"{program} to log {method} with request_id {request_id}",
            # Any replica of it may have served the call (make test-hosts runs two catalogs).
            lambda p=program, m=method: any(
                line.get("msg") == "rpc" and line.get("method") == m and line.get("request_id") == request_id
                for replica in replicas_of(shop.stack, p)
                for line in log_lines(shop.stack, replica)
            ),
            timeout=10,
        )
    commit = "/shop.inventory.v1.InventoryService/Commit"
    assert any(
        line.get("method") == commit and line.get("request_id") == request_id
        for line in log_lines(shop.stack, "inventory-node")
    ), f"inventory logged no Commit with request_id {request_id}"


def test_a_callers_x_request_id_appears_in_every_services_log(shop: Shop) -> None:
    request_id = f"e2e-trace-{uuid.uuid4()}"
    order = shop.place(shop.order_request("sku-tote-bag"), metadata=[("x-request-id", request_id)])
    assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
    _assert_logged_everywhere(shop, request_id)


def test_envoy_generates_an_x_request_id_when_the_caller_sends_none(shop: Shop) -> None:
    order = shop.place(shop.order_request("sku-tote-bag"))
    assert order.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(order)
    placed = wait_for(
        f"orders to log 'order placed' for {order.order_id}",
        lambda: next(
            (
                line
                for line in log_lines(shop.stack, "orders-python")
                if line.get("msg") == "order placed" and line.get("order_id") == order.order_id
            ),
            None,
        ),
        timeout=10,
    )
    request_id = str(placed.get("request_id") or "")
    assert request_id, f"orders logged no request_id: {placed}"
    # Envoy's public listener logged the same id for this call: it made it.
    # (Envoy flushes its access log on a timer, so poll.)
    wait_for(
        f"Envoy's public access log to show PlaceOrder with request_id {request_id}",
        lambda: any(
            line.get("listener") == "public"
            and line.get("method") == "/shop.orders.v1.OrderService/PlaceOrder"
            and line.get("request_id") == request_id
            for line in log_lines(shop.stack, "envoy")
        ),
        timeout=15,
    )
    _assert_logged_everywhere(shop, request_id)
