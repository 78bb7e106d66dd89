"""The payments database: payments and the card network's memory of attempts.

The file belongs to this service alone. All access goes through
common.db.Database, so every operation below runs on the database thread.
Charge and Refund are writes of the group commit (Database.write): concurrent
ones share a transaction and its fsync, each atomic on its own (a savepoint),
and none answers before the COMMIT that holds it has returned. A Charge runs
whole, from the request_id look-up to the insert, while it holds the write
lock, which is what makes it idempotent: two concurrent calls with one
request_id cannot both miss the stored payment (the second, even in the same
batch, finds the first's row).
"""

from __future__ import annotations

import enum
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shop_services.common.db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
  payment_id     TEXT PRIMARY KEY,
  request_id     TEXT NOT NULL UNIQUE,
  reference      TEXT NOT NULL,
  currency_code  TEXT NOT NULL,
  units          INTEGER NOT NULL,
  nanos          INTEGER NOT NULL,
  payment_token  TEXT NOT NULL,
  state          TEXT NOT NULL CHECK (state IN ('SUCCEEDED', 'REFUNDED')),
  create_time_ns INTEGER NOT NULL,
  refund_time_ns INTEGER
);

-- Charge attempts the simulated card network must remember across restarts
-- (tok_flaky fails the first attempt of each request_id, then succeeds).
CREATE TABLE IF NOT EXISTS charge_attempts (
  request_id      TEXT PRIMARY KEY,
  currency_code   TEXT NOT NULL,
  units           INTEGER NOT NULL,
  nanos           INTEGER NOT NULL,
  payment_token   TEXT NOT NULL,
  attempts        INTEGER NOT NULL,
  last_attempt_ns INTEGER NOT NULL
);
"""


class PaymentState(enum.Enum):
    """Stored payment states (the proto's PaymentState without the prefix)."""

    SUCCEEDED = "SUCCEEDED"
    REFUNDED = "REFUNDED"


class Outcome(enum.Enum):
    """What the card network answered to one charge attempt."""

    APPROVED = "approved"
    DECLINED = "declined"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Authorization:
    """The card network's answer, and whether it must remember the attempt."""

    outcome: Outcome
    remember_attempt: bool = False


# authorize(payment_token, earlier_attempts) -> Authorization. It runs inside
# the charge transaction, so it must be quick and must not touch the database.
Authorizer = Callable[[str, int], Authorization]


@dataclass(frozen=True)
class ChargeInput:
    """A validated charge: what the fingerprint of a request_id is made of."""

    request_id: str
    currency_code: str
    units: int
    nanos: int
    payment_token: str
    reference: str

    def same_charge(self, row: sqlite3.Row) -> bool:
        """True when row (a payment or attempt) was made by an identical charge."""
        return bool(
            row["currency_code"] == self.currency_code
            and row["units"] == self.units
            and row["nanos"] == self.nanos
            and row["payment_token"] == self.payment_token
        )


@dataclass(frozen=True)
class PaymentRecord:
    """One stored payment."""

    payment_id: str
    request_id: str
    reference: str
    currency_code: str
    units: int
    nanos: int
    payment_token: str
    state: PaymentState
    create_time_ns: int
    refund_time_ns: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PaymentRecord:
        return cls(
            payment_id=row["payment_id"],
            request_id=row["request_id"],
            reference=row["reference"],
            currency_code=row["currency_code"],
            units=row["units"],
            nanos=row["nanos"],
            payment_token=row["payment_token"],
            state=PaymentState(row["state"]),
            create_time_ns=row["create_time_ns"],
            refund_time_ns=row["refund_time_ns"],
        )


@dataclass(frozen=True)
class ChargeResult:
    """How a charge ended: a payment (new or replayed), or the network's refusal."""

    outcome: Outcome
    payment: PaymentRecord | None = None
    replayed: bool = False


class RequestIdReusedError(Exception):
    """The request_id was used before by a charge with another amount or token."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id {request_id!r} was used by a different charge")
        self.request_id = request_id


class PaymentNotFoundError(Exception):
    """No payment has the id."""

    def __init__(self, payment_id: str) -> None:
        super().__init__(f"no payment has id {payment_id!r}")
        self.payment_id = payment_id


class PaymentStore:
    """Payments persisted in one SQLite file."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: str | Path) -> PaymentStore:
        """Open the file, creating the tables on first use."""
        db = await Database.open(path, thread_name="payments-db")
        try:
            await db.run(_migrate)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def charge(self, charge: ChargeInput, authorize: Authorizer) -> ChargeResult:
        """Replay the payment of charge.request_id, or ask the network and record the answer.

        Raises RequestIdReusedError when the request_id belongs to a charge
        with another amount or token.
        """
        return await self._db.write(lambda conn: _charge(conn, charge, authorize))

    async def refund(self, payment_id: str) -> PaymentRecord:
        """Mark the payment REFUNDED (a refunded one is returned unchanged)."""
        return await self._db.write(lambda conn: _refund(conn, payment_id))

    async def get(self, payment_id: str) -> PaymentRecord:
        """The payment with the id; raises PaymentNotFoundError.

        One indexed SELECT: read on the event loop (see Database.read)."""
        return self._db.read(lambda conn: _get(conn, payment_id))


def _migrate(conn: sqlite3.Connection) -> None:
    # Every statement is CREATE ... IF NOT EXISTS, so running it again is harmless.
    conn.executescript(_SCHEMA)


def _charge(conn: sqlite3.Connection, charge: ChargeInput, authorize: Authorizer) -> ChargeResult:
    row = conn.execute("SELECT * FROM payments WHERE request_id = ?", (charge.request_id,)).fetchone()
    if row is not None:
        if not charge.same_charge(row):
            raise RequestIdReusedError(charge.request_id)
        return ChargeResult(Outcome.APPROVED, PaymentRecord.from_row(row), replayed=True)

    attempt = conn.execute("SELECT * FROM charge_attempts WHERE request_id = ?", (charge.request_id,)).fetchone()
    if attempt is not None and not charge.same_charge(attempt):
        raise RequestIdReusedError(charge.request_id)
    earlier_attempts = 0 if attempt is None else int(attempt["attempts"])

    answer = authorize(charge.payment_token, earlier_attempts)
    now = time.time_ns()
    if answer.remember_attempt:
        conn.execute(
            """
            INSERT INTO charge_attempts
              (request_id, currency_code, units, nanos, payment_token, attempts, last_attempt_ns)
            VALUES (?, ?, ?, ?, ?, 1, ?)
            ON CONFLICT (request_id) DO UPDATE
              SET attempts = attempts + 1, last_attempt_ns = excluded.last_attempt_ns
            """,
            (charge.request_id, charge.currency_code, charge.units, charge.nanos, charge.payment_token, now),
        )
    if answer.outcome is not Outcome.APPROVED:
        return ChargeResult(answer.outcome)

    payment = PaymentRecord(
        payment_id=f"pay_{uuid.uuid4().hex}",
        request_id=charge.request_id,
        reference=charge.reference,
        currency_code=charge.currency_code,
        units=charge.units,
        nanos=charge.nanos,
        payment_token=charge.payment_token,
        state=PaymentState.SUCCEEDED,
        create_time_ns=now,
        refund_time_ns=None,
    )
    conn.execute(
        """
        INSERT INTO payments
          (payment_id, request_id, reference, currency_code, units, nanos, payment_token, state,
           create_time_ns, refund_time_ns)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
        """,
        (
            payment.payment_id,
            payment.request_id,
            payment.reference,
            payment.currency_code,
            payment.units,
            payment.nanos,
            payment.payment_token,
            payment.state.value,
            payment.create_time_ns,
        ),
    )
    return ChargeResult(Outcome.APPROVED, payment)


def _refund(conn: sqlite3.Connection, payment_id: str) -> PaymentRecord:
    conn.execute(
        "UPDATE payments SET state = 'REFUNDED', refund_time_ns = ? WHERE payment_id = ? AND state = 'SUCCEEDED'",
        (time.time_ns(), payment_id),
    )
    return _select(conn, payment_id)


def _get(conn: sqlite3.Connection, payment_id: str) -> PaymentRecord:
    return _select(conn, payment_id)


def _select(conn: sqlite3.Connection, payment_id: str) -> PaymentRecord:
    row = conn.execute("SELECT * FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
    if row is None:
        raise PaymentNotFoundError(payment_id)
    return PaymentRecord.from_row(row)
