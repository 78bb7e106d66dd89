"""Every InventoryService RPC through the generated stubs against a real server."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as pb

from inventory.support import DOMAIN, SEED, InventoryNode, Stub, levels, reserve_request
from shop_services.inventory.store import Line, fingerprint, merge_lines
from support import DEADLINE, fails

# GetStock


async def test_get_stock_returns_the_seeded_levels_in_the_order_asked(inventory: Stub) -> None:
    response = await inventory.GetStock(pb.GetStockRequest(skus=["sku-b", "sku-a", "sku-b"]), timeout=DEADLINE)
    assert [level.sku for level in response.levels] == ["sku-b", "sku-a", "sku-b"]
    b, a, _ = response.levels
    assert (a.on_hand, a.reserved, a.available) == (SEED["sku-a"], 0, SEED["sku-a"])
    assert (b.on_hand, b.reserved, b.available) == (SEED["sku-b"], 0, SEED["sku-b"])
    assert a.update_time.seconds > 0


async def test_get_stock_of_unknown_skus_is_not_found_listing_each_once(inventory: Stub) -> None:
    error = await fails(inventory.GetStock(pb.GetStockRequest(skus=["nope-2", "sku-a", "nope-1", "nope-2"])))
    assert (error.code, error.reason, error.domain) == (grpc.StatusCode.NOT_FOUND, "SKU_NOT_FOUND", DOMAIN), error
    assert error.metadata == {"skus": "nope-2,nope-1"}, error


@pytest.mark.parametrize(
    ("skus", "fields"),
    [
        pytest.param([], ["skus"], id="none"),
        pytest.param([f"sku-{i}" for i in range(101)], ["skus"], id="too-many"),
        pytest.param(["sku-a", "", "sku-b", ""], ["skus[1]", "skus[3]"], id="empty-sku"),
    ],
)
async def test_bad_get_stock_is_invalid_argument(inventory: Stub, skus: list[str], fields: list[str]) -> None:
    error = await fails(inventory.GetStock(pb.GetStockRequest(skus=skus), timeout=DEADLINE))
    assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, fields), error
    assert error.message.startswith("The request is invalid: "), error


# Reserve


async def test_reserve_holds_the_merged_lines_ordered_by_sku(inventory: Stub) -> None:
    request = reserve_request("r-1", ("sku-b", 2), ("sku-a", 1), ("sku-b", 1))
    reservation = (await inventory.Reserve(request, timeout=DEADLINE)).reservation
    assert reservation.request_id == "r-1"
    assert reservation.state == pb.RESERVATION_STATE_RESERVED
    assert [(line.sku, line.quantity) for line in reservation.lines] == [("sku-a", 1), ("sku-b", 3)]
    ttl_ms = (reservation.expire_time.ToMilliseconds()) - reservation.create_time.ToMilliseconds()
    assert ttl_ms == 900_000
    stock = await levels(inventory, "sku-a", "sku-b")
    assert (stock["sku-a"].reserved, stock["sku-a"].available) == (1, SEED["sku-a"] - 1)
    assert (stock["sku-b"].reserved, stock["sku-b"].available) == (3, SEED["sku-b"] - 3)
    assert stock["sku-b"].on_hand == SEED["sku-b"]


async def test_reserve_twice_with_one_request_id_reserves_once(inventory: Stub) -> None:
    first = (await inventory.Reserve(reserve_request("r-1", ("sku-a", 2)), timeout=DEADLINE)).reservation
    # The same lines, split and ordered differently, are the same request.
    again = reserve_request("r-1", ("sku-a", 1), ("sku-a", 1))
    second = (await inventory.Reserve(again, timeout=DEADLINE)).reservation
    assert second == first
    assert (await levels(inventory, "sku-a"))["sku-a"].reserved == 2


async def test_reserve_retry_returns_the_reservation_in_its_current_state(inventory: Stub) -> None:
    request = reserve_request("r-1", ("sku-a", 2))
    reservation = (await inventory.Reserve(request, timeout=DEADLINE)).reservation
    await inventory.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    retry = (await inventory.Reserve(request, timeout=DEADLINE)).reservation
    assert retry.reservation_id == reservation.reservation_id
    assert retry.state == pb.RESERVATION_STATE_COMMITTED
    assert (await levels(inventory, "sku-a"))["sku-a"].on_hand == SEED["sku-a"] - 2


async def test_reserve_with_a_reused_request_id_and_other_lines_is_already_exists(inventory: Stub) -> None:
    await inventory.Reserve(reserve_request("r-1", ("sku-a", 2)), timeout=DEADLINE)
    error = await fails(inventory.Reserve(reserve_request("r-1", ("sku-a", 3)), timeout=DEADLINE))
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
        DOMAIN,
    ), error
    assert (await levels(inventory, "sku-a"))["sku-a"].reserved == 2


async def test_reserve_more_than_available_is_out_of_stock_and_reserves_nothing(inventory: Stub) -> None:
    request = reserve_request("r-1", ("sku-d", 1), ("sku-c", 1), ("sku-a", 11), ("sku-b", 5))
    error = await fails(inventory.Reserve(request, timeout=DEADLINE))
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OUT_OF_STOCK",
        DOMAIN,
    ), error
    assert error.metadata == {"skus": "sku-a,sku-c"}, error
    assert error.message == (
        "Not enough stock to reserve: sku-a (asked 11, available 10), sku-c (asked 1, available 0); "
        "nothing was reserved."
    )
    stock = await levels(inventory, "sku-a", "sku-b", "sku-d")
    assert [level.reserved for level in stock.values()] == [0, 0, 0]
    # Nothing was recorded for the request_id either: it can be used again.
    await inventory.Reserve(reserve_request("r-1", ("sku-a", 10)), timeout=DEADLINE)


async def test_reserve_of_unknown_skus_is_not_found(inventory: Stub) -> None:
    error = await fails(inventory.Reserve(reserve_request("r-1", ("zz", 1), ("sku-a", 1), ("aa", 1))))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SKU_NOT_FOUND"), error
    assert error.metadata == {"skus": "aa,zz"}, error


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(reserve_request("", ("sku-a", 1)), ["request_id"], id="missing-request-id"),
        pytest.param(reserve_request("r" * 129, ("sku-a", 1)), ["request_id"], id="long-request-id"),
        pytest.param(reserve_request("é" * 128, ("sku-a", 1)), None, id="128-characters-is-fine"),
        pytest.param(reserve_request("r-1"), ["lines"], id="no-lines"),
        pytest.param(reserve_request("", *[("sku-a", 1)] * 101), ["request_id", "lines"], id="too-many-lines"),
        pytest.param(
            reserve_request("r-1", ("sku-a", 1), ("", 0), ("sku-b", 10_001), ("sku-b", -1)),
            ["lines[1].sku", "lines[1].quantity", "lines[2].quantity", "lines[3].quantity"],
            id="bad-lines",
        ),
    ],
)
async def test_bad_reserve_is_invalid_argument(
    inventory: Stub, request_: pb.ReserveRequest, fields: list[str] | None
) -> None:
    if fields is None:
        await inventory.Reserve(request_, timeout=DEADLINE)
        return
    error = await fails(inventory.Reserve(request_, timeout=DEADLINE))
    assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, fields), error


# Commit and Release


@pytest.fixture
async def reservation(inventory: Stub) -> AsyncIterator[pb.Reservation]:
    response = await inventory.Reserve(reserve_request("r-fixture", ("sku-a", 3), ("sku-b", 1)), timeout=DEADLINE)
    yield response.reservation


async def test_commit_deducts_on_hand_for_good(inventory: Stub, reservation: pb.Reservation) -> None:
    committed = (
        await inventory.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    ).reservation
    assert committed.state == pb.RESERVATION_STATE_COMMITTED
    assert list(committed.lines) == list(reservation.lines)
    stock = await levels(inventory, "sku-a", "sku-b")
    assert (stock["sku-a"].on_hand, stock["sku-a"].reserved) == (SEED["sku-a"] - 3, 0)
    assert (stock["sku-b"].on_hand, stock["sku-b"].reserved) == (SEED["sku-b"] - 1, 0)


async def test_commit_is_idempotent(inventory: Stub, reservation: pb.Reservation) -> None:
    request = pb.CommitRequest(reservation_id=reservation.reservation_id)
    first = await inventory.Commit(request, timeout=DEADLINE)
    second = await inventory.Commit(request, timeout=DEADLINE)
    assert second == first
    assert (await levels(inventory, "sku-a"))["sku-a"].on_hand == SEED["sku-a"] - 3


async def test_release_returns_the_stock(inventory: Stub, reservation: pb.Reservation) -> None:
    released = (
        await inventory.Release(pb.ReleaseRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    ).reservation
    assert released.state == pb.RESERVATION_STATE_RELEASED
    stock = await levels(inventory, "sku-a", "sku-b")
    assert (stock["sku-a"].on_hand, stock["sku-a"].reserved) == (SEED["sku-a"], 0)
    assert (stock["sku-b"].on_hand, stock["sku-b"].reserved) == (SEED["sku-b"], 0)


async def test_release_is_idempotent(inventory: Stub, reservation: pb.Reservation) -> None:
    request = pb.ReleaseRequest(reservation_id=reservation.reservation_id)
    first = await inventory.Release(request, timeout=DEADLINE)
    second = await inventory.Release(request, timeout=DEADLINE)
    assert second == first
    assert (await levels(inventory, "sku-a"))["sku-a"].reserved == 0


async def test_commit_after_release_is_reservation_released(inventory: Stub, reservation: pb.Reservation) -> None:
    await inventory.Release(pb.ReleaseRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    error = await fails(inventory.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id)))
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_RELEASED",
        DOMAIN,
    ), error


async def test_release_after_commit_is_reservation_committed(inventory: Stub, reservation: pb.Reservation) -> None:
    await inventory.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    error = await fails(inventory.Release(pb.ReleaseRequest(reservation_id=reservation.reservation_id)))
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_COMMITTED",
        DOMAIN,
    ), error
    assert (await levels(inventory, "sku-a"))["sku-a"].on_hand == SEED["sku-a"] - 3


@pytest.mark.parametrize("rpc", ["Commit", "Release"])
async def test_unknown_reservation_is_not_found(inventory: Stub, rpc: str) -> None:
    request = pb.CommitRequest(reservation_id="nope") if rpc == "Commit" else pb.ReleaseRequest(reservation_id="nope")
    error = await fails(getattr(inventory, rpc)(request, timeout=DEADLINE))
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
        DOMAIN,
    ), error
    assert error.message == "No reservation has the id nope."


@pytest.mark.parametrize("rpc", ["Commit", "Release"])
async def test_missing_reservation_id_is_invalid_argument(inventory: Stub, rpc: str) -> None:
    request = pb.CommitRequest() if rpc == "Commit" else pb.ReleaseRequest()
    error = await fails(getattr(inventory, rpc)(request, timeout=DEADLINE))
    assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, ["reservation_id"]), error


# ImportStock


async def import_stock(stub: Stub, *items: tuple[str, int]) -> pb.ImportStockResponse:
    async def requests() -> AsyncIterator[pb.ImportStockRequest]:
        for sku, on_hand in items:
            yield pb.ImportStockRequest(sku=sku, on_hand=on_hand)

    return await stub.ImportStock(requests(), timeout=DEADLINE)


async def test_import_stock_creates_and_updates_skus_a_later_item_winning(inventory: Stub) -> None:
    response = await import_stock(inventory, ("sku-new", 7), ("sku-a", 50), ("sku-new", 9), ("sku-b", SEED["sku-b"]))
    assert (response.items_received, response.skus_created, response.skus_updated) == (4, 1, 2)
    stock = await levels(inventory, "sku-new", "sku-a", "sku-b")
    assert (stock["sku-new"].on_hand, stock["sku-new"].reserved) == (9, 0)
    assert stock["sku-a"].on_hand == 50
    assert stock["sku-b"].on_hand == SEED["sku-b"]


async def test_import_stock_of_nothing_changes_nothing(inventory: Stub) -> None:
    response = await import_stock(inventory)
    assert (response.items_received, response.skus_created, response.skus_updated) == (0, 0, 0)


async def test_import_stock_with_a_bad_item_applies_nothing_and_names_its_index(inventory: Stub) -> None:
    error = await fails(import_stock(inventory, ("sku-new", 1), ("", 5), ("sku-a", 1_000_001), ("sku-b", -1)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.field_paths == ["items[1].sku", "items[2].on_hand", "items[3].on_hand"], error
    assert (await levels(inventory, "sku-a"))["sku-a"].on_hand == SEED["sku-a"]
    assert (await fails(inventory.GetStock(pb.GetStockRequest(skus=["sku-new"])))).reason == "SKU_NOT_FOUND"


async def test_import_stock_below_the_reserved_units_applies_nothing(inventory: Stub) -> None:
    await inventory.Reserve(reserve_request("r-1", ("sku-a", 4)), timeout=DEADLINE)
    error = await fails(import_stock(inventory, ("sku-new", 1), ("sku-a", 3)))
    assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, ["items[1].on_hand"]), error
    assert "must not be below the 4 units reserved for sku-a" in error.message, error
    assert (await levels(inventory, "sku-a"))["sku-a"].on_hand == SEED["sku-a"]
    assert (await fails(inventory.GetStock(pb.GetStockRequest(skus=["sku-new"])))).reason == "SKU_NOT_FOUND"


# The fingerprint the schema defines


def test_fingerprint_matches_the_schema_example() -> None:
    merged = merge_lines([Line("sku-b", 1), Line("sku-a", 1), Line("sku-a", 1)])
    assert merged == [Line("sku-a", 2), Line("sku-b", 1)]
    assert fingerprint(merged) == hashlib.sha256(b"5:sku-a:2;5:sku-b:1;").hexdigest()


def test_fingerprint_orders_by_utf8_bytes_and_counts_bytes() -> None:
    # "é" (U+00E9) sorts after "z" in UTF-8 bytes and is two bytes long.
    merged = merge_lines([Line("é", 1), Line("z", 2)])
    assert merged == [Line("z", 2), Line("é", 1)]
    assert fingerprint(merged) == hashlib.sha256("1:z:2;2:é:1;".encode()).hexdigest()


# Undecodable requests


async def test_a_request_that_is_not_a_protobuf_is_internal(node: InventoryNode, inventory: Stub) -> None:
    # As grpc-js (the Node implementation) answers it.
    assert node.channel is not None
    raw_unary = node.channel.unary_unary("/shop.inventory.v1.InventoryService/Reserve")
    error = await fails(raw_unary(b"\xff\xff\xff\xff", timeout=DEADLINE))
    assert error.code == grpc.StatusCode.INTERNAL, error

    raw_stream = node.channel.stream_unary("/shop.inventory.v1.InventoryService/ImportStock")
    error = await fails(raw_stream(iter([b"\x0a\x01a", b"\xff\xff\xff\xff"]), timeout=DEADLINE))
    assert error.code == grpc.StatusCode.INTERNAL, error
    assert (await fails(inventory.GetStock(pb.GetStockRequest(skus=["a"])))).reason == "SKU_NOT_FOUND"

    raw_watch = node.channel.unary_stream("/shop.inventory.v1.InventoryService/WatchStock")
    error = await fails(raw_watch(b"\xff\xff\xff\xff", timeout=DEADLINE).read())
    assert error.code == grpc.StatusCode.INTERNAL, error
