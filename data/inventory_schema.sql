-- The inventory database: the one schema every implementation of
-- shop.inventory.v1.InventoryService (Node, Go, Python) runs on. Two
-- implementations may share one database file at the same time (a live swap
-- or a canary), so the rules below are part of the contract, not hints.
--
-- Each connection, before anything else, sets:
--   PRAGMA journal_mode = WAL;      -- readers never block the one writer
--   PRAGMA busy_timeout = 5000;     -- wait for another writer instead of failing
--   PRAGMA foreign_keys = ON;
--
-- Start-up applies this file inside BEGIN IMMEDIATE. When meta has no
-- schema_version row the database is new: insert it and seed stock from the
-- seed file (on_hand = initial_stock, reserved = 0) in that same transaction.
-- An implementation refuses to run on a schema_version newer than it knows.
--
-- Every write runs in BEGIN IMMEDIATE and first expires overdue reservations:
--   each reservation with state 'RESERVED' and expire_time <= now becomes
--   'EXPIRED' (update_time = now) and its lines are subtracted from
--   stock.reserved (stock.update_time = now).
-- A reservation past expire_time therefore counts as expired even when no
-- sweeper has run; a periodic sweep does the same so that watchers see it.
--
-- Invariant: stock.reserved = the sum of reservation_lines.quantity over the
-- reservations in state 'RESERVED' for that SKU.
--
-- Times are integer Unix milliseconds (UTC).

-- meta holds facts about the database itself, one row per key.
CREATE TABLE IF NOT EXISTS meta (
  -- The fact's name; 'schema_version' is the only key so far.
  key TEXT PRIMARY KEY NOT NULL,
  -- The fact's value; schema_version is '1' for this file.
  value TEXT NOT NULL
);

-- stock is the level of every SKU ever stocked. A SKU is a catalog product id.
CREATE TABLE IF NOT EXISTS stock (
  sku TEXT PRIMARY KEY NOT NULL,
  -- Units physically in stock, committed reservations already deducted.
  on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
  -- Units held by reservations in state 'RESERVED'. Never above on_hand, so
  -- available (on_hand - reserved) never goes below zero: the database itself
  -- refuses an oversell.
  reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
  -- When on_hand or reserved last changed.
  update_time INTEGER NOT NULL
);

-- reservations is one row per successful Reserve call.
CREATE TABLE IF NOT EXISTS reservations (
  -- The service-assigned id (a UUID string).
  reservation_id TEXT PRIMARY KEY NOT NULL,
  -- The client's request_id: a second Reserve with the same request_id finds
  -- this row instead of reserving again.
  request_id TEXT NOT NULL UNIQUE,
  -- What the request asked for, so a reused request_id with different lines
  -- is told apart (ALREADY_EXISTS, reason REQUEST_ID_REUSED). It is the
  -- lowercase hex SHA-256 of the request's lines merged per SKU (quantities
  -- added), sorted by SKU in UTF-8 byte order, each line written as
  --   <UTF-8 byte length of sku> ":" <sku> ":" <quantity> ";"
  -- with decimal numbers; for example 'sku-a' x 2 and 'sku-b' x 1 hash the
  -- text "5:sku-a:2;5:sku-b:1;".
  fingerprint TEXT NOT NULL,
  -- Where the reservation is in its life.
  state TEXT NOT NULL CHECK (state IN ('RESERVED', 'COMMITTED', 'RELEASED', 'EXPIRED')),
  -- When Reserve created it.
  create_time INTEGER NOT NULL,
  -- When it expires unless committed first: create_time plus the service's
  -- reservation time to live.
  expire_time INTEGER NOT NULL,
  -- When state last changed.
  update_time INTEGER NOT NULL
);

-- Finds the overdue reservations that every write transaction expires.
CREATE INDEX IF NOT EXISTS reservations_state_expire_time
  ON reservations (state, expire_time);

-- reservation_lines is the stock a reservation holds, one row per SKU.
CREATE TABLE IF NOT EXISTS reservation_lines (
  reservation_id TEXT NOT NULL REFERENCES reservations (reservation_id),
  sku TEXT NOT NULL REFERENCES stock (sku),
  -- Units of this SKU, the request's lines for the SKU added together.
  quantity INTEGER NOT NULL CHECK (quantity > 0),
  PRIMARY KEY (reservation_id, sku)
);
