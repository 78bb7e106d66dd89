"""SQLite for the asyncio services: one connection, owned by one worker thread.

Each service opens its database file once, in WAL mode (synchronous=FULL) with
a busy timeout.
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

Group commit (`write`). With ``synchronous=FULL`` every COMMIT waits for an
fsync of the write-ahead log, and one fsync costs as much as the rest of a
short transaction many times over. `write` queues a write function; the
database thread takes every write queued meanwhile and runs them in ONE
transaction, each inside a SAVEPOINT (a function that raises rolls back its
own changes only, and its caller gets the exception), then COMMITs once. No
caller gets its result before that COMMIT has returned, so a result is exactly
as durable as with one transaction per write: what a caller was told is
written is on disk. While a batch commits, the next one gathers, so under
concurrent load one fsync serves many writes; alone, a write costs what
`run` costs.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
        # Group commit: the writes waiting for the next batch, and the task
        # that hands batches to the database thread (None when idle).
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

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

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run work(connection) inside a write transaction shared with the
        writes queued meanwhile (group commit, see the module's docstring);
        return its result once that transaction is committed.

        work must not BEGIN or COMMIT: it runs inside BEGIN IMMEDIATE and a
        SAVEPOINT of its own. If it raises, its changes are rolled back and
        the exception is raised here; the other writes of the batch commit.
        A caller cancelled before its batch starts drops its write; once the
        batch has started, the write commits (or not) with the batch.
        """
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.append((work, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name=f"{self.path} group commit")
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._writes:
                batch = [(work, future) for work, future in self._writes if not future.cancelled()]
                self._writes = []
                if not batch:
                    continue
                try:
                    outcomes = await loop.run_in_executor(
                        self._executor, _commit_batch, self._connection, [work for work, _ in batch]
                    )
                except BaseException as exc:  # the COMMIT (or BEGIN) failed: nothing of the batch is written
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flusher = None

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
        if self._flusher is not None:
            # The writes already queued commit before the connection closes.
            await asyncio.shield(self._flusher)
        if self._reader is not None:
            self._reader.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._connection.close)
        finally:
            self._executor.shutdown(wait=False)


def _commit_batch(
    connection: sqlite3.Connection, works: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """On the database thread: every work in one BEGIN IMMEDIATE ... COMMIT,
    each in a savepoint; (True, result) or (False, exception) per work.
    Raises (after a ROLLBACK) if the transaction itself cannot commit."""
    outcomes: list[tuple[bool, Any]] = []
    connection.execute("BEGIN IMMEDIATE")
    try:
        for work in works:
            connection.execute("SAVEPOINT write")
            try:
                result = work(connection)
            except Exception as exc:  # noqa: BLE001 (handed to the caller of write, which raises it)
                connection.execute("ROLLBACK TO write")
                connection.execute("RELEASE write")
                outcomes.append((False, exc))
            else:
                connection.execute("RELEASE write")
                outcomes.append((True, result))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes


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
        # Every COMMIT fsyncs the write-ahead log: said here rather than left
        # to the compile-time default of whichever SQLite the module links.
        connection.execute("PRAGMA synchronous = FULL")
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
