"""Contract suite for shop.inventory.v1.InventoryService (protos/shop/inventory/v1).

Runs once per running inventory implementation, directly and through Envoy
(pinned with x-shop-impl while several run; see conftest.inventory_targets).
Every test stocks its own fresh SKUs through ImportStock, so the quantities it
asserts are exact whatever else runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pbg
from shopstack import topology

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
    seed,
    unique,
)

SERVICE = "inventory"
FULL_NAME = "shop.inventory.v1.InventoryService"
DOMAIN = "inventory.shop.example"
SEEDED_SKU = seed()["products"][0]["id"]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pbg.InventoryServiceStub:
    return pbg.InventoryServiceStub(channel)


def import_stock(stub: pbg.InventoryServiceStub, *items: tuple[str, int]) -> pb.ImportStockResponse:
    return stub.ImportStock(iter([pb.ImportStockRequest(sku=s, on_hand=n) for s, n in items]))


def fresh_sku(stub: pbg.InventoryServiceStub, on_hand: int) -> str:
    sku = unique("sku-test")
    import_stock(stub, (sku, on_hand))
    return sku


def level(stub: pbg.InventoryServiceStub, sku: str) -> tuple[int, int, int]:
    """(on_hand, reserved, available) of one SKU."""
    (got,) = stub.GetStock(pb.GetStockRequest(skus=[sku])).levels
    return got.on_hand, got.reserved, got.available


def reserve(stub: pbg.InventoryServiceStub, *lines: tuple[str, int], request_id: str | None = None) -> pb.Reservation:
    request = pb.ReserveRequest(
        request_id=request_id or unique("req"),
        lines=[pb.ReservationLine(sku=s, quantity=q) for s, q in lines],
    )
    return stub.Reserve(request).reservation


# -- ImportStock and GetStock -------------------------------------------------


def test_import_stock_creates_and_updates_skus_and_the_later_item_wins(
    stub: pbg.InventoryServiceStub,
) -> None:
    existing = fresh_sku(stub, 3)
    new = unique("sku-test")
    reply = import_stock(stub, (new, 5), (existing, 9), (new, 7))
    assert (reply.items_received, reply.skus_created, reply.skus_updated) == (3, 1, 1)
    assert level(stub, new) == (7, 0, 7)
    assert level(stub, existing) == (9, 0, 9)


def test_import_stock_with_no_items_applies_nothing(stub: pbg.InventoryServiceStub) -> None:
    reply = import_stock(stub)
    assert (reply.items_received, reply.skus_created, reply.skus_updated) == (0, 0, 0)


@pytest.mark.parametrize(
    ("bad", "field"),
    [(("", 5), "sku"), (("GOOD", -1), "on_hand"), (("GOOD", 1_000_001), "on_hand")],
    ids=["empty-sku", "negative-on-hand", "on-hand-over-a-million"],
)
def test_import_stock_bad_item_fails_the_whole_import_naming_its_index(
    stub: pbg.InventoryServiceStub, bad: tuple[str, int], field: str
) -> None:
    existing = fresh_sku(stub, 4)
    new = unique("sku-test")
    sku, on_hand = bad
    bad_item = (unique("sku-test") if sku == "GOOD" else sku, on_hand)
    seen = fails(lambda: import_stock(stub, (existing, 8), (new, 1), bad_item))
    # The request is a stream with no field name of its own: the violation
    # names the item as items[<zero-based index>].<field>.
    assert_bad_request(seen, f"items[2].{field}")
    assert level(stub, existing) == (4, 0, 4)  # nothing applied
    assert_error_info(fails(lambda: level(stub, new)), NOT_FOUND, "SKU_NOT_FOUND", DOMAIN, {"skus": new})


def test_import_stock_accepts_the_bounds(stub: pbg.InventoryServiceStub) -> None:
    low, high = unique("sku-test"), unique("sku-test")
    import_stock(stub, (low, 0), (high, 1_000_000))
    assert level(stub, low) == (0, 0, 0)
    assert level(stub, high) == (1_000_000, 0, 1_000_000)


def test_import_stock_below_the_reserved_units_is_invalid_argument(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 10)
    reserve(stub, (sku, 6))
    seen = fails(lambda: import_stock(stub, (sku, 5)))
    assert_bad_request(seen, "items[0].on_hand")
    assert level(stub, sku) == (10, 6, 4)


def test_import_stock_cancelled_before_half_close_applies_nothing(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = unique("sku-test")
    feeder = Feeder()
    future = stub.ImportStock.future(iter(feeder))
    try:
        feeder.send(pb.ImportStockRequest(sku=sku, on_hand=5))
        assert_error_info(fails(lambda: level(stub, sku)), NOT_FOUND, "SKU_NOT_FOUND", DOMAIN, {"skus": sku})
        # Cancelled, never half-closed: nothing may be applied.
        future.cancel()
        assert future.cancelled() or future.code() == grpc.StatusCode.CANCELLED
        assert_error_info(fails(lambda: level(stub, sku)), NOT_FOUND, "SKU_NOT_FOUND", DOMAIN, {"skus": sku})
    finally:
        feeder.close()


def test_import_stock_never_half_closed_ends_with_deadline_exceeded(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = unique("sku-test")
    feeder = Feeder()
    feeder.send(pb.ImportStockRequest(sku=sku, on_hand=5))
    try:
        seen = fails(lambda: stub.ImportStock(iter(feeder), timeout=0.5))
    finally:
        feeder.close()
    assert_deadline_ended(seen)
    assert_error_info(fails(lambda: level(stub, sku)), NOT_FOUND, "SKU_NOT_FOUND", DOMAIN)


def test_get_stock_returns_levels_in_the_order_asked(stub: pbg.InventoryServiceStub) -> None:
    a, b = fresh_sku(stub, 11), fresh_sku(stub, 22)
    levels = stub.GetStock(pb.GetStockRequest(skus=[b, a, b])).levels
    assert [(x.sku, x.on_hand, x.reserved, x.available) for x in levels] == [
        (b, 22, 0, 22),
        (a, 11, 0, 11),
        (b, 22, 0, 22),
    ]
    assert all(x.update_time.seconds > 0 for x in levels)


def test_get_stock_knows_the_catalog_skus(stub: pbg.InventoryServiceStub) -> None:
    (got,) = stub.GetStock(pb.GetStockRequest(skus=[SEEDED_SKU])).levels
    assert got.sku == SEEDED_SKU and got.available == got.on_hand - got.reserved


def test_get_stock_unknown_skus_are_not_found_naming_each(stub: pbg.InventoryServiceStub) -> None:
    known = fresh_sku(stub, 1)
    first, second = unique("sku-missing"), unique("sku-missing")
    seen = fails(lambda: stub.GetStock(pb.GetStockRequest(skus=[first, known, second])))
    assert_error_info(seen, NOT_FOUND, "SKU_NOT_FOUND", DOMAIN, {"skus": f"{first},{second}"})


@pytest.mark.parametrize(
    ("skus", "path"),
    [([], "skus"), (["sku-a", ""], "skus[1]"), ([f"sku-{i}" for i in range(101)], "skus")],
    ids=["no-skus", "empty-sku", "101-skus"],
)
def test_get_stock_bad_input_is_invalid_argument(stub: pbg.InventoryServiceStub, skus: list[str], path: str) -> None:
    assert_bad_request(fails(lambda: stub.GetStock(pb.GetStockRequest(skus=skus))), path)


# -- Reserve, Commit, Release -------------------------------------------------


def test_reserve_holds_stock_adding_lines_of_one_sku(stub: pbg.InventoryServiceStub) -> None:
    a, b = sorted([fresh_sku(stub, 10), fresh_sku(stub, 10)])
    reservation = reserve(stub, (b, 1), (a, 2), (b, 3))
    assert reservation.reservation_id
    assert reservation.state == pb.RESERVATION_STATE_RESERVED
    assert [(x.sku, x.quantity) for x in reservation.lines] == [(a, 2), (b, 4)]
    assert reservation.expire_time.ToDatetime() > reservation.create_time.ToDatetime()
    assert level(stub, a) == (10, 2, 8)
    assert level(stub, b) == (10, 4, 6)


def test_reserve_repeated_returns_the_same_reservation_and_reserves_once(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 10)
    request_id = unique("req")
    first = reserve(stub, (sku, 3), request_id=request_id)
    second = reserve(stub, (sku, 3), request_id=request_id)
    assert second.reservation_id == first.reservation_id
    assert second.request_id == request_id
    assert level(stub, sku) == (10, 3, 7)


def test_reserve_request_id_reused_with_other_lines_is_already_exists(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 10)
    request_id = unique("req")
    reserve(stub, (sku, 3), request_id=request_id)
    seen = fails(lambda: reserve(stub, (sku, 4), request_id=request_id))
    assert_error_info(seen, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED", DOMAIN)
    assert level(stub, sku) == (10, 3, 7)


def test_reserve_short_line_reserves_nothing_and_names_every_short_sku(
    stub: pbg.InventoryServiceStub,
) -> None:
    plenty, short1, short2 = fresh_sku(stub, 10), fresh_sku(stub, 2), fresh_sku(stub, 0)
    seen = fails(lambda: reserve(stub, (plenty, 5), (short1, 3), (short2, 1)))
    assert_error_info(seen, FAILED_PRECONDITION, "OUT_OF_STOCK", DOMAIN, {"skus": f"{short1},{short2}"})
    assert level(stub, plenty) == (10, 0, 10)


def test_reserve_lines_of_one_sku_are_added_before_checking_stock(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 5)
    seen = fails(lambda: reserve(stub, (sku, 3), (sku, 3)))
    assert_error_info(seen, FAILED_PRECONDITION, "OUT_OF_STOCK", DOMAIN, {"skus": sku})
    assert level(stub, sku) == (5, 0, 5)


def test_reserve_exactly_the_available_stock_succeeds(stub: pbg.InventoryServiceStub) -> None:
    sku = fresh_sku(stub, 5)
    reserve(stub, (sku, 2))
    reserve(stub, (sku, 3))
    assert level(stub, sku) == (5, 5, 0)
    seen = fails(lambda: reserve(stub, (sku, 1)))
    assert_error_info(seen, FAILED_PRECONDITION, "OUT_OF_STOCK", DOMAIN, {"skus": sku})


def test_reserve_unknown_sku_is_sku_not_found(stub: pbg.InventoryServiceStub) -> None:
    known, missing = fresh_sku(stub, 5), unique("sku-missing")
    seen = fails(lambda: reserve(stub, (known, 1), (missing, 1)))
    assert_error_info(seen, NOT_FOUND, "SKU_NOT_FOUND", DOMAIN, {"skus": missing})
    assert level(stub, known) == (5, 0, 5)


def _lines(*lines: tuple[str, int]) -> list[pb.ReservationLine]:
    return [pb.ReservationLine(sku=s, quantity=q) for s, q in lines]


@pytest.mark.parametrize(
    ("request_id", "lines", "paths"),
    [
        ("", _lines(("sku-a", 1)), ["request_id"]),
        ("r" * 129, _lines(("sku-a", 1)), ["request_id"]),
        ("REQ", [], ["lines"]),
        ("REQ", _lines(("sku-a", 1)) * 101, ["lines"]),
        ("REQ", _lines(("sku-a", 1), ("", 1)), ["lines[1].sku"]),
        ("REQ", _lines(("sku-a", 1), ("sku-b", 0)), ["lines[1].quantity"]),
        ("REQ", _lines(("sku-a", -2)), ["lines[0].quantity"]),
        ("REQ", _lines(("sku-a", 10001)), ["lines[0].quantity"]),
        ("", _lines(("", 0)), ["request_id", "lines[0].sku", "lines[0].quantity"]),
    ],
    ids=[
        "empty-request-id",
        "request-id-129-chars",
        "no-lines",
        "101-lines",
        "empty-sku",
        "zero-quantity",
        "negative-quantity",
        "quantity-10001",
        "three-problems",
    ],
)
def test_reserve_bad_input_is_invalid_argument_naming_each_field(
    stub: pbg.InventoryServiceStub,
    request_id: str,
    lines: list[pb.ReservationLine],
    paths: list[str],
) -> None:
    request = pb.ReserveRequest(request_id=unique("req") if request_id == "REQ" else request_id, lines=lines)
    assert_bad_request(fails(lambda: stub.Reserve(request)), *paths)


def test_commit_deducts_on_hand_and_is_idempotent(stub: pbg.InventoryServiceStub) -> None:
    sku = fresh_sku(stub, 10)
    reservation = reserve(stub, (sku, 4))
    committed = stub.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id)).reservation
    assert committed.reservation_id == reservation.reservation_id
    assert committed.state == pb.RESERVATION_STATE_COMMITTED
    assert level(stub, sku) == (6, 0, 6)
    again = stub.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id)).reservation
    assert again == committed
    assert level(stub, sku) == (6, 0, 6)


def test_release_returns_the_stock_and_is_idempotent(stub: pbg.InventoryServiceStub) -> None:
    sku = fresh_sku(stub, 10)
    reservation = reserve(stub, (sku, 4))
    released = stub.Release(pb.ReleaseRequest(reservation_id=reservation.reservation_id)).reservation
    assert released.state == pb.RESERVATION_STATE_RELEASED
    assert level(stub, sku) == (10, 0, 10)
    again = stub.Release(pb.ReleaseRequest(reservation_id=reservation.reservation_id)).reservation
    assert again == released
    assert level(stub, sku) == (10, 0, 10)


def test_commit_of_a_released_reservation_is_reservation_released(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 10)
    rid = reserve(stub, (sku, 4)).reservation_id
    stub.Release(pb.ReleaseRequest(reservation_id=rid))
    seen = fails(lambda: stub.Commit(pb.CommitRequest(reservation_id=rid)))
    assert_error_info(seen, FAILED_PRECONDITION, "RESERVATION_RELEASED", DOMAIN)
    assert level(stub, sku) == (10, 0, 10)


def test_release_of_a_committed_reservation_is_reservation_committed(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 10)
    rid = reserve(stub, (sku, 4)).reservation_id
    stub.Commit(pb.CommitRequest(reservation_id=rid))
    seen = fails(lambda: stub.Release(pb.ReleaseRequest(reservation_id=rid)))
    assert_error_info(seen, FAILED_PRECONDITION, "RESERVATION_COMMITTED", DOMAIN)
    assert level(stub, sku) == (6, 0, 6)


def test_commit_and_release_of_an_unknown_reservation_are_not_found(
    stub: pbg.InventoryServiceStub,
) -> None:
    missing = unique("res-missing")
    for call in (
        lambda: stub.Commit(pb.CommitRequest(reservation_id=missing)),
        lambda: stub.Release(pb.ReleaseRequest(reservation_id=missing)),
    ):
        assert_error_info(fails(call), NOT_FOUND, "RESERVATION_NOT_FOUND", DOMAIN)


def test_commit_and_release_without_an_id_are_invalid_argument(
    stub: pbg.InventoryServiceStub,
) -> None:
    assert_bad_request(fails(lambda: stub.Commit(pb.CommitRequest())), "reservation_id")
    assert_bad_request(fails(lambda: stub.Release(pb.ReleaseRequest())), "reservation_id")


# -- WatchStock ---------------------------------------------------------------


def watch(stub: pbg.InventoryServiceStub, *skus: str, timeout: float = 15.0) -> Iterator[pb.WatchStockResponse]:
    return stub.WatchStock(pb.WatchStockRequest(skus=list(skus)), timeout=timeout)


def as_tuple(message: pb.WatchStockResponse) -> tuple[str, int, int, int, bool]:
    lv = message.level
    return lv.sku, lv.on_hand, lv.reserved, lv.available, message.initial


def test_watch_stock_sends_every_initial_level_then_each_change_in_order(
    stub: pbg.InventoryServiceStub,
) -> None:
    a, b = fresh_sku(stub, 10), fresh_sku(stub, 20)
    stream = watch(stub, a, b)
    try:
        initial = {as_tuple(next(stream)) for _ in range(2)}
        assert initial == {(a, 10, 0, 10, True), (b, 20, 0, 20, True)}
        rid = reserve(stub, (a, 3)).reservation_id
        assert as_tuple(next(stream)) == (a, 10, 3, 7, False)
        import_stock(stub, (b, 25))
        assert as_tuple(next(stream)) == (b, 25, 0, 25, False)
        stub.Commit(pb.CommitRequest(reservation_id=rid))
        assert as_tuple(next(stream)) == (a, 7, 0, 7, False)
    finally:
        stream.cancel()  # type: ignore[attr-defined]


def test_watch_stock_sends_one_initial_message_per_sku_however_often_it_is_named(
    stub: pbg.InventoryServiceStub,
) -> None:
    a, b = fresh_sku(stub, 10), fresh_sku(stub, 20)
    stream = watch(stub, a, b, a, a)
    try:
        initial = [as_tuple(next(stream)) for _ in range(2)]
        assert sorted(initial) == sorted([(a, 10, 0, 10, True), (b, 20, 0, 20, True)])
        # The next message is a change, not a third initial one.
        import_stock(stub, (a, 11))
        assert as_tuple(next(stream)) == (a, 11, 0, 11, False)
    finally:
        stream.cancel()  # type: ignore[attr-defined]


def test_watch_stock_ignores_changes_to_other_skus(stub: pbg.InventoryServiceStub) -> None:
    watched, other = fresh_sku(stub, 10), fresh_sku(stub, 10)
    stream = watch(stub, watched)
    try:
        assert as_tuple(next(stream)) == (watched, 10, 0, 10, True)
        import_stock(stub, (other, 11))
        import_stock(stub, (watched, 12))
        assert as_tuple(next(stream)) == (watched, 12, 0, 12, False)
    finally:
        stream.cancel()  # type: ignore[attr-defined]


def test_watch_stock_cancel_ends_the_call_and_the_service_carries_on(
    stub: pbg.InventoryServiceStub,
) -> None:
    sku = fresh_sku(stub, 10)
    stream = watch(stub, sku)
    next(stream)
    stream.cancel()  # type: ignore[attr-defined]
    assert_code(fails(lambda: next(stream)), grpc.StatusCode.CANCELLED)
    import_stock(stub, (sku, 9))  # a change with no watcher left
    assert level(stub, sku) == (9, 0, 9)


def test_watch_stock_ends_with_deadline_exceeded(stub: pbg.InventoryServiceStub) -> None:
    sku = fresh_sku(stub, 10)
    stream = watch(stub, sku, timeout=0.5)
    seen = fails(lambda: list(stream))
    assert_deadline_ended(seen)


def test_watch_stock_streams_one_client_holds_are_capped(stub: pbg.InventoryServiceStub) -> None:
    """SHOP_MAX_STREAMS_PER_CLIENT (deploy/stack.toml [limits.services]): a client,
    known by its verified customer (x-shop-customer, which Envoy sets from a token),
    holds that many WatchStock streams and no more; the next is RESOURCE_EXHAUSTED
    at once, another client still watches, and a closed stream frees its slot."""
    cap = topology.load().limits.max_streams_per_client
    sku = fresh_sku(stub, 1)
    request = pb.WatchStockRequest(skus=[sku])
    greedy = (("x-shop-customer", unique("cust-greedy")),)
    held = []
    try:
        for _ in range(cap):
            stream = stub.WatchStock(request, metadata=greedy, timeout=60)
            next(stream)  # open: the current level came
            held.append(stream)
        refused = fails(lambda: next(stub.WatchStock(request, metadata=greedy, timeout=15)))
        assert_code(refused, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "SHOP_MAX_STREAMS_PER_CLIENT" in refused.message, refused.message
        other = stub.WatchStock(request, metadata=(("x-shop-customer", unique("cust-other")),), timeout=15)
        assert next(other).level.sku == sku
        other.cancel()  # type: ignore[attr-defined]
        held.pop().cancel()  # type: ignore[attr-defined]
        # The server frees the slot once it learns of the cancellation.
        deadline = time.monotonic() + 15
        while True:
            again = stub.WatchStock(request, metadata=greedy, timeout=60)
            try:
                next(again)
                held.append(again)
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "a cancelled WatchStock never freed its slot"
                time.sleep(0.05)
    finally:
        for stream in held:
            stream.cancel()


def test_watch_stock_unknown_sku_is_not_found_before_any_message(
    stub: pbg.InventoryServiceStub,
) -> None:
    known, missing = fresh_sku(stub, 1), unique("sku-missing")
    stream = watch(stub, known, missing)
    received: list[pb.WatchStockResponse] = []

    def drain() -> None:
        for message in stream:
            received.append(message)

    seen = fails(drain)
    assert_error_info(seen, NOT_FOUND, "SKU_NOT_FOUND", DOMAIN, {"skus": missing})
    assert received == []


@pytest.mark.parametrize(
    ("skus", "path"),
    [([], "skus"), (["sku-a", ""], "skus[1]"), ([f"sku-{i}" for i in range(101)], "skus")],
    ids=["no-skus", "empty-sku", "101-skus"],
)
def test_watch_stock_bad_input_is_invalid_argument(stub: pbg.InventoryServiceStub, skus: list[str], path: str) -> None:
    assert_bad_request(fails(lambda: list(watch(stub, *skus))), path)


# -- the wire -----------------------------------------------------------------


def test_oversized_request_is_resource_exhausted_and_the_service_carries_on(
    stub: pbg.InventoryServiceStub,
) -> None:
    huge = pb.GetStockRequest(skus=["x" * OVERSIZED_BYTES])
    assert_code(fails(lambda: stub.GetStock(huge)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    sku = fresh_sku(stub, 3)
    assert level(stub, sku) == (3, 0, 3)


def test_malformed_request_is_refused_and_the_service_carries_on(
    channel: grpc.Channel, stub: pbg.InventoryServiceStub
) -> None:
    check_malformed(channel, f"/{FULL_NAME}/GetStock")
    sku = fresh_sku(stub, 3)
    assert level(stub, sku) == (3, 0, 3)


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    check_unknown_method(channel, FULL_NAME)
