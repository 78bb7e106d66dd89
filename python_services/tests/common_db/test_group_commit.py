"""common.db.Database.write: the writes queued meanwhile share one transaction
(one fsync), each is atomic on its own, and none returns before its COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shop_services.common.db import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "t.db")
    await database.run(lambda conn: conn.execute(SCHEMA))
    yield database
    await database.close()


async def trace(db: Database) -> list[str]:
    """Every statement the database thread runs from now on."""
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))
    return statements


def insert(key: str, value: int) -> object:
    def work(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
        return key

    return work


def committed(path: str) -> dict[str, int]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as other:
        return dict(other.execute("SELECT k, v FROM t").fetchall())


async def test_writes_queued_while_a_batch_commits_share_the_next_commit(db: Database) -> None:
    statements = await trace(db)
    entered, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> str:
        entered.set()
        assert release.wait(10), "the test never released the first write"
        conn.execute("INSERT INTO t (k, v) VALUES ('first', 0)")
        return "first"

    first = asyncio.ensure_future(db.write(slow))
    assert await asyncio.to_thread(entered.wait, 10)
    # The first batch is on the database thread; these ten gather meanwhile.
    rest = [asyncio.ensure_future(db.write(insert(f"k{i}", i))) for i in range(10)]
    await asyncio.sleep(0)
    release.set()

    assert await first == "first"
    assert await asyncio.gather(*rest) == [f"k{i}" for i in range(10)]
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"] * 2
    assert len(committed(db.path)) == 11


async def test_a_write_returns_only_once_its_commit_is_visible_to_another_connection(db: Database) -> None:
    for i in range(5):
        key = await db.write(insert(f"r{i}", i))
        assert committed(db.path)[key] == i


async def test_a_failing_write_rolls_back_alone_and_raises_to_its_caller(db: Database) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('half', 1)")
        raise ValueError("refused")

    results = await asyncio.gather(
        db.write(insert("before", 1)),
        db.write(half_then_fail),
        db.write(insert("after", 2)),
        return_exceptions=True,
    )

    assert results[0] == "before" and results[2] == "after"
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused"
    assert committed(db.path) == {"before": 1, "after": 2}


async def test_a_constraint_violation_fails_that_write_only(db: Database) -> None:
    await db.write(insert("dup", 1))
    results = await asyncio.gather(db.write(insert("dup", 2)), db.write(insert("fresh", 3)), return_exceptions=True)
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert results[1] == "fresh"
    assert committed(db.path) == {"dup": 1, "fresh": 3}


async def test_a_write_cancelled_before_its_batch_starts_is_dropped(db: Database) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        entered.set()
        assert release.wait(10)

    first = asyncio.ensure_future(db.write(slow))
    assert await asyncio.to_thread(entered.wait, 10)
    dropped = asyncio.ensure_future(db.write(insert("dropped", 1)))
    kept = asyncio.ensure_future(db.write(insert("kept", 2)))
    await asyncio.sleep(0)
    dropped.cancel()
    release.set()
    await first
    assert await kept == "kept"
    assert committed(db.path) == {"kept": 2}


async def test_close_commits_the_writes_already_queued(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "c.db")
    await db.run(lambda conn: conn.execute(SCHEMA))
    writes = [asyncio.ensure_future(db.write(insert(f"q{i}", i))) for i in range(3)]
    await asyncio.sleep(0)
    await db.close()
    assert await asyncio.gather(*writes) == ["q0", "q1", "q2"]
    assert len(committed(db.path)) == 3
    with pytest.raises(RuntimeError, match="closed"):
        await db.write(insert("late", 0))
