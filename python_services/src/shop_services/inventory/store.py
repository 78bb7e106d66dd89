"""The inventory's SQLite store, on the layout of data/inventory_schema.sql.

All state lives in the database, so another implementation of the contract
can run on the same file at the same time; the one thing kept in memory, the
next expiry (below), is checked against every commit to the file. The
rules written at the top of data/inventory_schema.sql (and in
docs/conventions.md) are followed to the letter:

- every connection sets WAL, busy_timeout = 5000 and foreign_keys;
- start-up applies the schema in one BEGIN IMMEDIATE transaction and, when
  meta has no schema_version, records it and seeds the stock in that same
  transaction;
- every write is one BEGIN IMMEDIATE transaction that first expires overdue
  reservations (state RESERVED, expire_time <= now), returning their stock;
- times are integer Unix milliseconds.

Every write runs one short function on the database thread
(common.db.Database), so the work of this process is serialised and the event
loop never waits for another process's lock.

GetStock's read (read_levels) is the exception: it runs on the event loop, on
the database's read-only connection (a WAL reader never waits for a writer),
unless a reservation is due to expire, which takes a write. To know that
without a query per read, the store keeps **the next expiry**: the earliest
expire_time among RESERVED reservations, with the read connection's PRAGMA
data_version it was computed at. It is computed from the file when the store
opens, lowered when a reservation is made, recomputed (one indexed MIN query)
after an expiry, and recomputed by the first read after any other commit to
the file: this process's commits and releases, which may remove the earliest
reservation, and another implementation's writes on the same file during a
swap alike, since the read connection's data_version moves with every other
connection's commit. A read whose `now` is before the next expiry skips the
expiry path entirely: no count query, no write, no hand-off to the database
thread. A read at or past it goes through the database thread, which expires
what is due first, as every write does; so a reservation past its deadline is
never counted as reserved by any read.

Each function that changed stock reads the changed levels right after its
commit and hands them, with a sequence number, to the change listeners (the
WatchStock hub), even when the caller has gone meanwhile: the sequence orders
the reads, so a listener can drop a read that is older than one it has already
seen.

Business failures are returned by the transaction functions rather than
raised, so the expiries made on the way are committed; the async methods raise
them after the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, Literal, TypeVar

from shop_services.common.db import Database, transaction
from shop_services.common.errors import RpcError
from shop_services.inventory import errors

T = TypeVar("T")

# The next expiry when no reservation is RESERVED: later than any time.
NO_EXPIRY = 2**63 - 1

# The schema_version this code reads and writes.
SCHEMA_VERSION = 1
# How long a connection waits for another writer (the schema fixes it).
BUSY_TIMEOUT_MS = 5000

ReservationStateName = Literal["RESERVED", "COMMITTED", "RELEASED", "EXPIRED"]


def now_ms() -> int:
    """The wall clock in integer Unix milliseconds, the schema's time unit."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class StockRow:
    """One SKU's stock; update_time is in Unix milliseconds."""

    sku: str
    on_hand: int
    reserved: int
    update_time: int


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class ReservationRecord:
    reservation_id: str
    request_id: str
    state: ReservationStateName
    create_time: int
    expire_time: int
    # One line per SKU, ordered by SKU (UTF-8 byte order).
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class ImportItem:
    sku: str
    on_hand: int


@dataclass(frozen=True)
class ImportSummary:
    skus_created: int
    skus_updated: int


@dataclass(frozen=True)
class ImportProblem:
    """An import item that cannot be applied, by its zero-based index."""

    index: int
    field: Literal["sku", "on_hand"]
    description: str


@dataclass(frozen=True)
class StockSnapshot:
    """Levels read at one point of this process's database history.

    seq grows with every read made on the database thread, so of two
    snapshots the one with the larger seq is the newer.
    """

    seq: int
    levels: Mapping[str, StockRow]
    # PRAGMA data_version when the levels were read (see InventoryStore.poll).
    data_version: int


# Called on the event loop after a committed change, with the changed levels.
ChangeListener = Callable[[StockSnapshot], None]


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    """What one database function produced: its result (or the business error
    to raise) and the levels its commit changed."""

    result: T | RpcError
    changes: StockSnapshot | None = None
    expired: int = 0


def utf8_order(sku: str) -> bytes:
    """Sort key: SKUs compare by their UTF-8 bytes, as SQLite, Go and Node do."""
    return sku.encode("utf-8")


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """Adds up lines of the same SKU and orders them by SKU."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return [Line(sku, quantity) for sku, quantity in sorted(totals.items(), key=lambda item: utf8_order(item[0]))]


def fingerprint(merged: Sequence[Line]) -> str:
    """The request fingerprint data/inventory_schema.sql defines, over merged lines."""
    text = "".join(f"{len(line.sku.encode('utf-8'))}:{line.sku}:{line.quantity};" for line in merged)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_seed(seed_file: str | Path) -> list[tuple[str, int]]:
    """(sku, initial_stock) for every product in products.json."""
    try:
        parsed = json.loads(Path(seed_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"read seed file {seed_file}: {exc}") from exc
    products = parsed.get("products") if isinstance(parsed, dict) else None
    if not isinstance(products, list):
        raise ValueError(f'seed file {seed_file}: "products" must be an array')
    seed: list[tuple[str, int]] = []
    for index, product in enumerate(products):
        sku = product.get("id") if isinstance(product, dict) else None
        stock = product.get("initial_stock") if isinstance(product, dict) else None
        if not isinstance(sku, str) or not sku or not isinstance(stock, int) or isinstance(stock, bool) or stock < 0:
            raise ValueError(
                f"seed file {seed_file}: products[{index}] needs a string id and a whole initial_stock of 0 or more"
            )
        seed.append((sku, stock))
    return seed


class InventoryStore:
    """Stock and reservations in one SQLite file shared with other implementations."""

    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock
        # Numbers the snapshots; only ever advanced on the database thread.
        self._seq = itertools.count(1)
        self._listeners: list[ChangeListener] = []
        # The next expiry (see the module's docstring) and the read
        # connection's data_version it was computed at (None: not yet).
        # Used on the event loop thread only.
        self._next_expiry = NO_EXPIRY
        self._expiry_version: int | None = None

    @classmethod
    async def open(
        cls,
        db_path: str | Path,
        *,
        seed_file: str | Path,
        schema_file: str | Path,
        clock: Callable[[], int] = now_ms,
    ) -> InventoryStore:
        """Open the file, applying the schema and seeding the stock when it is new."""
        db = await Database.open(db_path, busy_timeout_ms=BUSY_TIMEOUT_MS, thread_name="inventory-db")
        store = cls(db, clock)
        try:
            await db.run(lambda conn: store._migrate(conn, schema_file, seed_file))
            # The next expiry, from the file (reservations made before a restart).
            db.read(store._refresh_next_expiry)
        except BaseException:
            await db.close()
            raise
        return store

    def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        """Registers a listener for committed stock changes; returns its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def close(self) -> None:
        self._listeners.clear()
        await self._db.close()

    # Reads

    @property
    def next_expiry(self) -> int | None:
        """The earliest expire_time of a RESERVED reservation as of the last
        read (Unix ms), or None when there was none."""
        return None if self._next_expiry == NO_EXPIRY else self._next_expiry

    async def read_levels(self, skus: Sequence[str]) -> Mapping[str, StockRow]:
        """GetStock's read: the current levels of the SKUs, by SKU.

        On the event loop when no reservation is due (the next expiry, see
        the module's docstring), else through get_stock on the database
        thread, which expires the due ones first. Raises SKU_NOT_FOUND naming
        every unknown SKU (each once, in the order asked).
        """
        unique = list(dict.fromkeys(skus))
        levels = _read_at_once(self._db, lambda conn: self._read_if_none_due(conn, unique))
        if levels is None:
            # Something is due, or the read connection could not read at
            # once: the database thread expires and waits.
            found = (await self.get_stock(unique)).levels
            self._after_expiry()
            return found
        if len(levels) < len(unique):
            raise errors.sku_not_found([sku for sku in unique if sku not in levels])
        return levels

    async def get_stock(self, skus: Sequence[str]) -> StockSnapshot:
        """The current levels of the SKUs, after expiring overdue reservations,
        read on the database thread (WatchStock's initial levels: the
        snapshot's seq and data_version order it against the changes).

        Raises SKU_NOT_FOUND naming every unknown SKU (each once, in the order
        asked).
        """
        return await self._run(lambda conn: self._get_stock(conn, skus))

    async def poll(self, skus: Iterable[str], last_data_version: int) -> StockSnapshot | None:
        """The levels of the SKUs if PRAGMA data_version moved from last_data_version.

        data_version changes when another connection (another process)
        commits, never for this connection's own commits, so this finds the
        changes other implementations made to the shared file.
        """
        unique = list(dict.fromkeys(skus))

        def work(conn: sqlite3.Connection) -> _Outcome[StockSnapshot | None]:
            if _data_version(conn) == last_data_version:
                return _Outcome(None)
            return _Outcome(self._snapshot(conn, unique))

        return await self._run(work)

    # Writes

    async def expire_due(self) -> int:
        """Expire every overdue reservation; takes the write lock only when one is due.

        Before the next expiry (see the module's docstring) there is nothing
        to do, and the database thread is not asked."""
        if _read_at_once(self._db, self._none_due):
            return 0

        def work(conn: sqlite3.Connection) -> _Outcome[int]:
            (due,) = conn.execute(
                "SELECT count(*) FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?", (self._clock(),)
            ).fetchone()
            if due == 0:
                return _Outcome(0)
            swept = self._write(conn, lambda _conn, _now, _changed: None)
            return _Outcome(swept.expired, swept.changes, swept.expired)

        expired = await self._run(work)
        self._after_expiry()
        return expired

    async def reserve(self, request_id: str, lines: Sequence[Line], ttl_ms: int) -> ReservationRecord:
        """Reserve the merged lines for request_id, all or nothing.

        A retry with the same lines returns the stored reservation, whatever
        its state now; different lines are REQUEST_ID_REUSED.
        """
        merged = merge_lines(lines)
        request_print = fingerprint(merged)

        def reserve(conn: sqlite3.Connection, now: int, changed: dict[str, None]) -> ReservationRecord | RpcError:
            existing = conn.execute("SELECT * FROM reservations WHERE request_id = ?", (request_id,)).fetchone()
            if existing is not None:
                if existing["fingerprint"] != request_print:
                    return errors.request_id_reused(request_id)
                return _load_reservation(conn, existing)
            levels = _read_rows(conn, [line.sku for line in merged])
            missing = [line.sku for line in merged if line.sku not in levels]
            if missing:
                return errors.sku_not_found(missing)
            short = [line for line in merged if _available(levels[line.sku]) < line.quantity]
            if short:
                detail = ", ".join(
                    f"{line.sku} (asked {line.quantity}, available {_available(levels[line.sku])})" for line in short
                )
                return errors.business_error(
                    "OUT_OF_STOCK",
                    f"Not enough stock to reserve: {detail}; nothing was reserved.",
                    {"skus": ",".join(line.sku for line in short)},
                )
            reservation = ReservationRecord(
                reservation_id=str(uuid.uuid4()),
                request_id=request_id,
                state="RESERVED",
                create_time=now,
                expire_time=now + ttl_ms,
                lines=tuple(merged),
            )
            conn.execute(
                """
                INSERT INTO reservations
                  (reservation_id, request_id, fingerprint, state, create_time, expire_time, update_time)
                VALUES (?, ?, ?, 'RESERVED', ?, ?, ?)
                """,
                (reservation.reservation_id, request_id, request_print, now, reservation.expire_time, now),
            )
            for line in merged:
                conn.execute(
                    "INSERT INTO reservation_lines (reservation_id, sku, quantity) VALUES (?, ?, ?)",
                    (reservation.reservation_id, line.sku, line.quantity),
                )
                conn.execute(
                    "UPDATE stock SET reserved = reserved + ?, update_time = ? WHERE sku = ?",
                    (line.quantity, now, line.sku),
                )
                changed[line.sku] = None
            return reservation

        record = await self._run(lambda conn: self._write(conn, reserve))
        if record.state == "RESERVED":
            # Lowered at once; the next read checks it against the file anyway.
            self._next_expiry = min(self._next_expiry, record.expire_time)
        return record

    async def commit(self, reservation_id: str) -> ReservationRecord:
        """Turn a reservation into a permanent decrement of on_hand (idempotent)."""

        def commit(conn: sqlite3.Connection, now: int, changed: dict[str, None]) -> ReservationRecord | RpcError:
            row = conn.execute("SELECT * FROM reservations WHERE reservation_id = ?", (reservation_id,)).fetchone()
            if row is None:
                return errors.reservation_not_found(reservation_id)
            state: ReservationStateName = row["state"]
            if state == "COMMITTED":
                return _load_reservation(conn, row)
            if state == "RELEASED":
                return errors.reservation_released(reservation_id)
            if state == "EXPIRED":
                return errors.reservation_expired(reservation_id)
            reservation = _load_reservation(conn, row)
            for line in reservation.lines:
                conn.execute(
                    "UPDATE stock SET on_hand = on_hand - ?, reserved = reserved - ?, update_time = ? WHERE sku = ?",
                    (line.quantity, line.quantity, now, line.sku),
                )
                changed[line.sku] = None
            _set_state(conn, reservation_id, "COMMITTED", now)
            return replace(reservation, state="COMMITTED")

        return await self._run(lambda conn: self._write(conn, commit))

    async def release(self, reservation_id: str) -> ReservationRecord:
        """Cancel a reservation and return its stock (idempotent)."""

        def release(conn: sqlite3.Connection, now: int, changed: dict[str, None]) -> ReservationRecord | RpcError:
            row = conn.execute("SELECT * FROM reservations WHERE reservation_id = ?", (reservation_id,)).fetchone()
            if row is None:
                return errors.reservation_not_found(reservation_id)
            state: ReservationStateName = row["state"]
            if state == "RELEASED":
                return _load_reservation(conn, row)
            if state == "COMMITTED":
                return errors.reservation_committed(reservation_id)
            if state == "EXPIRED":
                return errors.reservation_expired(reservation_id)
            reservation = _load_reservation(conn, row)
            _return_stock(conn, reservation.lines, now, changed)
            _set_state(conn, reservation_id, "RELEASED", now)
            return replace(reservation, state="RELEASED")

        return await self._run(lambda conn: self._write(conn, release))

    async def import_stock(self, items: Sequence[ImportItem]) -> ImportSummary | list[ImportProblem]:
        """Set on_hand for every item in one transaction, or apply nothing and
        return the problems. A later item for the same SKU wins."""

        def import_(
            conn: sqlite3.Connection, now: int, changed: dict[str, None]
        ) -> ImportSummary | list[ImportProblem]:
            levels = _read_rows(conn, [item.sku for item in items])
            problems = [
                ImportProblem(
                    index,
                    "on_hand",
                    f"must not be below the {levels[item.sku].reserved} units reserved for {item.sku}",
                )
                for index, item in enumerate(items)
                if item.sku in levels and item.on_hand < levels[item.sku].reserved
            ]
            if problems:
                return problems
            final_on_hand: dict[str, int] = {}
            for item in items:
                final_on_hand[item.sku] = item.on_hand
            created = updated = 0
            for sku, on_hand in final_on_hand.items():
                if sku in levels:
                    updated += 1
                    cursor = conn.execute(
                        "UPDATE stock SET on_hand = ?, update_time = ? WHERE sku = ? AND on_hand <> ?",
                        (on_hand, now, sku, on_hand),
                    )
                    if cursor.rowcount > 0:
                        changed[sku] = None
                else:
                    created += 1
                    conn.execute(
                        "INSERT INTO stock (sku, on_hand, reserved, update_time) VALUES (?, ?, 0, ?)",
                        (sku, on_hand, now),
                    )
                    changed[sku] = None
            return ImportSummary(skus_created=created, skus_updated=updated)

        return await self._run(lambda conn: self._write(conn, import_))

    # Machinery

    async def _run(self, work: Callable[[sqlite3.Connection], _Outcome[T]]) -> T:
        """Run work on the database thread, then return its result or raise its
        business error.

        The listeners hear about what its commit changed even when the caller
        is cancelled meanwhile (a client gone after the commit): the database
        thread schedules the notification on the event loop as soon as the
        work is done, ahead of the caller's resumption.
        """
        loop = asyncio.get_running_loop()

        def work_and_notify(conn: sqlite3.Connection) -> _Outcome[T]:
            outcome = work(conn)
            if outcome.changes is not None and outcome.changes.levels:
                loop.call_soon_threadsafe(self._notify, outcome.changes)
            return outcome

        try:
            outcome = await self._db.run(work_and_notify)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                raise errors.database_busy() from exc
            raise
        if isinstance(outcome.result, RpcError):
            raise outcome.result
        return outcome.result

    def _notify(self, changes: StockSnapshot) -> None:
        for listener in list(self._listeners):
            listener(changes)

    def _write(
        self,
        conn: sqlite3.Connection,
        work: Callable[[sqlite3.Connection, int, dict[str, None]], T | RpcError],
    ) -> _Outcome[T]:
        """One BEGIN IMMEDIATE transaction: expire overdue reservations, then
        work(conn, now, changed), which adds every SKU whose stock it changes
        to changed (an ordered set). The changed levels are read after the
        commit."""
        changed: dict[str, None] = {}
        with transaction(conn, write=True):
            now = self._clock()
            expired = _expire_due_in(conn, now, changed)
            result = work(conn, now, changed)
        changes = self._snapshot(conn, list(changed)) if changed else None
        return _Outcome(result, changes, expired)

    def _get_stock(self, conn: sqlite3.Connection, skus: Sequence[str]) -> _Outcome[StockSnapshot]:
        (due,) = conn.execute(
            "SELECT count(*) FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?", (self._clock(),)
        ).fetchone()
        changes = self._write(conn, lambda _conn, _now, _changed: None).changes if due else None
        snapshot = self._snapshot(conn, list(dict.fromkeys(skus)))
        missing = [sku for sku in dict.fromkeys(skus) if sku not in snapshot.levels]
        if missing:
            return _Outcome(errors.sku_not_found(missing), changes)
        return _Outcome(snapshot, changes)

    def _after_expiry(self) -> None:
        """Recompute the next expiry now that the due reservations are expired
        (else the next read does it)."""
        _read_at_once(self._db, self._refresh_next_expiry)

    def _refresh_next_expiry(self, conn: sqlite3.Connection) -> None:
        """On the read connection: recompute the next expiry if anything was
        committed to the file since it was computed."""
        version = _data_version(conn)
        if version != self._expiry_version:
            # reservations_state_expire_time makes this one index look-up.
            (earliest,) = conn.execute("SELECT min(expire_time) FROM reservations WHERE state = 'RESERVED'").fetchone()
            self._next_expiry = NO_EXPIRY if earliest is None else int(earliest)
            self._expiry_version = version

    def _none_due(self, conn: sqlite3.Connection) -> bool:
        """On the read connection: whether no reservation is due now."""
        now = self._clock()
        self._refresh_next_expiry(conn)
        return now < self._next_expiry

    def _read_if_none_due(self, conn: sqlite3.Connection, skus: Sequence[str]) -> dict[str, StockRow] | None:
        """On the read connection: the levels of the SKUs that exist, or None
        when a reservation is due (the caller expires it first)."""
        if not self._none_due(conn):
            return None
        rows = conn.execute(_levels_query(len(skus)), skus).fetchall()
        found = {row[0]: StockRow(row[0], row[1], row[2], row[3]) for row in rows}
        # In the order asked, as _read_rows gives them.
        return found if len(found) < 2 else {sku: found[sku] for sku in skus if sku in found}

    def _snapshot(self, conn: sqlite3.Connection, skus: Sequence[str]) -> StockSnapshot:
        """The levels of the SKUs that exist, read in one transaction."""
        with transaction(conn, write=False):
            levels = _read_rows(conn, skus)
            version = _data_version(conn)
        return StockSnapshot(seq=next(self._seq), levels=levels, data_version=version)

    def _migrate(self, conn: sqlite3.Connection, schema_file: str | Path, seed_file: str | Path) -> None:
        schema_sql = Path(schema_file).read_text(encoding="utf-8")
        # executescript() would commit an open transaction first, so the
        # script itself opens it; the rest runs in the same transaction.
        conn.executescript("BEGIN IMMEDIATE;\n" + schema_sql)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                now = self._clock()
                conn.executemany(
                    "INSERT INTO stock (sku, on_hand, reserved, update_time) VALUES (?, ?, 0, ?)",
                    [(sku, on_hand, now) for sku, on_hand in read_seed(seed_file)],
                )
            elif _schema_version(row["value"]) > SCHEMA_VERSION:
                raise ValueError(
                    f"database schema_version {row['value']} is newer than this service's {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _schema_version(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"database schema_version {value!r} is not a number") from exc


def _data_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def _read_at_once(db: Database, work: Callable[[sqlite3.Connection], T]) -> T | None:
    """work on the database's read-only connection, on the event loop, or
    None when that connection could not read at once (it has no busy
    timeout, so as not to block the loop: the caller falls back to the
    database thread, or to the next read)."""
    try:
        return db.read(work)
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            raise
        return None


_LEVELS_QUERIES: dict[int, str] = {}


def _levels_query(count: int) -> str:
    """The SELECT of count SKUs' levels: one statement, so one snapshot, and
    one SQL text per count, so sqlite3's statement cache prepares it once."""
    query = _LEVELS_QUERIES.get(count)
    if query is None:
        placeholders = ", ".join("?" * count)
        query = f"SELECT sku, on_hand, reserved, update_time FROM stock WHERE sku IN ({placeholders})"
        _LEVELS_QUERIES[count] = query
    return query


def _available(level: StockRow) -> int:
    return level.on_hand - level.reserved


def _read_rows(conn: sqlite3.Connection, skus: Iterable[str]) -> dict[str, StockRow]:
    found: dict[str, StockRow] = {}
    for sku in dict.fromkeys(skus):
        row = conn.execute("SELECT sku, on_hand, reserved, update_time FROM stock WHERE sku = ?", (sku,)).fetchone()
        if row is not None:
            found[sku] = StockRow(sku, row["on_hand"], row["reserved"], row["update_time"])
    return found


def _expire_due_in(conn: sqlite3.Connection, now: int, changed: dict[str, None]) -> int:
    due = conn.execute(
        "SELECT reservation_id FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?", (now,)
    ).fetchall()
    for (reservation_id,) in due:
        _return_stock(conn, _load_lines(conn, reservation_id), now, changed)
        _set_state(conn, reservation_id, "EXPIRED", now)
    return len(due)


def _return_stock(conn: sqlite3.Connection, lines: Iterable[Line], now: int, changed: dict[str, None]) -> None:
    for line in lines:
        conn.execute(
            "UPDATE stock SET reserved = reserved - ?, update_time = ? WHERE sku = ?", (line.quantity, now, line.sku)
        )
        changed[line.sku] = None


def _set_state(conn: sqlite3.Connection, reservation_id: str, state: ReservationStateName, now: int) -> None:
    conn.execute(
        "UPDATE reservations SET state = ?, update_time = ? WHERE reservation_id = ?", (state, now, reservation_id)
    )


def _load_lines(conn: sqlite3.Connection, reservation_id: str) -> tuple[Line, ...]:
    rows = conn.execute(
        "SELECT sku, quantity FROM reservation_lines WHERE reservation_id = ?", (reservation_id,)
    ).fetchall()
    return tuple(sorted((Line(row["sku"], row["quantity"]) for row in rows), key=lambda line: utf8_order(line.sku)))


def _load_reservation(conn: sqlite3.Connection, row: sqlite3.Row) -> ReservationRecord:
    return ReservationRecord(
        reservation_id=row["reservation_id"],
        request_id=row["request_id"],
        state=row["state"],
        create_time=row["create_time"],
        expire_time=row["expire_time"],
        lines=_load_lines(conn, row["reservation_id"]),
    )


__all__ = [
    "SCHEMA_VERSION",
    "ChangeListener",
    "ImportItem",
    "ImportProblem",
    "ImportSummary",
    "InventoryStore",
    "Line",
    "ReservationRecord",
    "StockRow",
    "StockSnapshot",
    "fingerprint",
    "merge_lines",
    "now_ms",
    "read_seed",
]
