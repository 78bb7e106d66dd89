"""WatchStock, reservation expiry, concurrency on one database file, and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from shop.inventory.v1 import inventory_service_pb2 as pb

from inventory.support import (
    DOMAIN,
    PRODUCTS_FILE,
    SCHEMA_FILE,
    SEED,
    InventoryNode,
    Stub,
    eventually,
    levels,
    next_message,
    reserve_request,
    until_past,
)
from shop_services.inventory.store import InventoryStore, Line, now_ms, read_seed
from shop_services.inventory.watch import StockWatchHub
from support import DEADLINE, fails

# WatchStock


async def test_watch_sends_initial_levels_then_each_change(inventory: Stub) -> None:
    stream = inventory.WatchStock(pb.WatchStockRequest(skus=["sku-a", "sku-b"]), timeout=DEADLINE)
    first, second = await next_message(stream), await next_message(stream)
    assert [(m.level.sku, m.initial, m.level.available) for m in (first, second)] == [
        ("sku-a", True, SEED["sku-a"]),
        ("sku-b", True, SEED["sku-b"]),
    ]

    reservation = (await inventory.Reserve(reserve_request("r-1", ("sku-b", 2)), timeout=DEADLINE)).reservation
    change = await next_message(stream)
    assert (change.level.sku, change.initial, change.level.reserved, change.level.available) == (
        "sku-b",
        False,
        2,
        SEED["sku-b"] - 2,
    )

    await inventory.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    change = await next_message(stream)
    assert (change.level.sku, change.level.on_hand, change.level.reserved) == ("sku-b", SEED["sku-b"] - 2, 0)
    stream.cancel()


async def test_watch_ignores_changes_to_other_skus(inventory: Stub) -> None:
    stream = inventory.WatchStock(pb.WatchStockRequest(skus=["sku-a"]), timeout=DEADLINE)
    assert (await next_message(stream)).initial
    await inventory.Reserve(reserve_request("r-1", ("sku-b", 1)), timeout=DEADLINE)
    await inventory.Reserve(reserve_request("r-2", ("sku-a", 1)), timeout=DEADLINE)
    change = await next_message(stream)
    assert (change.level.sku, change.level.reserved) == ("sku-a", 1)
    stream.cancel()


async def test_watch_of_an_unknown_sku_is_not_found_before_any_message(inventory: Stub) -> None:
    stream = inventory.WatchStock(pb.WatchStockRequest(skus=["sku-a", "nope"]), timeout=DEADLINE)
    error = await fails(stream.read())
    assert (error.code, error.reason, error.domain, error.metadata) == (
        grpc.StatusCode.NOT_FOUND,
        "SKU_NOT_FOUND",
        DOMAIN,
        {"skus": "nope"},
    ), error


async def test_watch_with_bad_skus_is_invalid_argument(inventory: Stub) -> None:
    stream = inventory.WatchStock(pb.WatchStockRequest(skus=[""]), timeout=DEADLINE)
    error = await fails(stream.read())
    assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, ["skus[0]"]), error


async def test_cancelling_a_watch_ends_it_on_the_server(node: InventoryNode, inventory: Stub) -> None:
    assert node.server is not None
    server = node.server
    streams = [inventory.WatchStock(pb.WatchStockRequest(skus=["sku-a"]), timeout=DEADLINE) for _ in range(3)]
    for stream in streams:
        await next_message(stream)
    assert server.watch_count() == 3
    streams[0].cancel()
    await eventually(lambda: server.watch_count() == 2, "the cancelled watch left the hub")
    for stream in streams[1:]:
        stream.cancel()
    await eventually(lambda: server.watch_count() == 0, "every cancelled watch left the hub")
    # The survivors of a cancellation still get changes.
    stream = inventory.WatchStock(pb.WatchStockRequest(skus=["sku-a"]), timeout=DEADLINE)
    await next_message(stream)
    await inventory.Reserve(reserve_request("r-1", ("sku-a", 1)), timeout=DEADLINE)
    assert (await next_message(stream)).level.reserved == 1
    stream.cancel()


async def test_draining_ends_open_watches_with_unavailable(node: InventoryNode, inventory: Stub) -> None:
    stream = inventory.WatchStock(pb.WatchStockRequest(skus=["sku-a"]), timeout=DEADLINE)
    await next_message(stream)
    assert node.server is not None
    stopping = asyncio.ensure_future(node.server.stop(grace=DEADLINE))
    error = await fails(stream.read())
    assert (error.code, error.message) == (
        grpc.StatusCode.UNAVAILABLE,
        "The server is shutting down; watch again.",
    ), error
    await stopping
    node.server = None


async def test_watch_sees_changes_made_by_another_process_on_the_same_file(
    tmp_path: Path, seed_file: Path, node: InventoryNode, inventory: Stub
) -> None:
    # A second server on the same database file stands for another
    # implementation during a live swap: its commits reach this server's
    # watchers through the PRAGMA data_version poll.
    other = InventoryNode(node.db_path, seed_file)
    other_stub = await other.start()
    try:
        stream = inventory.WatchStock(pb.WatchStockRequest(skus=["sku-d"]), timeout=DEADLINE)
        await next_message(stream)
        await other_stub.Reserve(reserve_request("r-other", ("sku-d", 7)), timeout=DEADLINE)
        change = await next_message(stream)
        assert (change.level.sku, change.initial, change.level.reserved) == ("sku-d", False, 7)
        stream.cancel()
    finally:
        await other.stop()


# Expiry


async def test_sweeper_expires_an_uncommitted_reservation_and_watchers_see_it(tmp_path: Path, seed_file: Path) -> None:
    node = InventoryNode(tmp_path / "inventory.db", seed_file, ttl_seconds=0.2)
    stub = await node.start()
    try:
        stream = stub.WatchStock(pb.WatchStockRequest(skus=["sku-a"]), timeout=DEADLINE)
        await next_message(stream)
        reservation = (await stub.Reserve(reserve_request("r-1", ("sku-a", 4)), timeout=DEADLINE)).reservation
        assert reservation.expire_time.ToMilliseconds() - reservation.create_time.ToMilliseconds() == 200
        assert (await next_message(stream)).level.reserved == 4
        # Nothing else touches the database: only the sweeper can expire it.
        expired = await next_message(stream)
        assert (expired.level.reserved, expired.level.available) == (0, SEED["sku-a"])
        stream.cancel()

        error = await fails(stub.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id)))
        assert (error.code, error.reason, error.domain) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_EXPIRED",
            DOMAIN,
        ), error
        error = await fails(stub.Release(pb.ReleaseRequest(reservation_id=reservation.reservation_id)))
        assert error.reason == "RESERVATION_EXPIRED", error
        retry = (await stub.Reserve(reserve_request("r-1", ("sku-a", 4)), timeout=DEADLINE)).reservation
        assert (retry.reservation_id, retry.state) == (reservation.reservation_id, pb.RESERVATION_STATE_EXPIRED)
    finally:
        await node.stop()


async def test_an_overdue_reservation_counts_as_expired_without_any_sweep(tmp_path: Path, seed_file: Path) -> None:
    node = InventoryNode(tmp_path / "inventory.db", seed_file, ttl_seconds=0.05, sweep_interval=0)
    stub = await node.start()
    try:
        reservation = (await stub.Reserve(reserve_request("r-1", ("sku-b", 5)), timeout=DEADLINE)).reservation
        await until_past(reservation.expire_time.ToMilliseconds())
        # The write transaction of the next Reserve expires it first, so the
        # stock it held is available again.
        again = (await stub.Reserve(reserve_request("r-2", ("sku-b", 5)), timeout=DEADLINE)).reservation
        assert again.state == pb.RESERVATION_STATE_RESERVED
        await until_past(again.expire_time.ToMilliseconds())
        # A read expires overdue reservations too.
        assert (await levels(stub, "sku-b"))["sku-b"].reserved == 0
        error = await fails(stub.Commit(pb.CommitRequest(reservation_id=again.reservation_id)))
        assert error.reason == "RESERVATION_EXPIRED", error
    finally:
        await node.stop()


# Concurrency


async def test_concurrent_reserves_on_two_servers_sharing_a_file_never_oversell(
    tmp_path: Path, seed_file: Path, node: InventoryNode, inventory: Stub
) -> None:
    other = InventoryNode(node.db_path, seed_file)
    other_stub = await other.start()
    try:
        stubs = [inventory, other_stub]
        calls = [
            stubs[i % 2].Reserve(reserve_request(f"r-{i}", ("sku-a", 1)), timeout=DEADLINE)
            for i in range(SEED["sku-a"] * 3)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        succeeded = [r for r in results if isinstance(r, pb.ReserveResponse)]
        failed = [r for r in results if not isinstance(r, pb.ReserveResponse)]
        assert len(succeeded) == SEED["sku-a"], failed
        for failure in failed:
            assert isinstance(failure, grpc.aio.AioRpcError), failure
            assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION, failure
        for stub in stubs:
            level = (await levels(stub, "sku-a"))["sku-a"]
            assert (level.reserved, level.available) == (SEED["sku-a"], 0)
    finally:
        await other.stop()


async def test_concurrent_retries_of_one_request_id_reserve_once(inventory: Stub) -> None:
    request = reserve_request("r-same", ("sku-d", 3))
    results = await asyncio.gather(*(inventory.Reserve(request, timeout=DEADLINE) for _ in range(10)))
    assert len({r.reservation.reservation_id for r in results}) == 1
    assert (await levels(inventory, "sku-d"))["sku-d"].reserved == 3


# Durability and seeding


async def test_restart_keeps_stock_and_reservations_and_does_not_reseed(node: InventoryNode, inventory: Stub) -> None:
    reservation = (await inventory.Reserve(reserve_request("r-1", ("sku-a", 2)), timeout=DEADLINE)).reservation

    async def one_item() -> AsyncIterator[pb.ImportStockRequest]:
        yield pb.ImportStockRequest(sku="sku-b", on_hand=42)

    await inventory.ImportStock(one_item(), timeout=DEADLINE)

    restarted = await node.restart()

    stock = await levels(restarted, "sku-a", "sku-b")
    assert (stock["sku-a"].on_hand, stock["sku-a"].reserved) == (SEED["sku-a"], 2)
    assert stock["sku-b"].on_hand == 42
    committed = await restarted.Commit(pb.CommitRequest(reservation_id=reservation.reservation_id), timeout=DEADLINE)
    assert committed.reservation.state == pb.RESERVATION_STATE_COMMITTED
    retry = await restarted.Reserve(reserve_request("r-1", ("sku-a", 2)), timeout=DEADLINE)
    assert retry.reservation.reservation_id == reservation.reservation_id


async def test_a_new_database_is_seeded_from_products_json(tmp_path: Path) -> None:
    node = InventoryNode(tmp_path / "inventory.db", PRODUCTS_FILE)
    stub = await node.start()
    try:
        seed = read_seed(PRODUCTS_FILE)
        stock = await levels(stub, *(sku for sku, _ in seed))
        assert {sku: level.on_hand for sku, level in stock.items()} == dict(seed)
    finally:
        await node.stop()


async def test_watchers_see_a_commit_whose_caller_was_cancelled(tmp_path: Path, seed_file: Path) -> None:
    # The store's clock runs inside the write transaction on the database
    # thread: holding it there lets the test cancel the caller mid-transaction.
    inside, resume = threading.Event(), threading.Event()
    hold = False

    def clock() -> int:
        if hold:
            inside.set()
            resume.wait(DEADLINE)
        return now_ms()

    store = await InventoryStore.open(
        tmp_path / "inventory.db", seed_file=seed_file, schema_file=SCHEMA_FILE, clock=clock
    )
    hub = StockWatchHub(store, logging.getLogger("test"))
    try:
        watch = await hub.watch(["sku-a"])
        events = watch.events()
        assert (await anext(events)).initial
        hold = True
        reserving = asyncio.ensure_future(store.reserve("r-1", [Line("sku-a", 2)], ttl_ms=60_000))
        await asyncio.to_thread(inside.wait, DEADLINE)
        hold = False
        reserving.cancel()
        resume.set()
        with contextlib.suppress(asyncio.CancelledError):
            await reserving
        change = await asyncio.wait_for(anext(events), timeout=DEADLINE)
        assert (change.initial, change.level.reserved) == (False, 2)
        hub.remove(watch)
    finally:
        await hub.close()
        await store.close()
