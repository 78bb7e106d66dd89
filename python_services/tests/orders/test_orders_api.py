"""Validation, GetOrder, ListOrders and WatchOrder edge cases, health and reflection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc

from orders.fakes import Fakes
from orders.support import OrdersHarness, order_request
from shop_services.common.errors import details_of, error_reason
from support import DEADLINE


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = details_of(error)
    assert status is not None, error
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def test_place_order_names_every_bad_field(orders: pb_grpc.OrderServiceAsyncStub, fakes: Fakes) -> None:
    request = pb.PlaceOrderRequest(
        request_id="",
        customer_id="c" * 129,
        lines=[
            pb.OrderLine(product_id="sku-mug", quantity=1),
            pb.OrderLine(product_id="sku-espresso-1kg", quantity=0),
            pb.OrderLine(product_id="sku-mug", quantity=1000),
            pb.OrderLine(product_id="", quantity=1),
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(request, timeout=DEADLINE)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert violations(caught.value) == [
        "request_id",
        "customer_id",
        "lines[1].quantity",
        "lines[2].product_id",
        "lines[2].quantity",
        "lines[3].product_id",
        "payment_token",
    ]
    assert fakes.catalog.calls == []


@pytest.mark.parametrize("count", [0, 51])
async def test_place_order_needs_1_to_50_lines(orders: pb_grpc.OrderServiceAsyncStub, count: int) -> None:
    lines = [(f"sku-{i}", 1) for i in range(count)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(order_request("r-lines", lines=lines), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["lines"]


async def test_get_order_of_an_unknown_id_is_not_found(orders: pb_grpc.OrderServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.GetOrder(pb.GetOrderRequest(order_id="ord_nope"), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "ORDER_NOT_FOUND"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.GetOrder(pb.GetOrderRequest(), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["order_id"]


async def test_list_orders_pages_newest_first_per_customer(orders: pb_grpc.OrderServiceAsyncStub) -> None:
    placed = []
    for i in range(5):
        placed.append((await orders.PlaceOrder(order_request(f"r-a{i}", customer_id="alice"), timeout=DEADLINE)).order)
    for i in range(2):
        await orders.PlaceOrder(order_request(f"r-b{i}", customer_id="bob"), timeout=DEADLINE)

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await orders.ListOrders(
            pb.ListOrdersRequest(customer_id="alice", page_size=2, page_token=token), timeout=DEADLINE
        )
        pages += 1
        assert len(page.orders) <= 2
        seen.extend(o.order_id for o in page.orders)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [o.order_id for o in reversed(placed)]

    everyone = await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)
    assert len(everyone.orders) == 7 and everyone.next_page_token == ""
    assert everyone.orders[0].customer_id == "bob"


async def test_list_orders_refuses_foreign_and_altered_tokens(orders: pb_grpc.OrderServiceAsyncStub) -> None:
    for i in range(3):
        await orders.PlaceOrder(order_request(f"r-t{i}", customer_id="alice"), timeout=DEADLINE)
    page = await orders.ListOrders(pb.ListOrdersRequest(customer_id="alice", page_size=1), timeout=DEADLINE)
    token = page.next_page_token
    assert token

    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for customer_id, bad in (("bob", token), ("", token), ("alice", altered), ("alice", "garbage")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders.ListOrders(pb.ListOrdersRequest(customer_id=customer_id, page_token=bad), timeout=DEADLINE)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (customer_id, bad)
        assert error_reason(caught.value) == "INVALID_PAGE_TOKEN"
        assert violations(caught.value) == ["page_token"]


@pytest.mark.parametrize("size", [-1, 101])
async def test_list_orders_page_size_out_of_range(orders: pb_grpc.OrderServiceAsyncStub, size: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.ListOrders(pb.ListOrdersRequest(page_size=size), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["page_size"]


async def test_list_orders_page_size_zero_means_twenty(orders: pb_grpc.OrderServiceAsyncStub) -> None:
    for i in range(21):
        await orders.PlaceOrder(order_request(f"r-z{i}"), timeout=DEADLINE)
    page = await orders.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)
    assert len(page.orders) == 20 and page.next_page_token


async def test_page_tokens_survive_a_restart(harness: OrdersHarness) -> None:
    for i in range(2):
        await harness.stub.PlaceOrder(order_request(f"r-s{i}"), timeout=DEADLINE)
    page = await harness.stub.ListOrders(pb.ListOrdersRequest(page_size=1), timeout=DEADLINE)
    await harness.stop()
    await harness.start()
    rest = await harness.stub.ListOrders(
        pb.ListOrdersRequest(page_size=1, page_token=page.next_page_token), timeout=DEADLINE
    )
    assert len(rest.orders) == 1 and rest.orders[0].order_id != page.orders[0].order_id


async def test_watch_order_of_an_unknown_id_is_not_found_before_any_message(
    orders: pb_grpc.OrderServiceAsyncStub,
) -> None:
    call = orders.WatchOrder(pb.WatchOrderRequest(order_id="ord_nope"), timeout=DEADLINE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "ORDER_NOT_FOUND"


async def test_watch_order_of_a_terminal_order_sends_it_and_ends(orders: pb_grpc.OrderServiceAsyncStub) -> None:
    order = (await orders.PlaceOrder(order_request("r-done"), timeout=DEADLINE)).order
    call = orders.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=DEADLINE)
    messages = [m.order async for m in call]
    assert messages == [order]
    assert await call.code() == grpc.StatusCode.OK


async def test_cancelling_a_watch_removes_its_listener(harness: OrdersHarness, fakes: Fakes) -> None:
    fakes.inventory.reserve_gate.close()
    placing = asyncio.ensure_future(harness.stub.PlaceOrder(order_request("r-cancel-watch"), timeout=DEADLINE))
    await asyncio.wait_for(fakes.inventory.reserve_gate.entered.wait(), DEADLINE)
    [order] = (await harness.stub.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
    call = harness.stub.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=DEADLINE)
    await call.read()
    assert harness.server is not None
    service = harness.server.service
    assert service.watchers == 1

    call.cancel()
    # The server learns of the cancellation asynchronously: wait for it, within a bound.
    for _ in range(200):
        if service.watchers == 0:
            break
        await asyncio.sleep(0.05)
    assert service.watchers == 0
    fakes.inventory.reserve_gate.open()
    assert (await placing).order.state == pb.ORDER_STATE_CONFIRMED


async def test_reflection_lists_the_order_service(harness: OrdersHarness) -> None:
    assert harness.channel is not None
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    call = stub.ServerReflectionInfo(timeout=DEADLINE)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert {"shop.orders.v1.OrderService", "grpc.health.v1.Health"} <= names


async def test_a_client_past_its_cap_of_open_watches_is_refused_and_others_are_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fakes: Fakes
) -> None:
    """SHOP_MAX_STREAMS_PER_CLIENT (common/limits.py), as orders serves it: an order held
    mid-saga keeps its WatchOrder streams open; the cap's next one is RESOURCE_EXHAUSTED
    at once, another client still watches, and a closed stream frees its slot."""
    monkeypatch.setenv("SHOP_MAX_STREAMS_PER_CLIENT", "3")
    harness = OrdersHarness(tmp_path / "capped.db", fakes)
    await harness.start()
    try:
        fakes.inventory.reserve_gate.close()
        placing = asyncio.ensure_future(harness.stub.PlaceOrder(order_request("r-cap"), timeout=DEADLINE))
        await asyncio.wait_for(fakes.inventory.reserve_gate.entered.wait(), DEADLINE)
        [order] = (await harness.stub.ListOrders(pb.ListOrdersRequest(), timeout=DEADLINE)).orders
        request = pb.WatchOrderRequest(order_id=order.order_id)
        held = [harness.stub.WatchOrder(request, timeout=DEADLINE) for _ in range(3)]
        for call in held:
            assert (await call.read()).order.state == pb.ORDER_STATE_PRICED
        refused = harness.stub.WatchOrder(request, timeout=DEADLINE)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "SHOP_MAX_STREAMS_PER_CLIENT" in (caught.value.details() or "")
        # Envoy names a client by the address it connected from: another one still watches.
        other = harness.stub.WatchOrder(request, timeout=DEADLINE, metadata=(("x-shop-client-address", "10.1.2.3"),))
        assert (await other.read()).order.state == pb.ORDER_STATE_PRICED
        other.cancel()
        held.pop().cancel()
        # The server frees the slot once it learns of the cancellation.
        for _ in range(200):
            again = harness.stub.WatchOrder(request, timeout=DEADLINE)
            try:
                await again.read()
                held.append(again)
                break
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                await asyncio.sleep(0.05)
        else:
            pytest.fail("a cancelled WatchOrder never freed its slot")
        fakes.inventory.reserve_gate.open()
        assert (await placing).order.state == pb.ORDER_STATE_CONFIRMED
        for call in held:
            call.cancel()
    finally:
        await harness.stop()
