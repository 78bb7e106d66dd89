"""Customers at the edge: tokens checked by Envoy's jwt_authn, orders scoped to
the token's subject, the x-shop-impl pin for operators only, and x-request-id
values from outside that are not ids replaced."""

from __future__ import annotations

import ssl
import time
import uuid

import grpc
import httpx
import jwt
import pytest
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.orders.v1 import order_service_pb2 as orders_pb
from shop.orders.v1 import order_service_pb2_grpc as orders_grpc
from shopstack import pki, tokens
from shopstack.stack import Stack

from .conftest import CALL_TIMEOUT, describe, rpc_error

ORDER_TIMEOUT = 25.0
SKU = "sku-tote-bag"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def new_customer() -> str:
    return f"cust-sec-{uuid.uuid4().hex[:12]}"


def place(edge: grpc.Channel, token: str, customer_id: str = "") -> orders_pb.Order:
    request = orders_pb.PlaceOrderRequest(
        request_id=f"req-{uuid.uuid4()}",
        customer_id=customer_id,
        payment_token="tok_success",
        lines=[orders_pb.OrderLine(product_id=SKU, quantity=1)],
    )
    reply = orders_grpc.OrderServiceStub(edge).PlaceOrder(request, timeout=ORDER_TIMEOUT, metadata=bearer(token))
    return reply.order


@pytest.fixture(scope="module", autouse=True)
def stocked(stack: Stack) -> None:
    with stack.internal_channel() as channel:
        inventory_grpc.InventoryServiceStub(channel).ImportStock(
            iter([inventory_pb.ImportStockRequest(sku=SKU, on_hand=10_000)]), timeout=CALL_TIMEOUT
        )


def _order_calls(edge: grpc.Channel) -> dict[str, object]:
    stub = orders_grpc.OrderServiceStub(edge)
    order_id = f"ord_{uuid.uuid4().hex}"
    place_request = orders_pb.PlaceOrderRequest(
        request_id=f"req-{uuid.uuid4()}",
        customer_id="ada",
        payment_token="tok_success",
        lines=[orders_pb.OrderLine(product_id=SKU, quantity=1)],
    )
    return {
        "PlaceOrder": lambda md: stub.PlaceOrder(place_request, timeout=CALL_TIMEOUT, metadata=md),
        "GetOrder": lambda md: stub.GetOrder(
            orders_pb.GetOrderRequest(order_id=order_id), timeout=CALL_TIMEOUT, metadata=md
        ),
        "ListOrders": lambda md: stub.ListOrders(orders_pb.ListOrdersRequest(), timeout=CALL_TIMEOUT, metadata=md),
        "WatchOrder": lambda md: next(
            stub.WatchOrder(orders_pb.WatchOrderRequest(order_id=order_id), timeout=CALL_TIMEOUT, metadata=md)
        ),
    }


@pytest.mark.parametrize("rpc", ["PlaceOrder", "GetOrder", "ListOrders", "WatchOrder"])
def test_every_order_rpc_needs_a_token(edge: grpc.Channel, rpc: str) -> None:
    call = _order_calls(edge)[rpc]
    err = rpc_error(lambda: call(()))  # type: ignore[operator]
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, describe(err)
    assert "Jwt is missing" in err.details(), describe(err)  # type: ignore[attr-defined]


def _bad_tokens(stack: Stack, stranger: pki.Certs) -> dict[str, tuple[str, str]]:
    """What's wrong with a token -> (the token, what Envoy's message says)."""
    security = stack.topology.security
    certs = stack.certs
    forged_claims = {
        "iss": security.token_issuer,
        "aud": security.token_audience,
        "sub": "ada",
        "exp": int(time.time()) + 600,
    }
    # Signed with another key, under the real key's id: a forgery.
    forged = jwt.encode(
        forged_claims, stranger.jwt_key.read_bytes(), algorithm="ES256", headers={"kid": pki.kid_of(certs)}
    )
    return {
        "expired": (tokens.issue(certs, security, "ada", ttl_seconds=-120), "Jwt is expired"),
        "wrong issuer": (tokens.issue(certs, security, "ada", issuer="https://evil.example"), "issuer"),
        "wrong audience": (tokens.issue(certs, security, "ada", audience="another-api"), "Audiences"),
        "bad signature": (forged, "verification fail"),
        "not a JWT": ("not-a-token", "Jwt"),
    }


@pytest.mark.parametrize("problem", ["expired", "wrong issuer", "wrong audience", "bad signature", "not a JWT"])
def test_a_bad_token_is_unauthenticated_saying_why(
    stack: Stack, stranger: pki.Certs, edge: grpc.Channel, problem: str
) -> None:
    token, says = _bad_tokens(stack, stranger)[problem]
    calls = _order_calls(edge)
    for rpc in ("PlaceOrder", "ListOrders"):
        err = rpc_error(lambda c=calls[rpc]: c(bearer(token)))  # type: ignore[operator]
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, f"{rpc}: {describe(err)}"
        assert says in err.details(), f"{rpc}: {describe(err)}"  # type: ignore[attr-defined]
    # Catalog is anonymous, but a token that is sent is checked all the same.
    catalog = catalog_grpc.CatalogServiceStub(edge)
    request = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    err = rpc_error(lambda: catalog.GetProduct(request, timeout=CALL_TIMEOUT, metadata=bearer(token)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, describe(err)


def test_catalog_and_stock_stay_anonymous(edge: grpc.Channel) -> None:
    product = catalog_grpc.CatalogServiceStub(edge).GetProduct(
        catalog_pb.GetProductRequest(product_id="sku-aeropress"), timeout=CALL_TIMEOUT
    )
    assert product.product.id == "sku-aeropress"
    stock = inventory_grpc.InventoryServiceStub(edge).GetStock(
        inventory_pb.GetStockRequest(skus=[SKU]), timeout=CALL_TIMEOUT
    )
    assert stock.levels[0].sku == SKU


def test_an_order_belongs_to_the_token_and_nobody_else_sees_it(stack: Stack, edge: grpc.Channel) -> None:
    ada, bob = new_customer(), new_customer()
    ada_token, bob_token = stack.token(ada), stack.token(bob)
    order = place(edge, ada_token)  # no customer_id: the token says who
    assert order.state == orders_pb.ORDER_STATE_CONFIRMED, order
    assert order.customer_id == ada

    stub = orders_grpc.OrderServiceStub(edge)
    get = orders_pb.GetOrderRequest(order_id=order.order_id)
    assert stub.GetOrder(get, timeout=CALL_TIMEOUT, metadata=bearer(ada_token)).order.order_id == order.order_id
    err = rpc_error(lambda: stub.GetOrder(get, timeout=CALL_TIMEOUT, metadata=bearer(bob_token)))
    assert err.code() == grpc.StatusCode.NOT_FOUND, describe(err)

    watch = orders_pb.WatchOrderRequest(order_id=order.order_id)
    err = rpc_error(lambda: next(stub.WatchOrder(watch, timeout=CALL_TIMEOUT, metadata=bearer(bob_token))))
    assert err.code() == grpc.StatusCode.NOT_FOUND, describe(err)

    mine = stub.ListOrders(orders_pb.ListOrdersRequest(), timeout=CALL_TIMEOUT, metadata=bearer(ada_token)).orders
    assert [o.order_id for o in mine] == [order.order_id]
    theirs = stub.ListOrders(orders_pb.ListOrdersRequest(), timeout=CALL_TIMEOUT, metadata=bearer(bob_token)).orders
    assert list(theirs) == []


def test_naming_another_customer_is_permission_denied(stack: Stack, edge: grpc.Channel) -> None:
    mallory = stack.token(new_customer())
    err = rpc_error(lambda: place(edge, mallory, customer_id="ada"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, describe(err)
    stub = orders_grpc.OrderServiceStub(edge)
    listing = orders_pb.ListOrdersRequest(customer_id="ada")
    err = rpc_error(lambda: stub.ListOrders(listing, timeout=CALL_TIMEOUT, metadata=bearer(mallory)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, describe(err)


def test_a_caller_cannot_claim_a_customer_with_the_header_envoy_sets(stack: Stack, edge: grpc.Channel) -> None:
    ada = new_customer()
    order = place(edge, stack.token(ada))
    mallory = stack.token(new_customer())
    stub = orders_grpc.OrderServiceStub(edge)
    metadata = (*bearer(mallory), ("x-shop-customer", ada))
    get = orders_pb.GetOrderRequest(order_id=order.order_id)
    err = rpc_error(lambda: stub.GetOrder(get, timeout=CALL_TIMEOUT, metadata=metadata))
    assert err.code() == grpc.StatusCode.NOT_FOUND, describe(err)


def test_json_orders_need_a_token_too(stack: Stack) -> None:
    with httpx.Client(
        base_url=f"https://{stack.public_addr}",
        verify=ssl.create_default_context(cafile=str(stack.certs.ca)),
        timeout=CALL_TIMEOUT,
    ) as http:
        reply = http.get("/v1/orders")
        assert reply.status_code == 401, reply.text
        reply = http.get("/v1/orders", headers={"authorization": f"Bearer {stack.token(new_customer())}"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["orders"] == []


def _served(stack: Stack, cluster: str) -> int:
    stat = f"cluster.{cluster}.upstream_rq_total"
    return stack.envoy_stats(stat).get(stat, 0)


def test_the_impl_pin_at_the_edge_needs_an_operator_token(stack: Stack, edge: grpc.Channel) -> None:
    default = stack.topology.services["inventory"].impl
    other = next(lang for lang in sorted(stack.routing["inventory"]) if lang != default)
    stub = inventory_grpc.InventoryServiceStub(edge)
    request = inventory_pb.GetStockRequest(skus=[SKU])
    pin = ("x-shop-impl", other)
    attempts = {
        "no token": ((pin,), False),
        "a customer token": ((pin, *bearer(stack.token(new_customer()))), False),
        "an operator token": ((pin, *bearer(stack.operator_token())), True),
    }
    for what, (metadata, honoured) in attempts.items():
        before = _served(stack, f"inventory-{other}")
        for _ in range(5):
            stub.GetStock(request, timeout=CALL_TIMEOUT, metadata=metadata)
        pinned = _served(stack, f"inventory-{other}") - before
        assert pinned == (5 if honoured else 0), f"{what}: inventory-{other} served {pinned} of 5"


def test_the_impl_pin_over_grpc_web_needs_an_operator_token_too(stack: Stack) -> None:
    """The pinned routes match no gRPC content type (so the storefront can pin
    over gRPC-Web), and still honour only an operator's token."""
    default = stack.topology.services["inventory"].impl
    other = next(lang for lang in sorted(stack.routing["inventory"]) if lang != default)
    message = inventory_pb.GetStockRequest(skus=[SKU]).SerializeToString()
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    grpc_web = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "x-shop-impl": other}
    attempts = {
        "no token": ({}, default),
        "a customer token": ({"authorization": f"Bearer {stack.token(new_customer())}"}, default),
        "an operator token": ({"authorization": f"Bearer {stack.operator_token()}"}, other),
    }
    with httpx.Client(
        base_url=f"https://{stack.public_addr}",
        verify=ssl.create_default_context(cafile=str(stack.certs.ca)),
        timeout=CALL_TIMEOUT,
    ) as http:
        for what, (headers, served_by) in attempts.items():
            for _ in range(3):
                reply = http.post(
                    "/shop.inventory.v1.InventoryService/GetStock", content=frame, headers={**grpc_web, **headers}
                )
                # The status is in the trailer frame, the serving cluster in a header.
                assert reply.status_code == 200 and b"grpc-status:0\r\n" in reply.content, (what, reply.content)
                assert reply.headers["x-shop-impl"] == f"inventory-{served_by}", (what, reply.headers)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("trace-7f3a-ok", True),
        ("x" * 129, False),
        ("bad id with spaces", False),
        ('id"}{injected', False),
    ],
    ids=["an id", "over 128 characters", "spaces", "quotes and braces"],
)
def test_an_outside_request_id_is_kept_only_when_it_is_an_id(edge: grpc.Channel, sent: str, kept: bool) -> None:
    stub = catalog_grpc.CatalogServiceStub(edge)
    request = catalog_pb.GetProductRequest(product_id="sku-aeropress")
    _, call = stub.GetProduct.with_call(request, timeout=CALL_TIMEOUT, metadata=(("x-request-id", sent),))
    echoed = dict(call.initial_metadata()).get("x-request-id")
    if kept:
        assert echoed == sent
    else:
        assert echoed and echoed != sent, echoed
        assert uuid.UUID(str(echoed)).version == 4, echoed
