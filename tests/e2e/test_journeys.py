"""A customer's journeys across the three languages, through Envoy's public
listener: browse (Go catalog), quote a cart (Go), order (Python orders saga
over the inventory and Python payments), watch the order and the stock.

Every journey runs once with each inventory implementation in place (Node,
Python, Go): the `inventory_in_place` fixture routes all inventory traffic to
one of them, live, before the module's tests run again. Each test that asserts
exact stock owns one catalog SKU (ImportStock sets it), so tests never race
each other on the shared session stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc
import pytest
from conftest import running_edge, session_routing
from google.type import money_pb2
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack import swap, topology
from shopstack.stack import Stack

from .support import CALL_TIMEOUT, ORDER_TIMEOUT, Shop, describe_order, new_id, reason_name, state_name, wait_for

SEED_PRODUCTS = 55  # data/products.json


@pytest.fixture(scope="module", autouse=True, params=sorted(session_routing()["inventory"]))
def inventory_in_place(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every inventory call, the saga's included, goes to one implementation.

    Under --edge the shop runs elsewhere with the implementation it was
    deployed with: the journeys run once, for that one."""
    lang: str = request.param
    if running_edge(request.config) is not None:
        if lang != topology.load().services["inventory"].impl:
            pytest.skip("--edge: inventory runs the implementation it was deployed with")
        yield lang
        return
    stack: Stack = request.getfixturevalue("stack")
    before = dict(stack.routing["inventory"])
    swap.canary(stack, "inventory", lang, 100)
    cluster = f"cluster.inventory-{lang}.upstream_rq_total"
    probe = inventory_pb.GetStockRequest(skus=["sku-tote-bag"])
    with stack.public_channel() as channel:
        stub = inventory_grpc.InventoryServiceStub(channel)

        def routed() -> bool:
            seen = stack.envoy_stats(cluster).get(cluster, 0)
            stub.GetStock(probe, timeout=CALL_TIMEOUT)
            return stack.envoy_stats(cluster).get(cluster, 0) > seen

        wait_for(f"Envoy to route inventory to {lang}", routed)
    yield lang
    swap.canary(stack, "inventory", max(before, key=lambda k: before[k]), 100)


def money(m: money_pb2.Money) -> Decimal:
    return Decimal(m.units) + Decimal(m.nanos) / Decimal(10**9)


def test_browsing_pages_through_the_whole_catalog_and_filters_by_tag(shop: Shop) -> None:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = shop.catalog.ListProducts(
            catalog_pb.ListProductsRequest(page_size=7, page_token=token), timeout=CALL_TIMEOUT
        )
        pages += 1
        assert len(reply.products) <= 7
        seen.extend(p.id for p in reply.products)
        token = reply.next_page_token
        if not token:
            break
        assert pages < 50, "ListProducts never ended its pages"
    assert len(seen) == SEED_PRODUCTS, f"expected every seeded product once, got {len(seen)}: {seen}"
    assert seen == sorted(seen), "ListProducts pages are not in product id order"
    assert len(set(seen)) == len(seen), "a product appeared on two pages"
    assert pages == -(-SEED_PRODUCTS // 7)

    tea = shop.catalog.ListProducts(catalog_pb.ListProductsRequest(tag="tea", page_size=100), timeout=CALL_TIMEOUT)
    ids = [p.id for p in tea.products]
    assert ids and all("tea" in p.tags for p in tea.products), f"tag filter returned {ids}"
    assert "sku-green-tea-sencha" in ids and "sku-espresso-beans-1kg" not in ids
    assert not tea.next_page_token


def test_quoting_a_cart_prices_every_change_on_one_stream(shop: Shop) -> None:
    price = {
        p.id: money(p.price)
        for p in shop.catalog.BatchGetProducts(
            catalog_pb.BatchGetProductsRequest(product_ids=["sku-espresso-beans-1kg", "sku-paper-filters-100"]),
            timeout=CALL_TIMEOUT,
        ).products
    }
    changes = [
        catalog_pb.QuoteCartRequest(product_id="sku-espresso-beans-1kg", quantity=2),
        catalog_pb.QuoteCartRequest(product_id="sku-paper-filters-100", quantity=3),
        catalog_pb.QuoteCartRequest(product_id="sku-espresso-beans-1kg", quantity=1),
        catalog_pb.QuoteCartRequest(product_id="sku-paper-filters-100", remove=True),
    ]
    expected_carts = [
        {"sku-espresso-beans-1kg": 2},
        {"sku-espresso-beans-1kg": 2, "sku-paper-filters-100": 3},
        {"sku-espresso-beans-1kg": 1, "sku-paper-filters-100": 3},
        {"sku-espresso-beans-1kg": 1},
    ]
    replies = list(shop.catalog.QuoteCart(iter(changes), timeout=CALL_TIMEOUT))
    assert len(replies) == len(changes), f"one reply per change expected, got {len(replies)}"
    for reply, cart in zip(replies, expected_carts, strict=True):
        assert {line.product_id: line.quantity for line in reply.lines} == cart
        assert [line.product_id for line in reply.lines] == sorted(cart)
        assert reply.item_count == sum(cart.values())
        assert money(reply.total) == sum(price[sku] * n for sku, n in cart.items()), reply
        assert reply.total.currency_code == "EUR"


def test_an_order_confirms_and_watchers_see_the_order_and_the_committed_stock(shop: Shop) -> None:
    sku = "sku-ground-moka-250g"
    shop.import_stock({sku: 500})
    watch = shop.inventory.WatchStock(inventory_pb.WatchStockRequest(skus=[sku]), timeout=60)
    try:
        first = next(watch)
        assert first.initial and first.level.sku == sku, first
        before = first.level

        request = shop.order_request(sku, quantity=3)
        placing = shop.orders.PlaceOrder.future(request, timeout=ORDER_TIMEOUT)
        # Follow the order from as early as it can be found.
        order_id = wait_for(
            "the order to be listed for its customer",
            lambda: next((o.order_id for o in shop.orders_of(request.customer_id)), None),
        )
        states = [
            m.order.state
            for m in shop.orders.WatchOrder(orders_pb.WatchOrderRequest(order_id=order_id), timeout=ORDER_TIMEOUT)
        ]
        placed = placing.result().order
        assert placed.order_id == order_id
        assert placed.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(placed)
        assert states[-1] == orders_pb.ORDER_STATE_CONFIRMED, f"WatchOrder ended at {states}"
        assert states == sorted(states), f"order states went backwards: {states}"
        assert placed.payment_id and placed.reservation_id
        assert money(placed.total) == money(placed.lines[0].unit_price) * 3

        # The commit arrives on the watch: on_hand down by 3, reserved as before.
        def committed() -> inventory_pb.StockLevel | None:
            change = next(watch)
            assert not change.initial and change.level.sku == sku, change
            level = change.level
            if level.on_hand == before.on_hand - 3 and level.reserved == before.reserved:
                return level
            return None

        wait_for("WatchStock to report the committed order", committed, timeout=30)
    finally:
        watch.cancel()
    assert shop.stock(sku).on_hand == before.on_hand - 3


def test_a_declined_card_fails_the_order_and_restores_stock_and_money(shop: Shop) -> None:
    sku = "sku-earl-grey-100g"
    shop.import_stock({sku: 60})
    before = shop.stock(sku)
    order = shop.place(shop.order_request(sku, quantity=2, token="tok_declined"))
    assert order.state == orders_pb.ORDER_STATE_FAILED, describe_order(order)
    assert order.failure_reason == orders_pb.ORDER_FAILURE_REASON_CARD_DECLINED, describe_order(order)
    assert order.failure_message
    after = shop.stock(sku)
    assert (after.on_hand, after.reserved) == (before.on_hand, before.reserved), f"{before} -> {after}"
    shop.assert_no_money_kept(order)
    assert shop.get_order(order.order_id).state == orders_pb.ORDER_STATE_FAILED


def test_an_out_of_stock_line_fails_the_order_and_changes_nothing(shop: Shop) -> None:
    sku = "sku-matcha-30g"
    shop.set_available(sku, 2)
    before = shop.stock(sku)
    request = orders_pb.PlaceOrderRequest(
        request_id=new_id("req"),
        customer_id=new_id("cust"),
        lines=[
            orders_pb.OrderLine(product_id="sku-tea-infuser", quantity=1),
            orders_pb.OrderLine(product_id=sku, quantity=5),
        ],
        payment_token="tok_success",
    )
    infuser_before = shop.stock("sku-tea-infuser")
    order = shop.place(request)
    assert order.state == orders_pb.ORDER_STATE_FAILED, describe_order(order)
    assert order.failure_reason == orders_pb.ORDER_FAILURE_REASON_OUT_OF_STOCK, describe_order(order)
    after = shop.stock(sku)
    assert (after.on_hand, after.reserved, after.available) == (before.on_hand, before.reserved, 2), after
    infuser = shop.stock("sku-tea-infuser")
    assert (infuser.on_hand, infuser.reserved) == (infuser_before.on_hand, infuser_before.reserved)
    shop.assert_no_money_kept(order)


def test_concurrent_orders_for_the_last_units_confirm_exactly_that_many(shop: Shop) -> None:
    sku, units, buyers = "sku-limited-geisha-100g", 3, 8
    before = shop.set_available(sku, units)
    start = threading.Barrier(buyers)

    def buy(_: int) -> orders_pb.Order:
        request = shop.order_request(sku, quantity=1)
        start.wait(timeout=CALL_TIMEOUT)
        return shop.place(request, timeout=40)

    with ThreadPoolExecutor(buyers) as pool:
        orders = list(pool.map(buy, range(buyers)))
    outcome = sorted(f"{state_name(o)}/{reason_name(o)}" for o in orders)
    confirmed = [o for o in orders if o.state == orders_pb.ORDER_STATE_CONFIRMED]
    failed = [o for o in orders if o.state == orders_pb.ORDER_STATE_FAILED]
    assert len(confirmed) == units, outcome
    assert len(failed) == buyers - units, outcome
    assert all(o.failure_reason == orders_pb.ORDER_FAILURE_REASON_OUT_OF_STOCK for o in failed), outcome
    after = shop.stock(sku)
    assert after.available == 0, after
    assert after.on_hand == before.on_hand - units, f"{before} -> {after}"
    assert after.reserved == before.reserved, after
    for order in failed:
        shop.assert_no_money_kept(order)


def test_the_same_request_id_twice_places_one_order(shop: Shop) -> None:
    sku = "sku-paper-filters-100"
    shop.import_stock({sku: 300})
    before = shop.stock(sku)
    request = shop.order_request(sku, quantity=2)
    first = shop.place(request)
    second = shop.place(request)
    assert first.state == orders_pb.ORDER_STATE_CONFIRMED, describe_order(first)
    assert second.order_id == first.order_id and second.payment_id == first.payment_id
    assert second == first, f"the repeat answered differently:\n{first}\n{second}"
    assert [o.order_id for o in shop.orders_of(request.customer_id)] == [first.order_id]
    assert shop.stock(sku).on_hand == before.on_hand - 2, "the repeat ran a second saga"

    changed = orders_pb.PlaceOrderRequest()
    changed.CopyFrom(request)
    changed.lines[0].quantity = 3
    try:
        shop.place(changed)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err
    else:
        raise AssertionError("reusing a request_id for a different order was accepted")
