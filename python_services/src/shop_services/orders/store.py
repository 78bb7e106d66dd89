"""The orders database: orders, their lines, and the durable saga log.

SQLite through common.db.Database: one writer connection owned by the
database thread, and a read-only connection that the event loop reads on.

Durability. The file is in WAL mode with ``synchronous=FULL``: a commit
fsyncs the write-ahead log before it returns. ``NORMAL`` would already survive
a killed process (SIGKILL), but not a power cut, and the saga's promise is that
"step started" is on disk *before* the downstream call goes out, so a restarted
service knows which steps may have happened.

Group commit. Every write method is one write function given to
``Database.write``: the concurrent sagas' writes share a transaction and one
fsync, and no write method returns before the COMMIT that holds its change has
returned (docs/performance.md, "P2"). Each write is atomic on its own (a
savepoint): it is all on disk or none of it is, exactly as if it had its own
transaction. Nothing blocks the event loop on the disk: the writes run on the
database thread, and the point reads run on the loop against the last
committed state (a WAL reader never waits for the writer).

Fewer transactions. Each forward write records a step's outcome *and* the
next step as started (``then=``), so a confirmed order costs five writes
(create and the price step started; priced and reserve started; reserved and
charge started; paid and commit started; confirmed), not nine, and "started"
is still on disk before its call goes out.

Change notifications (WatchOrder) fire on the event loop after the commit
they describe, with the record as committed. One process owns a database
file; two orders processes must not share one.

Schema.

- ``orders``: one row per order with its state, failure fields, the saga's
  results (reservation_id, payment_id), what has been undone
  (reservation_released, payment_refunded), the step in flight
  (``pending_step``: set by the write that logs "started", cleared when
  the outcome is known; a non-empty value after a crash means *in doubt*), the
  first caller's deadline (absolute, in seconds since the epoch; NULL for
  none; kept for diagnosis: the saga does not depend on it), the
  caller's x-request-id (so recovery's calls correlate too), and a ``version``
  bumped on every change. ``seq`` orders ListOrders (newest first).
- ``order_lines``: the lines, with prices once the order is priced.
- ``saga_steps``: the append-only log, one row per (step, phase) event
  (phase ``started``, ``succeeded`` or ``failed``) with a time and a detail.
  It is the audit trail; the row in ``orders`` is the state recovery reads.
- ``meta``: the HMAC secret for ListOrders page tokens, created with the file.

Money is stored as (currency_code, units, nanos), like google.type.Money.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shop.orders.v1 import order_service_pb2 as pb

from shop_services.common.db import Database

# The saga's steps, as written in pending_step and saga_steps.step.
STEP_PRICE = "price"
STEP_RESERVE = "reserve"
STEP_CHARGE = "charge"
STEP_COMMIT = "commit"
STEP_REFUND = "refund"
STEP_RELEASE = "release"

PHASE_STARTED = "started"
PHASE_SUCCEEDED = "succeeded"
PHASE_FAILED = "failed"

TERMINAL_STATES = frozenset({pb.ORDER_STATE_CONFIRMED, pb.ORDER_STATE_FAILED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    payment_token TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    deadline_at REAL,
    state INTEGER NOT NULL,
    failure_reason INTEGER NOT NULL DEFAULT 0,
    failure_message TEXT NOT NULL DEFAULT '',
    currency_code TEXT,
    total_units INTEGER,
    total_nanos INTEGER,
    reservation_id TEXT NOT NULL DEFAULT '',
    reservation_released INTEGER NOT NULL DEFAULT 0,
    payment_id TEXT NOT NULL DEFAULT '',
    payment_refunded INTEGER NOT NULL DEFAULT 0,
    pending_step TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL DEFAULT 1,
    create_time_ns INTEGER NOT NULL,
    update_time_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, seq);
CREATE INDEX IF NOT EXISTS orders_unfinished ON orders (state) WHERE state NOT IN (5, 7);
CREATE TABLE IF NOT EXISTS order_lines (
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    line_no INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_units INTEGER,
    unit_nanos INTEGER,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE IF NOT EXISTS saga_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS saga_steps_by_order ON saga_steps (order_id, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Money:
    """An amount as google.type.Money holds it: units and nanos of one sign."""

    currency_code: str
    units: int
    nanos: int

    @property
    def total_nanos(self) -> int:
        return self.units * 1_000_000_000 + self.nanos

    @classmethod
    def from_nanos(cls, currency_code: str, amount: int) -> Money:
        sign = -1 if amount < 0 else 1
        units, nanos = divmod(abs(amount), 1_000_000_000)
        return cls(currency_code, sign * units, sign * nanos)

    def times(self, quantity: int) -> Money:
        return Money.from_nanos(self.currency_code, self.total_nanos * quantity)


@dataclass(frozen=True)
class Line:
    """One order line; unit_price is None until the order is priced."""

    product_id: str
    quantity: int
    unit_price: Money | None = None


@dataclass(frozen=True)
class OrderRecord:
    """One order as stored, with everything the saga needs to resume it."""

    seq: int
    order_id: str
    request_id: str
    fingerprint: str
    customer_id: str
    payment_token: str
    trace_id: str
    deadline_at: float | None
    state: pb.OrderState.ValueType
    failure_reason: pb.OrderFailureReason.ValueType
    failure_message: str
    total: Money | None
    reservation_id: str
    reservation_released: bool
    payment_id: str
    payment_refunded: bool
    pending_step: str
    version: int
    create_time_ns: int
    update_time_ns: int
    lines: tuple[Line, ...] = field(default_factory=tuple)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class NewOrder:
    """What PlaceOrder records before its saga starts."""

    order_id: str
    request_id: str
    customer_id: str
    payment_token: str
    trace_id: str
    deadline_at: float | None
    lines: tuple[Line, ...]

    @property
    def fingerprint(self) -> str:
        """A digest of what makes two PlaceOrder requests the same order."""
        body = {
            "customer_id": self.customer_id,
            "lines": [[line.product_id, line.quantity] for line in self.lines],
            "payment_token": self.payment_token,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class RequestIdReusedError(Exception):
    """A request_id already names an order with a different body."""

    def __init__(self, existing: OrderRecord) -> None:
        super().__init__(f"request_id {existing.request_id} already names order {existing.order_id}")
        self.existing = existing


class Store:
    """The orders database. Every write method is one atomic, durable write."""

    def __init__(self, db: Database, page_token_secret: bytes) -> None:
        self._db = db
        self.path = db.path
        # The HMAC secret for ListOrders page tokens (written once, with the file).
        self.page_token_secret = page_token_secret
        # Called with the new record after every committed change to an order.
        self._listeners: list[Callable[[OrderRecord], None]] = []

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating and migrating if needed) the database file."""
        db = await Database.open(path, thread_name="orders-db")
        try:
            secret = await db.run(_migrate)
        except BaseException:
            await db.close()
            raise
        return cls(db, secret)

    async def close(self) -> None:
        """Close the file once the writes already queued are committed."""
        await self._db.close()

    def subscribe(self, listener: Callable[[OrderRecord], None]) -> None:
        """Call listener(record) after every committed change to an order."""
        self._listeners.append(listener)

    # Reads: on the event loop, of the last committed state.

    def get(self, order_id: str) -> OrderRecord | None:
        return self._db.read(lambda conn: _get(conn, order_id))

    def list_page(self, *, customer_id: str, before_seq: int | None, limit: int) -> list[OrderRecord]:
        """Up to limit orders, newest first, older than before_seq when given."""
        clauses: list[str] = []
        params: list[str | int] = []
        if customer_id:
            clauses.append("customer_id = ?")
            params.append(customer_id)
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def page(conn: sqlite3.Connection) -> list[OrderRecord]:
            with _snapshot(conn):
                rows = conn.execute(
                    f"SELECT * FROM orders {where} ORDER BY seq DESC LIMIT ?", (*params, limit)
                ).fetchall()
                return [_record(conn, row) for row in rows]

        return self._db.read(page)

    def unfinished(self) -> list[str]:
        """The ids of every order whose saga has not reached a terminal state, oldest first."""
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT order_id FROM orders WHERE state NOT IN (?, ?) ORDER BY seq", _TERMINAL
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    def steps(self, order_id: str) -> list[tuple[str, str, str]]:
        """The saga log of one order: (step, phase, detail), oldest first."""
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT step, phase, detail FROM saga_steps WHERE order_id = ? ORDER BY id", (order_id,)
            ).fetchall()
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    # Writes: each returns once it is committed, with the order as committed.

    async def create(self, new: NewOrder) -> tuple[OrderRecord, bool]:
        """Record a new PENDING order with its first step (price) started, or
        return the one its request_id already made.

        Returns (record, created). Raises RequestIdReusedError when the
        request_id names an order with a different body.
        """
        record, created = await self._db.write(lambda conn: _create(conn, new))
        if created:
            self._notify(record)
        return record, created

    async def step_started(self, order_id: str, step: str, detail: str = "") -> OrderRecord:
        """Log that step is about to call its dependency; it is in doubt until its outcome is logged."""
        return await self._change(order_id, step, PHASE_STARTED, detail, pending_step=step)

    async def step_failed(self, order_id: str, step: str, detail: str, *, in_doubt: bool) -> OrderRecord:
        """Log a failed call. An in-doubt failure keeps the step pending, to be resolved by replaying it."""
        fields: dict[str, Any] = {} if in_doubt else {"pending_step": ""}
        return await self._change(order_id, step, PHASE_FAILED, detail, **fields)

    async def priced(self, order_id: str, prices: Sequence[Money], total: Money, *, then: str) -> OrderRecord:
        """The price step succeeded: store each line's unit price and the total; PRICED, step then started."""

        def work(conn: sqlite3.Connection) -> OrderRecord:
            conn.executemany(
                "UPDATE order_lines SET unit_units = ?, unit_nanos = ? WHERE order_id = ? AND line_no = ?",
                [(p.units, p.nanos, order_id, i) for i, p in enumerate(prices)],
            )
            return _update(
                conn,
                order_id,
                STEP_PRICE,
                PHASE_SUCCEEDED,
                f"total={_format_money(total)}",
                then=then,
                prices=prices,
                state=pb.ORDER_STATE_PRICED,
                currency_code=total.currency_code,
                total_units=total.units,
                total_nanos=total.nanos,
                pending_step="",
            )

        record = await self._db.write(work)
        self._notify(record)
        return record

    async def reserved(
        self, order_id: str, reservation_id: str, *, advance: bool, then: str | None = None
    ) -> OrderRecord:
        """Reserve succeeded (or a replay resolved it); RESERVED when advancing the saga, step then started."""
        state = {"state": pb.ORDER_STATE_RESERVED} if advance else {}
        return await self._change(
            order_id,
            STEP_RESERVE,
            PHASE_SUCCEEDED,
            f"reservation_id={reservation_id}",
            then=then,
            reservation_id=reservation_id,
            pending_step="",
            **state,
        )

    async def paid(self, order_id: str, payment_id: str, *, advance: bool, then: str | None = None) -> OrderRecord:
        """Charge succeeded (or a replay resolved it); PAID when advancing the saga, step then started."""
        state = {"state": pb.ORDER_STATE_PAID} if advance else {}
        return await self._change(
            order_id,
            STEP_CHARGE,
            PHASE_SUCCEEDED,
            f"payment_id={payment_id}",
            then=then,
            payment_id=payment_id,
            pending_step="",
            **state,
        )

    async def confirmed(self, order_id: str, detail: str) -> OrderRecord:
        """Commit succeeded (or compensation found it had): CONFIRMED, failure fields cleared."""
        return await self._change(
            order_id,
            STEP_COMMIT,
            PHASE_SUCCEEDED,
            detail,
            state=pb.ORDER_STATE_CONFIRMED,
            pending_step="",
            failure_reason=pb.ORDER_FAILURE_REASON_UNSPECIFIED,
            failure_message="",
        )

    async def compensating(
        self, order_id: str, reason: pb.OrderFailureReason.ValueType, message: str, step: str
    ) -> OrderRecord:
        """A step failed: COMPENSATING, remembering the first failure's reason."""

        def work(conn: sqlite3.Connection) -> tuple[OrderRecord, bool]:
            current = _must_get(conn, order_id)
            if current.state == pb.ORDER_STATE_COMPENSATING:
                return current, False
            record = _update(
                conn,
                order_id,
                "compensation",
                PHASE_STARTED,
                f"after {step}: {message}",
                current=current,
                state=pb.ORDER_STATE_COMPENSATING,
                failure_reason=reason,
                failure_message=message,
            )
            return record, True

        record, changed = await self._db.write(work)
        if changed:
            self._notify(record)
        return record

    async def resolved_nothing(self, order_id: str, step: str, detail: str) -> OrderRecord:
        """An in-doubt step was replayed and definitely did nothing."""
        return await self._change(order_id, step, PHASE_FAILED, f"resolved: {detail}", pending_step="")

    async def released(self, order_id: str, detail: str) -> OrderRecord:
        """The reservation no longer holds stock (released, or expired)."""
        return await self._change(
            order_id, STEP_RELEASE, PHASE_SUCCEEDED, detail, reservation_released=1, pending_step=""
        )

    async def refunded(self, order_id: str, detail: str) -> OrderRecord:
        """The payment was refunded (or found refunded)."""
        return await self._change(order_id, STEP_REFUND, PHASE_SUCCEEDED, detail, payment_refunded=1)

    async def failed(self, order_id: str) -> OrderRecord:
        """Every earlier step is undone: FAILED."""
        return await self._change(order_id, "compensation", PHASE_SUCCEEDED, "", state=pb.ORDER_STATE_FAILED)

    async def log(self, order_id: str, step: str, phase: str, detail: str) -> None:
        """Append to the saga log without changing the order."""
        await self._db.write(lambda conn: _log(conn, order_id, step, phase, detail))

    # Internals.

    async def _change(
        self, order_id: str, step: str, phase: str, detail: str, *, then: str | None = None, **fields: Any
    ) -> OrderRecord:
        record = await self._db.write(lambda conn: _update(conn, order_id, step, phase, detail, then=then, **fields))
        self._notify(record)
        return record

    def _notify(self, record: OrderRecord) -> None:
        for listener in self._listeners:
            listener(record)


# The write functions below run on the database thread, inside the group
# commit's transaction (common.db.Database.write); each is atomic on its own.


def _migrate(conn: sqlite3.Connection) -> bytes:
    conn.executescript(_SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('page_token_secret', ?)", (secrets.token_bytes(32),))
    row = conn.execute("SELECT value FROM meta WHERE key = 'page_token_secret'").fetchone()
    return bytes(row[0])


def _create(conn: sqlite3.Connection, new: NewOrder) -> tuple[OrderRecord, bool]:
    fingerprint = new.fingerprint
    row = conn.execute("SELECT * FROM orders WHERE request_id = ?", (new.request_id,)).fetchone()
    if row is not None:
        existing = _record(conn, row)
        if existing.fingerprint != fingerprint:
            raise RequestIdReusedError(existing)
        return existing, False
    now = time.time_ns()
    cursor = conn.execute(
        "INSERT INTO orders (order_id, request_id, fingerprint, customer_id, payment_token, trace_id,"
        " deadline_at, state, pending_step, create_time_ns, update_time_ns)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.order_id,
            new.request_id,
            fingerprint,
            new.customer_id,
            new.payment_token,
            new.trace_id,
            new.deadline_at,
            pb.ORDER_STATE_PENDING,
            STEP_PRICE,
            now,
            now,
        ),
    )
    conn.executemany(
        "INSERT INTO order_lines (order_id, line_no, product_id, quantity) VALUES (?, ?, ?, ?)",
        [(new.order_id, i, line.product_id, line.quantity) for i, line in enumerate(new.lines)],
    )
    _log(conn, new.order_id, "order", "created", f"request_id={new.request_id}")
    _log(conn, new.order_id, STEP_PRICE, PHASE_STARTED, "")
    seq = cursor.lastrowid
    assert seq is not None
    record = OrderRecord(
        seq=seq,
        order_id=new.order_id,
        request_id=new.request_id,
        fingerprint=fingerprint,
        customer_id=new.customer_id,
        payment_token=new.payment_token,
        trace_id=new.trace_id,
        deadline_at=new.deadline_at,
        state=pb.ORDER_STATE_PENDING,
        failure_reason=pb.ORDER_FAILURE_REASON_UNSPECIFIED,
        failure_message="",
        total=None,
        reservation_id="",
        reservation_released=False,
        payment_id="",
        payment_refunded=False,
        pending_step=STEP_PRICE,
        version=1,
        create_time_ns=now,
        update_time_ns=now,
        lines=tuple(Line(line.product_id, line.quantity) for line in new.lines),
    )
    return record, True


def _update(
    conn: sqlite3.Connection,
    order_id: str,
    step: str,
    phase: str,
    detail: str,
    *,
    then: str | None = None,
    current: OrderRecord | None = None,
    prices: Sequence[Money] | None = None,
    **fields: Any,
) -> OrderRecord:
    """Change the order's row, log (step, phase), and log step `then` as
    started (pending) when given; the record as changed."""
    if current is None:
        current = _must_get(conn, order_id)
    if then:
        fields["pending_step"] = then
    if "state" in fields and fields["state"] != current.state:
        fields["update_time_ns"] = time.time_ns()
    if fields:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        conn.execute(
            f"UPDATE orders SET {assignments}, version = version + 1 WHERE order_id = ?",
            (*fields.values(), order_id),
        )
    _log(conn, order_id, step, phase, detail)
    if then:
        _log(conn, order_id, then, PHASE_STARTED, "")
    return _changed(current, prices, fields) if fields else current


def _changed(current: OrderRecord, prices: Sequence[Money] | None, fields: dict[str, Any]) -> OrderRecord:
    """current with the columns in fields (as written by _update) and the
    lines' prices applied: the row as it now is, without reading it back."""
    changes: dict[str, Any] = {"version": current.version + 1}
    for name, value in fields.items():
        if name in ("currency_code", "total_units", "total_nanos"):
            continue
        changes[name] = bool(value) if name in ("reservation_released", "payment_refunded") else value
    if "currency_code" in fields:
        changes["total"] = Money(fields["currency_code"], fields["total_units"], fields["total_nanos"])
    if prices is not None:
        changes["lines"] = tuple(
            replace(line, unit_price=price) for line, price in zip(current.lines, prices, strict=True)
        )
    return replace(current, **changes)


def _log(conn: sqlite3.Connection, order_id: str, step: str, phase: str, detail: str) -> None:
    conn.execute(
        "INSERT INTO saga_steps (order_id, step, phase, time_ns, detail) VALUES (?, ?, ?, ?, ?)",
        (order_id, step, phase, time.time_ns(), detail),
    )


def _get(conn: sqlite3.Connection, order_id: str) -> OrderRecord | None:
    with _snapshot(conn):
        row = conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else _record(conn, row)


def _must_get(conn: sqlite3.Connection, order_id: str) -> OrderRecord:
    row = conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise KeyError(f"order {order_id} does not exist")
    return _record(conn, row)


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction on the read-only connection, so that an order's row
    and its lines come from the same committed state."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _record(conn: sqlite3.Connection, row: sqlite3.Row) -> OrderRecord:
    lines = conn.execute(
        "SELECT product_id, quantity, unit_units, unit_nanos FROM order_lines WHERE order_id = ? ORDER BY line_no",
        (row["order_id"],),
    ).fetchall()
    currency = row["currency_code"]
    total = None if currency is None else Money(currency, row["total_units"], row["total_nanos"])
    return OrderRecord(
        seq=row["seq"],
        order_id=row["order_id"],
        request_id=row["request_id"],
        fingerprint=row["fingerprint"],
        customer_id=row["customer_id"],
        payment_token=row["payment_token"],
        trace_id=row["trace_id"],
        deadline_at=row["deadline_at"],
        state=pb.OrderState.ValueType(row["state"]),
        failure_reason=pb.OrderFailureReason.ValueType(row["failure_reason"]),
        failure_message=row["failure_message"],
        total=total,
        reservation_id=row["reservation_id"],
        reservation_released=bool(row["reservation_released"]),
        payment_id=row["payment_id"],
        payment_refunded=bool(row["payment_refunded"]),
        pending_step=row["pending_step"],
        version=row["version"],
        create_time_ns=row["create_time_ns"],
        update_time_ns=row["update_time_ns"],
        lines=tuple(_line(line, currency) for line in lines),
    )


_TERMINAL = (pb.ORDER_STATE_CONFIRMED, pb.ORDER_STATE_FAILED)


def _line(row: sqlite3.Row, currency: str | None) -> Line:
    price = None
    if currency is not None and row["unit_units"] is not None:
        price = Money(currency, row["unit_units"], row["unit_nanos"])
    return Line(product_id=row["product_id"], quantity=row["quantity"], unit_price=price)


def _format_money(money: Money) -> str:
    return f"{money.currency_code} {money.total_nanos / 1e9:.2f}"
