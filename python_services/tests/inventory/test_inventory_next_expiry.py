"""The next expiry: GetStock's read skips the expiry path until a reservation
is due, and still never counts a reservation past its deadline as reserved."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from inventory.support import SCHEMA_FILE, SEED
from shop_services.common.errors import RpcError
from shop_services.inventory.store import InventoryStore, Line

START = 1_700_000_000_000  # the test clock's first reading, Unix ms
TTL = 1_000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def open_store(path: Path, seed_file: Path, clock: Clock) -> InventoryStore:
    return await InventoryStore.open(path, seed_file=seed_file, schema_file=SCHEMA_FILE, clock=clock)


@pytest.fixture
async def store(tmp_path: Path, seed_file: Path, clock: Clock) -> AsyncIterator[InventoryStore]:
    store = await open_store(tmp_path / "inventory.db", seed_file, clock)
    try:
        yield store
    finally:
        await store.close()


def count_calls(store: InventoryStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every function the store hands to its database thread."""
    db = store._db  # the test watches the hand-offs
    calls: list[str] = []
    run = db.run

    async def counted(work: Callable[[sqlite3.Connection], Any]) -> Any:
        calls.append(getattr(work, "__qualname__", repr(work)))
        return await run(work)

    monkeypatch.setattr(db, "run", counted)
    return calls


async def reserved_of(store: InventoryStore, sku: str) -> int:
    return (await store.read_levels([sku]))[sku].reserved


async def test_a_read_before_the_next_expiry_does_not_reach_the_database_thread(
    store: InventoryStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.reserve("r-1", [Line("sku-a", 3)], ttl_ms=TTL)
    calls = count_calls(store, monkeypatch)
    clock.now = START + TTL - 1
    assert await reserved_of(store, "sku-a") == 3
    assert await reserved_of(store, "sku-b") == 0
    assert calls == [], f"reads before the deadline went to the database thread: {calls}"


async def test_a_read_at_the_deadline_exactly_sees_the_stock_released(store: InventoryStore, clock: Clock) -> None:
    await store.reserve("r-1", [Line("sku-a", 3)], ttl_ms=TTL)
    assert store.next_expiry == START + TTL
    clock.now = START + TTL
    level = (await store.read_levels(["sku-a"]))["sku-a"]
    assert (level.on_hand, level.reserved) == (SEED["sku-a"], 0)
    # Expired on the way, so the next expiry moves past it.
    assert await reserved_of(store, "sku-a") == 0
    assert store.next_expiry is None


async def test_a_read_after_the_deadline_sees_the_stock_released(store: InventoryStore, clock: Clock) -> None:
    await store.reserve("r-1", [Line("sku-a", 3)], ttl_ms=TTL)
    clock.now = START + 10
    await store.reserve("r-2", [Line("sku-b", 1)], ttl_ms=TTL)
    clock.now = START + TTL + 5
    found = await store.read_levels(["sku-b", "sku-a"])
    assert [(sku, level.reserved) for sku, level in found.items()] == [("sku-b", 1), ("sku-a", 0)]
    assert store.next_expiry == START + 10 + TTL
    clock.now = START + 10 + TTL + 1
    assert await reserved_of(store, "sku-b") == 0


async def test_a_reservation_made_lowers_the_next_expiry_and_a_commit_raises_it(
    store: InventoryStore, clock: Clock
) -> None:
    first = await store.reserve("r-1", [Line("sku-a", 1)], ttl_ms=5 * TTL)
    await reserved_of(store, "sku-a")
    assert store.next_expiry == START + 5 * TTL
    second = await store.reserve("r-2", [Line("sku-a", 1)], ttl_ms=TTL)
    await reserved_of(store, "sku-a")
    assert store.next_expiry == START + TTL
    await store.commit(second.reservation_id)
    await reserved_of(store, "sku-a")
    assert store.next_expiry == START + 5 * TTL
    await store.release(first.reservation_id)
    assert await reserved_of(store, "sku-a") == 0
    assert store.next_expiry is None


async def test_a_restarted_store_computes_the_next_expiry_from_the_file(
    tmp_path: Path, seed_file: Path, clock: Clock
) -> None:
    path = tmp_path / "inventory.db"
    first = await open_store(path, seed_file, clock)
    try:
        await first.reserve("r-1", [Line("sku-a", 4)], ttl_ms=TTL)
    finally:
        await first.close()
    second = await open_store(path, seed_file, clock)
    try:
        assert second.next_expiry == START + TTL
        assert await reserved_of(second, "sku-a") == 4
        clock.now = START + TTL
        assert await reserved_of(second, "sku-a") == 0
    finally:
        await second.close()


async def test_a_reservation_another_process_wrote_expires_at_its_deadline(
    tmp_path: Path, store: InventoryStore, clock: Clock
) -> None:
    # Another implementation on the same file (a live swap): its commits are
    # not this store's, and the next expiry still follows them.
    assert await reserved_of(store, "sku-a") == 0
    other = sqlite3.connect(tmp_path / "inventory.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO reservations (reservation_id, request_id, fingerprint, state, create_time, expire_time,"
            " update_time) VALUES ('other-1', 'other-req', 'x', 'RESERVED', ?, ?, ?)",
            (START, START + TTL, START),
        )
        other.execute("INSERT INTO reservation_lines (reservation_id, sku, quantity) VALUES ('other-1', 'sku-a', 2)")
        other.execute("UPDATE stock SET reserved = reserved + 2 WHERE sku = 'sku-a'")
        other.execute("COMMIT")
    finally:
        other.close()
    assert await reserved_of(store, "sku-a") == 2
    assert store.next_expiry == START + TTL
    clock.now = START + TTL
    assert await reserved_of(store, "sku-a") == 0


async def test_the_sweep_does_nothing_before_the_next_expiry_and_expires_at_it(
    store: InventoryStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.reserve("r-1", [Line("sku-a", 3)], ttl_ms=TTL)
    calls = count_calls(store, monkeypatch)
    clock.now = START + TTL - 1
    assert await store.expire_due() == 0
    assert calls == []
    clock.now = START + TTL
    assert await store.expire_due() == 1
    assert len(calls) == 1
    assert await reserved_of(store, "sku-a") == 0


async def test_unknown_skus_are_not_found_naming_each_once_in_order(store: InventoryStore) -> None:
    with pytest.raises(RpcError) as raised:
        await store.read_levels(["nope-2", "sku-a", "nope-1", "nope-2"])
    error = raised.value
    infos = [detail for detail in error.details if isinstance(detail, error_details_pb2.ErrorInfo)]
    assert (error.code, [(info.reason, dict(info.metadata)) for info in infos]) == (
        grpc.StatusCode.NOT_FOUND,
        [("SKU_NOT_FOUND", {"skus": "nope-2,nope-1"})],
    ), error.details
