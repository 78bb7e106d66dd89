"""Contract suite for shop.catalog.v1.CatalogService (protos/shop/catalog/v1).

Runs against any address that serves the catalog seeded from
data/products.json: each implementation directly, and Envoy.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pbg

from .support import (
    OVERSIZED_BYTES,
    Feeder,
    assert_bad_request,
    assert_code,
    assert_deadline_ended,
    assert_error_info,
    check_malformed,
    check_unknown_method,
    fails,
    money,
    seed,
    seed_money,
    unique,
)

SERVICE = "catalog"
FULL_NAME = "shop.catalog.v1.CatalogService"
DOMAIN = "catalog.shop.example"
SEED = seed()
PRODUCTS = {p["id"]: p for p in SEED["products"]}
IDS = sorted(PRODUCTS)
CURRENCY = SEED["currency_code"]
ESPRESSO = "sku-espresso-beans-1kg"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pbg.CatalogServiceStub:
    return pbg.CatalogServiceStub(channel)


def assert_matches_seed(product: pb.Product) -> None:
    expected = PRODUCTS[product.id]
    assert product.name == expected["name"]
    assert product.description == expected["description"]
    assert money(product.price) == seed_money(expected["price"])
    assert sorted(product.tags) == sorted(expected["tags"])
    assert product.HasField("create_time") and product.create_time.seconds > 0


# -- GetProduct ---------------------------------------------------------------


def test_get_product_returns_the_seeded_product(stub: pbg.CatalogServiceStub) -> None:
    product = stub.GetProduct(pb.GetProductRequest(product_id=ESPRESSO)).product
    assert product.id == ESPRESSO
    assert_matches_seed(product)


def test_get_product_with_empty_id_is_invalid_argument_naming_product_id(
    stub: pbg.CatalogServiceStub,
) -> None:
    seen = fails(lambda: stub.GetProduct(pb.GetProductRequest(product_id="")))
    assert_bad_request(seen, "product_id")


def test_get_product_unknown_id_is_not_found_with_product_not_found(
    stub: pbg.CatalogServiceStub,
) -> None:
    missing = unique("sku-missing")
    seen = fails(lambda: stub.GetProduct(pb.GetProductRequest(product_id=missing)))
    assert_error_info(seen, NOT_FOUND, "PRODUCT_NOT_FOUND", DOMAIN, {"product_ids": missing})


# -- BatchGetProducts ---------------------------------------------------------


def test_batch_get_returns_products_in_request_order_with_duplicates(
    stub: pbg.CatalogServiceStub,
) -> None:
    ids = [IDS[5], IDS[0], IDS[5], IDS[-1]]
    products = stub.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=ids)).products
    assert [p.id for p in products] == ids
    for product in products:
        assert_matches_seed(product)


def test_batch_get_accepts_exactly_100_ids(stub: pbg.CatalogServiceStub) -> None:
    ids = (IDS * 2)[:100]
    products = stub.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=ids)).products
    assert [p.id for p in products] == ids


def test_batch_get_with_no_ids_is_invalid_argument_naming_product_ids(
    stub: pbg.CatalogServiceStub,
) -> None:
    seen = fails(lambda: stub.BatchGetProducts(pb.BatchGetProductsRequest()))
    assert_bad_request(seen, "product_ids")


def test_batch_get_with_101_ids_is_invalid_argument_naming_product_ids(
    stub: pbg.CatalogServiceStub,
) -> None:
    ids = (IDS * 2)[:101]
    seen = fails(lambda: stub.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=ids)))
    assert_bad_request(seen, "product_ids")


def test_batch_get_with_an_empty_id_names_its_index(stub: pbg.CatalogServiceStub) -> None:
    ids = [IDS[0], IDS[1], ""]
    seen = fails(lambda: stub.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=ids)))
    assert_bad_request(seen, "product_ids[2]")


def test_batch_get_with_unknown_ids_is_not_found_naming_every_missing_id(
    stub: pbg.CatalogServiceStub,
) -> None:
    first, second = unique("sku-missing-a"), unique("sku-missing-b")
    ids = [IDS[0], first, IDS[1], second]
    seen = fails(lambda: stub.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=ids)))
    assert_error_info(seen, NOT_FOUND, "PRODUCT_NOT_FOUND", DOMAIN, {"product_ids": f"{first},{second}"})


# -- ListProducts -------------------------------------------------------------


def list_all(stub: pbg.CatalogServiceStub, page_size: int, tag: str = "") -> list[list[str]]:
    """Every page's product ids, following next_page_token to the end."""
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = stub.ListProducts(pb.ListProductsRequest(page_size=page_size, page_token=token, tag=tag))
        pages.append([p.id for p in reply.products])
        token = reply.next_page_token
        if not token:
            return pages
        assert len(pages) <= len(IDS), "ListProducts never returned an empty next_page_token"


def test_list_products_default_page_size_is_20(stub: pbg.CatalogServiceStub) -> None:
    reply = stub.ListProducts(pb.ListProductsRequest())
    assert [p.id for p in reply.products] == IDS[:20]
    assert reply.next_page_token


def test_list_products_pages_through_the_whole_catalog_by_id(
    stub: pbg.CatalogServiceStub,
) -> None:
    pages = list_all(stub, page_size=7)
    assert [len(page) for page in pages[:-1]] == [7] * (len(pages) - 1)
    assert [pid for page in pages for pid in page] == IDS


def test_list_products_page_size_100_returns_everything_with_no_token(
    stub: pbg.CatalogServiceStub,
) -> None:
    reply = stub.ListProducts(pb.ListProductsRequest(page_size=100))
    assert [p.id for p in reply.products] == IDS
    assert reply.next_page_token == ""
    for product in reply.products:
        assert_matches_seed(product)


def test_list_products_filters_by_tag_across_pages(stub: pbg.CatalogServiceStub) -> None:
    expected = sorted(pid for pid, p in PRODUCTS.items() if "tea" in p["tags"])
    pages = list_all(stub, page_size=5, tag="tea")
    assert [pid for page in pages for pid in page] == expected


def test_list_products_unknown_tag_is_an_empty_page(stub: pbg.CatalogServiceStub) -> None:
    reply = stub.ListProducts(pb.ListProductsRequest(tag=unique("no-such-tag")))
    assert list(reply.products) == [] and reply.next_page_token == ""


@pytest.mark.parametrize("page_size", [-1, 101])
def test_list_products_page_size_out_of_bounds_is_invalid_argument(
    stub: pbg.CatalogServiceStub, page_size: int
) -> None:
    seen = fails(lambda: stub.ListProducts(pb.ListProductsRequest(page_size=page_size)))
    assert_bad_request(seen, "page_size")


def test_list_products_garbage_token_is_invalid_page_token(stub: pbg.CatalogServiceStub) -> None:
    seen = fails(lambda: stub.ListProducts(pb.ListProductsRequest(page_token="not-a-token")))
    assert_error_info(seen, INVALID, "INVALID_PAGE_TOKEN", DOMAIN)


def test_list_products_altered_token_is_invalid_page_token(stub: pbg.CatalogServiceStub) -> None:
    token = stub.ListProducts(pb.ListProductsRequest(page_size=3)).next_page_token
    altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    seen = fails(lambda: stub.ListProducts(pb.ListProductsRequest(page_size=3, page_token=altered)))
    assert_error_info(seen, INVALID, "INVALID_PAGE_TOKEN", DOMAIN)


def test_list_products_token_of_another_tag_is_invalid_page_token(
    stub: pbg.CatalogServiceStub,
) -> None:
    token = stub.ListProducts(pb.ListProductsRequest(page_size=2, tag="tea")).next_page_token
    assert token
    seen = fails(lambda: stub.ListProducts(pb.ListProductsRequest(page_size=2, page_token=token, tag="kitchen")))
    assert_error_info(seen, INVALID, "INVALID_PAGE_TOKEN", DOMAIN)


# -- QuoteCart ----------------------------------------------------------------


def line_total(pid: str, quantity: int) -> Decimal:
    return seed_money(PRODUCTS[pid]["price"])[1] * quantity


def assert_cart(reply: pb.QuoteCartResponse | pb.PriceCartResponse, cart: dict[str, int]) -> None:
    """The reply prices exactly `cart`, ordered by product id."""
    assert [(line.product_id, line.quantity) for line in reply.lines] == sorted(cart.items())
    for line in reply.lines:
        assert money(line.unit_price) == seed_money(PRODUCTS[line.product_id]["price"])
        assert money(line.line_total) == (CURRENCY, line_total(line.product_id, line.quantity))
    total = sum((line_total(pid, q) for pid, q in cart.items()), Decimal(0))
    assert money(reply.total) == (CURRENCY, total), f"total {reply.total} for cart {cart}"
    assert reply.item_count == sum(cart.values())


# -- PriceCart ----------------------------------------------------------------


def price(stub: pbg.CatalogServiceStub, cart: dict[str, int]) -> pb.PriceCartResponse:
    items = [pb.PriceCartItem(product_id=pid, quantity=q) for pid, q in cart.items()]
    return stub.PriceCart(pb.PriceCartRequest(items=items), timeout=10)


def test_price_cart_prices_the_whole_cart_like_quote_cart(stub: pbg.CatalogServiceStub) -> None:
    cart = {IDS[30]: 999, IDS[10]: 2, IDS[2]: 1}  # asked out of id order; answered in it
    reply = price(stub, cart)
    assert_cart(reply, cart)
    quoted = Cart(stub)
    try:
        for pid, q in cart.items():
            last = quoted.change(pid, q)
        assert list(last.lines) == list(reply.lines) and last.total == reply.total
    finally:
        quoted.feeder.close()


def test_price_cart_of_an_empty_cart_totals_zero_in_the_catalog_currency(
    stub: pbg.CatalogServiceStub,
) -> None:
    reply = price(stub, {})
    assert list(reply.lines) == [] and reply.item_count == 0
    assert money(reply.total) == (CURRENCY, Decimal(0))


def test_price_cart_unknown_products_are_not_found_naming_every_one(stub: pbg.CatalogServiceStub) -> None:
    first, second = unique("sku-missing"), unique("sku-missing")
    seen = fails(lambda: price(stub, {first: 1, ESPRESSO: 1, second: 3}))
    assert_error_info(seen, NOT_FOUND, "PRODUCT_NOT_FOUND", DOMAIN, {"product_ids": f"{first},{second}"})


@pytest.mark.parametrize(
    ("items", "paths"),
    [
        ([pb.PriceCartItem(quantity=1)], ["items[0].product_id"]),
        (
            [pb.PriceCartItem(product_id=ESPRESSO, quantity=0), pb.PriceCartItem(product_id=IDS[0], quantity=1000)],
            ["items[0].quantity", "items[1].quantity"],
        ),
        ([pb.PriceCartItem(product_id=IDS[1], quantity=-2)], ["items[0].quantity"]),
        (
            [pb.PriceCartItem(product_id=ESPRESSO, quantity=1), pb.PriceCartItem(product_id=ESPRESSO, quantity=2)],
            ["items[1].product_id"],
        ),
        ([pb.PriceCartItem(product_id=f"sku-{i}", quantity=1) for i in range(101)], ["items"]),
    ],
    ids=["empty-product-id", "zero-and-1000", "negative-quantity", "product-twice", "101-items"],
)
def test_price_cart_bad_input_is_invalid_argument_naming_each_field(
    stub: pbg.CatalogServiceStub, items: list[pb.PriceCartItem], paths: list[str]
) -> None:
    seen = fails(lambda: stub.PriceCart(pb.PriceCartRequest(items=items), timeout=10))
    assert_bad_request(seen, *paths)


class Cart:
    """One QuoteCart stream driven message by message."""

    def __init__(self, stub: pbg.CatalogServiceStub, timeout: float = 15.0) -> None:
        self.feeder = Feeder()
        self.replies: Iterator[pb.QuoteCartResponse] = stub.QuoteCart(iter(self.feeder), timeout=timeout)

    def change(self, product_id: str, quantity: int = 0, remove: bool = False) -> pb.QuoteCartResponse:
        self.feeder.send(pb.QuoteCartRequest(product_id=product_id, quantity=quantity, remove=remove))
        return next(self.replies)

    def end(self) -> list[pb.QuoteCartResponse]:
        """Half-close and collect whatever else the server sends until it ends the call."""
        self.feeder.close()
        return list(self.replies)


def test_quote_cart_answers_every_change_with_the_whole_cart(
    stub: pbg.CatalogServiceStub,
) -> None:
    a, b, c = IDS[10], IDS[2], IDS[30]
    cart = Cart(stub)
    try:
        assert_cart(cart.change(a, 2), {a: 2})
        assert_cart(cart.change(b, 1), {a: 2, b: 1})
        assert_cart(cart.change(c, 999), {a: 2, b: 1, c: 999})
        assert_cart(cart.change(a, 5), {a: 5, b: 1, c: 999})  # replaces, not adds
        assert_cart(cart.change(b, remove=True), {a: 5, c: 999})
        assert_cart(cart.change(b, remove=True), {a: 5, c: 999})  # not in the cart: fine
        assert cart.end() == []
    finally:
        cart.feeder.close()


def test_quote_cart_emptied_cart_totals_zero_in_the_catalog_currency(
    stub: pbg.CatalogServiceStub,
) -> None:
    cart = Cart(stub)
    try:
        cart.change(ESPRESSO, 3)
        reply = cart.change(ESPRESSO, remove=True)
        assert list(reply.lines) == [] and reply.item_count == 0
        assert money(reply.total) == (CURRENCY, Decimal(0))
        assert cart.end() == []
    finally:
        cart.feeder.close()


def test_quote_cart_half_close_without_messages_ends_ok_with_no_reply(
    stub: pbg.CatalogServiceStub,
) -> None:
    assert list(stub.QuoteCart(iter([]))) == []


def test_quote_cart_unknown_product_ends_the_stream_with_not_found(
    stub: pbg.CatalogServiceStub,
) -> None:
    missing = unique("sku-missing")
    cart = Cart(stub)
    try:
        cart.change(ESPRESSO, 1)
        cart.feeder.send(pb.QuoteCartRequest(product_id=missing, quantity=1))
        cart.feeder.send(pb.QuoteCartRequest(product_id=IDS[0], quantity=1))
        seen = fails(lambda: next(cart.replies))
        assert_error_info(seen, NOT_FOUND, "PRODUCT_NOT_FOUND", DOMAIN, {"product_ids": missing})
    finally:
        cart.feeder.close()


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (pb.QuoteCartRequest(product_id="", quantity=1), "product_id"),
        (pb.QuoteCartRequest(product_id=ESPRESSO, quantity=0), "quantity"),
        (pb.QuoteCartRequest(product_id=ESPRESSO, quantity=-3), "quantity"),
        (pb.QuoteCartRequest(product_id=ESPRESSO, quantity=1000), "quantity"),
        (pb.QuoteCartRequest(product_id=ESPRESSO, quantity=2, remove=True), "quantity"),
    ],
    ids=["empty-product-id", "zero-quantity", "negative-quantity", "quantity-1000", "remove-with-quantity"],
)
def test_quote_cart_invalid_change_ends_the_stream_with_invalid_argument(
    stub: pbg.CatalogServiceStub, change: pb.QuoteCartRequest, path: str
) -> None:
    cart = Cart(stub)
    try:
        assert_cart(cart.change(IDS[3], 1), {IDS[3]: 1})
        cart.feeder.send(change)
        seen = fails(lambda: next(cart.replies))
        assert_bad_request(seen, path)
    finally:
        cart.feeder.close()


def test_quote_cart_client_cancel_ends_the_call_and_the_service_carries_on(
    stub: pbg.CatalogServiceStub,
) -> None:
    cart = Cart(stub)
    try:
        cart.change(ESPRESSO, 1)
        cart.replies.cancel()  # type: ignore[attr-defined]
        seen = fails(lambda: next(cart.replies))
        assert_code(seen, grpc.StatusCode.CANCELLED)
    finally:
        cart.feeder.close()
    assert stub.GetProduct(pb.GetProductRequest(product_id=ESPRESSO)).product.id == ESPRESSO


def test_quote_cart_open_stream_ends_with_deadline_exceeded(
    stub: pbg.CatalogServiceStub,
) -> None:
    cart = Cart(stub, timeout=2.0)
    try:
        cart.change(ESPRESSO, 1)
        # The stream stays open (no half-close): only the deadline ends it.
        seen = fails(lambda: next(cart.replies))
        assert_deadline_ended(seen)
    finally:
        cart.feeder.close()


# -- the wire -----------------------------------------------------------------


def test_oversized_request_is_resource_exhausted_and_the_service_carries_on(
    stub: pbg.CatalogServiceStub,
) -> None:
    huge = "x" * OVERSIZED_BYTES
    seen = fails(lambda: stub.GetProduct(pb.GetProductRequest(product_id=huge)))
    assert_code(seen, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert stub.GetProduct(pb.GetProductRequest(product_id=ESPRESSO)).product.id == ESPRESSO


def test_malformed_request_is_refused_and_the_service_carries_on(
    channel: grpc.Channel, stub: pbg.CatalogServiceStub
) -> None:
    check_malformed(channel, f"/{FULL_NAME}/GetProduct")
    assert stub.GetProduct(pb.GetProductRequest(product_id=ESPRESSO)).product.id == ESPRESSO


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    check_unknown_method(channel, FULL_NAME)
