"""The orders database: orders, their lines, and the durable saga log.

SQLite through the standard library, one connection per process.

Durability. The file is in WAL mode with ``synchronous=FULL``: every commit
fsyncs the write-ahead log before it returns. ``NORMAL`` would already survive
a killed process (SIGKILL), but not a power cut, and the saga's promise is that
"step started" is on disk *before* the downstream call goes out, so a restarted
service knows which steps may have happened. The cost is one fsync per saga
transition, a handful per order.

Threading. The store is synchronous and used from the event loop thread. Each
method is one short transaction on a local file (a row or two); running it on
the loop makes every saga transition atomic with respect to asyncio
scheduling: no other coroutine observes a half-written step, a cancelled saga
never leaves a transaction half-done, and the change notification for
WatchOrder fires right after the commit it describes. One process owns a
database file; two orders processes must not share one.

Schema.

- ``orders``: one row per order with its state, failure fields, the saga's
  results (reservation_id, payment_id), what has been undone
  (reservation_released, payment_refunded), the step in flight
  (``pending_step``: set in the transaction that logs "started", cleared when
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shop.orders.v1 import order_service_pb2 as pb

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
    """The orders database. Every public method is one transaction."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path
        # Called with the new record after every committed change to an order.
        self._listeners: list[Callable[[OrderRecord], None]] = []

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating and migrating if needed) the database file."""
        connection = sqlite3.connect(str(path), isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot put {path} in WAL mode (journal_mode is {mode})")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.executescript(_SCHEMA)
            connection.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('page_token_secret', ?)", (secrets.token_bytes(32),)
            )
        except BaseException:
            connection.close()
            raise
        return cls(connection, str(path))

    def close(self) -> None:
        self._db.close()

    def subscribe(self, listener: Callable[[OrderRecord], None]) -> None:
        """Call listener(record) after every committed change to an order."""
        self._listeners.append(listener)

    @property
    def page_token_secret(self) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'page_token_secret'").fetchone()
        return bytes(row[0])

    # Reads.

    def get(self, order_id: str) -> OrderRecord | None:
        row = self._db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else self._record(row)

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
        rows = self._db.execute(f"SELECT * FROM orders {where} ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [self._record(row) for row in rows.fetchall()]

    def unfinished(self) -> list[str]:
        """The ids of every order whose saga has not reached a terminal state, oldest first."""
        rows = self._db.execute("SELECT order_id FROM orders WHERE state NOT IN (?, ?) ORDER BY seq", _TERMINAL)
        return [str(row[0]) for row in rows.fetchall()]

    def steps(self, order_id: str) -> list[tuple[str, str, str]]:
        """The saga log of one order: (step, phase, detail), oldest first."""
        rows = self._db.execute(
            "SELECT step, phase, detail FROM saga_steps WHERE order_id = ? ORDER BY id", (order_id,)
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows.fetchall()]

    # Writes.

    def create(self, new: NewOrder) -> tuple[OrderRecord, bool]:
        """Record a new PENDING order, or return the one its request_id already made.

        Returns (record, created). Raises RequestIdReusedError when the
        request_id names an order with a different body.
        """
        fingerprint = new.fingerprint
        with self._transaction():
            row = self._db.execute("SELECT * FROM orders WHERE request_id = ?", (new.request_id,)).fetchone()
            if row is not None:
                existing = self._record(row)
                if existing.fingerprint != fingerprint:
                    raise RequestIdReusedError(existing)
                return existing, False
            now = time.time_ns()
            self._db.execute(
                "INSERT INTO orders (order_id, request_id, fingerprint, customer_id, payment_token, trace_id,"
                " deadline_at, state, create_time_ns, update_time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.order_id,
                    new.request_id,
                    fingerprint,
                    new.customer_id,
                    new.payment_token,
                    new.trace_id,
                    new.deadline_at,
                    pb.ORDER_STATE_PENDING,
                    now,
                    now,
                ),
            )
            self._db.executemany(
                "INSERT INTO order_lines (order_id, line_no, product_id, quantity) VALUES (?, ?, ?, ?)",
                [(new.order_id, i, line.product_id, line.quantity) for i, line in enumerate(new.lines)],
            )
            self._log(new.order_id, "order", "created", f"request_id={new.request_id}")
            record = self._must_get(new.order_id)
        self._notify(record)
        return record, True

    def step_started(self, order_id: str, step: str, detail: str = "") -> OrderRecord:
        """Log that step is about to call its dependency; it is in doubt until its outcome is logged."""
        return self._change(order_id, step, PHASE_STARTED, detail, pending_step=step)

    def step_failed(self, order_id: str, step: str, detail: str, *, in_doubt: bool) -> OrderRecord:
        """Log a failed call. An in-doubt failure keeps the step pending, to be resolved by replaying it."""
        fields: dict[str, Any] = {} if in_doubt else {"pending_step": ""}
        return self._change(order_id, step, PHASE_FAILED, detail, **fields)

    def priced(self, order_id: str, prices: Sequence[Money], total: Money) -> OrderRecord:
        """The price step succeeded: store each line's unit price and the total; PRICED."""
        with self._transaction():
            self._db.executemany(
                "UPDATE order_lines SET unit_units = ?, unit_nanos = ? WHERE order_id = ? AND line_no = ?",
                [(p.units, p.nanos, order_id, i) for i, p in enumerate(prices)],
            )
            record = self._update(
                order_id,
                STEP_PRICE,
                PHASE_SUCCEEDED,
                f"total={_format_money(total)}",
                state=pb.ORDER_STATE_PRICED,
                currency_code=total.currency_code,
                total_units=total.units,
                total_nanos=total.nanos,
                pending_step="",
            )
        self._notify(record)
        return record

    def reserved(self, order_id: str, reservation_id: str, *, advance: bool) -> OrderRecord:
        """Reserve succeeded (or a replay resolved it); RESERVED when advancing the saga."""
        state = {"state": pb.ORDER_STATE_RESERVED} if advance else {}
        return self._change(
            order_id,
            STEP_RESERVE,
            PHASE_SUCCEEDED,
            f"reservation_id={reservation_id}",
            reservation_id=reservation_id,
            pending_step="",
            **state,
        )

    def paid(self, order_id: str, payment_id: str, *, advance: bool) -> OrderRecord:
        """Charge succeeded (or a replay resolved it); PAID when advancing the saga."""
        state = {"state": pb.ORDER_STATE_PAID} if advance else {}
        return self._change(
            order_id,
            STEP_CHARGE,
            PHASE_SUCCEEDED,
            f"payment_id={payment_id}",
            payment_id=payment_id,
            pending_step="",
            **state,
        )

    def confirmed(self, order_id: str, detail: str) -> OrderRecord:
        """Commit succeeded (or compensation found it had): CONFIRMED, failure fields cleared."""
        return self._change(
            order_id,
            STEP_COMMIT,
            PHASE_SUCCEEDED,
            detail,
            state=pb.ORDER_STATE_CONFIRMED,
            pending_step="",
            failure_reason=pb.ORDER_FAILURE_REASON_UNSPECIFIED,
            failure_message="",
        )

    def compensating(
        self, order_id: str, reason: pb.OrderFailureReason.ValueType, message: str, step: str
    ) -> OrderRecord:
        """A step failed: COMPENSATING, remembering the first failure's reason."""
        current = self._must_get(order_id)
        if current.state == pb.ORDER_STATE_COMPENSATING:
            return current
        return self._change(
            order_id,
            "compensation",
            PHASE_STARTED,
            f"after {step}: {message}",
            state=pb.ORDER_STATE_COMPENSATING,
            failure_reason=reason,
            failure_message=message,
        )

    def resolved_nothing(self, order_id: str, step: str, detail: str) -> OrderRecord:
        """An in-doubt step was replayed and definitely did nothing."""
        return self._change(order_id, step, PHASE_FAILED, f"resolved: {detail}", pending_step="")

    def released(self, order_id: str, detail: str) -> OrderRecord:
        """The reservation no longer holds stock (released, or expired)."""
        return self._change(order_id, STEP_RELEASE, PHASE_SUCCEEDED, detail, reservation_released=1, pending_step="")

    def refunded(self, order_id: str, detail: str) -> OrderRecord:
        """The payment was refunded (or found refunded)."""
        return self._change(order_id, STEP_REFUND, PHASE_SUCCEEDED, detail, payment_refunded=1)

    def failed(self, order_id: str) -> OrderRecord:
        """Every earlier step is undone: FAILED."""
        return self._change(order_id, "compensation", PHASE_SUCCEEDED, "", state=pb.ORDER_STATE_FAILED)

    def log(self, order_id: str, step: str, phase: str, detail: str) -> None:
        """Append to the saga log without changing the order."""
        with self._transaction():
            self._log(order_id, step, phase, detail)

    # Internals.

    def _change(self, order_id: str, step: str, phase: str, detail: str, **fields: Any) -> OrderRecord:
        with self._transaction():
            record = self._update(order_id, step, phase, detail, **fields)
        self._notify(record)
        return record

    def _update(self, order_id: str, step: str, phase: str, detail: str, **fields: Any) -> OrderRecord:
        current = self._must_get(order_id)
        if "state" in fields and fields["state"] != current.state:
            fields["update_time_ns"] = time.time_ns()
        if fields:
            assignments = ", ".join(f"{name} = ?" for name in fields)
            self._db.execute(
                f"UPDATE orders SET {assignments}, version = version + 1 WHERE order_id = ?",
                (*fields.values(), order_id),
            )
        self._log(order_id, step, phase, detail)
        return self._must_get(order_id)

    def _log(self, order_id: str, step: str, phase: str, detail: str) -> None:
        self._db.execute(
            "INSERT INTO saga_steps (order_id, step, phase, time_ns, detail) VALUES (?, ?, ?, ?, ?)",
            (order_id, step, phase, time.time_ns(), detail),
        )

    def _must_get(self, order_id: str) -> OrderRecord:
        record = self.get(order_id)
        if record is None:
            raise KeyError(f"order {order_id} does not exist")
        return record

    def _record(self, row: sqlite3.Row) -> OrderRecord:
        lines = self._db.execute(
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

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _notify(self, record: OrderRecord) -> None:
        for listener in self._listeners:
            listener(record)


_TERMINAL = (pb.ORDER_STATE_CONFIRMED, pb.ORDER_STATE_FAILED)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _line(row: sqlite3.Row, currency: str | None) -> Line:
    price = None
    if currency is not None and row["unit_units"] is not None:
        price = Money(currency, row["unit_units"], row["unit_nanos"])
    return Line(product_id=row["product_id"], quantity=row["quantity"], unit_price=price)


def _format_money(money: Money) -> str:
    return f"{money.currency_code} {money.total_nanos / 1e9:.2f}"
