"""SQLite for the asyncio services: one connection, owned by one worker thread.

Each service opens its database file once, in WAL mode with a busy timeout.
Every piece of database work is a short synchronous function (normally one
transaction) that runs on a dedicated single-thread executor:

- the event loop never blocks on the disk, nor on another process's write lock
  (two inventory implementations may share one file during a live swap, and
  BEGIN IMMEDIATE then waits up to the busy timeout);
- the work is serialised, so no two transactions of one process interleave and
  the connection is only ever used by the thread that opened it.

Point reads are the exception (`read`): in WAL mode a reader never waits for
a writer, so a one-statement read runs on the event loop thread itself, on a
second, read-only connection. That saves the two thread hand-offs per call,
which `make bench` showed to be a large share of a cheap read's CPU
(docs/performance.md, "P1").

A caller that is cancelled while its function is queued drops the function; a
function that has started runs to the end, so a transaction is never cut in
half.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 10_000


class Database:
    """One SQLite connection and the thread that runs every function on it."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection, path: str) -> None:
        self._executor = executor
        self._connection = connection
        self._closed = False
        self.path = path
        # Opened on first use by the thread that reads: the event loop's.
        self._reader: sqlite3.Connection | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        thread_name: str = "db",
    ) -> Database:
        """Open (creating if needed) the file in WAL mode with a busy timeout."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(executor, _connect, str(path), busy_timeout_ms)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, connection, str(path))

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run work(connection) on the database thread and return its result."""
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._connection)

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read on the calling (event loop) thread, on a read-only
        connection. Only for reads that cannot wait: WAL readers see the last
        committed state and never block on a writer."""
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        if self._reader is None:
            self._reader = _connect_reader(self.path)
        return work(self._reader)

    async def close(self) -> None:
        """Close the connection after the work already queued; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._connection.close)
        finally:
            self._executor.shutdown(wait=False)


def _connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module never opens transactions on its
    # own; transaction() below issues BEGIN / BEGIN IMMEDIATE explicitly.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot put {path} in WAL mode (journal_mode is {mode})")
        connection.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        connection.close()
        raise
    return connection


def _connect_reader(path: str) -> sqlite3.Connection:
    # mode=ro: this connection can never write, so it never takes a write lock.
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA query_only = ON")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection, *, write: bool) -> Iterator[sqlite3.Connection]:
    """One transaction: BEGIN IMMEDIATE for writes (the write lock is taken up
    front, so a read-then-write never fails half-way with SQLITE_BUSY), a
    deferred BEGIN for consistent multi-statement reads. Commits on success,
    rolls back on any exception and re-raises it."""
    connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield connection
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
