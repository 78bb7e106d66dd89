// The store's "next expiry": a read before it skips the expiry path, and a
// read at or after a reservation's deadline still never counts that
// reservation as reserved, including when the store was restarted or another
// connection (another implementation on the same file) made the reservation.
// The store runs on a clock the test moves.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { decodeRichDetails, RpcError } from "../../src/common/errors.js";
import { loadConfig } from "../../src/inventory/config.js";
import { InventoryStore } from "../../src/inventory/store.js";
import { tempDir } from "./support.js";

const SKU = "sku-decaf-beans-500g"; // initial_stock 40
const OTHER = "sku-filter-beans-500g";
const TTL_MS = 1000;
const START = 1_800_000_000_000;

let dir: ReturnType<typeof tempDir>;
let clock: number;
const stores: InventoryStore[] = [];

function open(): InventoryStore {
  const { seedFile, schemaFile } = loadConfig({});
  const store = InventoryStore.open({ dbPath: `${dir.dir}/inventory.db`, seedFile, schemaFile, now: () => clock });
  stores.push(store);
  return store;
}

function reserved(store: InventoryStore, sku = SKU): number {
  const [level] = store.getStock([sku]);
  assert.ok(level);
  return level.reserved;
}

function reason(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RpcError, `expected an RpcError, got ${String(err)}`);
    const status = decodeRichDetails({ code: err.code, message: err.message, details: [...err.details] });
    return status.errorInfo?.reason;
  }
  assert.fail("expected the call to fail");
}

beforeEach(() => {
  dir = tempDir();
  clock = START;
});

afterEach(() => {
  for (const store of stores.splice(0)) {
    store.close();
  }
  dir.remove();
});

test("a new store has no next expiry, and a reservation sets it to its expire_time", () => {
  const store = open();
  assert.equal(store.nextExpiryTime(), Infinity);
  const reservation = store.reserve("r-1", [{ sku: SKU, quantity: 3 }], TTL_MS);
  assert.equal(reservation.expireTime, START + TTL_MS);
  assert.equal(store.nextExpiryTime(), START + TTL_MS);
  store.reserve("r-2", [{ sku: SKU, quantity: 1 }], TTL_MS * 5);
  assert.equal(store.nextExpiryTime(), START + TTL_MS, "a later reservation leaves the earliest");
});

test("a read one millisecond before the deadline counts the reservation; a read at the deadline exactly sees the stock released", () => {
  const store = open();
  const reservation = store.reserve("r-1", [{ sku: SKU, quantity: 3 }], TTL_MS);
  clock = reservation.expireTime - 1;
  assert.equal(reserved(store), 3);
  clock = reservation.expireTime;
  assert.equal(reserved(store), 0, "at expire_time the reservation is expired");
  assert.equal(reason(() => store.commit(reservation.reservationId)), "RESERVATION_EXPIRED");
  assert.equal(store.nextExpiryTime(), Infinity, "nothing is RESERVED any more");
});

test("a read after the deadline sees the stock released, and the next expiry moves to the next reservation", () => {
  const store = open();
  const first = store.reserve("r-1", [{ sku: SKU, quantity: 3 }], TTL_MS);
  const second = store.reserve("r-2", [{ sku: OTHER, quantity: 2 }], TTL_MS * 3);
  clock = first.expireTime + 500;
  assert.equal(reserved(store), 0);
  assert.equal(reserved(store, OTHER), 2, "the later reservation still holds its stock");
  assert.equal(store.nextExpiryTime(), second.expireTime);
  clock = second.expireTime + 1;
  assert.equal(reserved(store, OTHER), 0);
});

test("commit and release recompute the next expiry from the file", () => {
  const store = open();
  const first = store.reserve("r-1", [{ sku: SKU, quantity: 3 }], TTL_MS);
  const second = store.reserve("r-2", [{ sku: SKU, quantity: 2 }], TTL_MS * 2);
  store.commit(first.reservationId);
  assert.equal(store.nextExpiryTime(), second.expireTime);
  store.release(second.reservationId);
  assert.equal(store.nextExpiryTime(), Infinity);
  clock = second.expireTime + 1;
  const [level] = store.getStock([SKU]);
  assert.deepEqual([level.onHand, level.reserved], [37, 0]);
});

test("a restarted store computes the next expiry from the file and releases the stock once it is due", () => {
  const before = open();
  const first = before.reserve("r-1", [{ sku: SKU, quantity: 3 }], TTL_MS * 2);
  before.reserve("r-2", [{ sku: SKU, quantity: 4 }], TTL_MS * 4);
  const early = before.reserve("r-3", [{ sku: SKU, quantity: 5 }], TTL_MS);
  before.close();
  stores.splice(stores.indexOf(before), 1);

  const after = open();
  assert.equal(after.nextExpiryTime(), early.expireTime);
  clock = early.expireTime;
  assert.equal(reserved(after), 7, "the earliest reservation's 5 units came back");
  assert.equal(after.nextExpiryTime(), first.expireTime);
});

test("a reservation another connection makes on the same file is released at its deadline", () => {
  const reader = open();
  assert.equal(reserved(reader), 0, "the reader has looked once, so it holds a next expiry of none");
  const other = open();
  const reservation = other.reserve("r-other", [{ sku: SKU, quantity: 6 }], TTL_MS);
  assert.equal(reserved(reader), 6);
  clock = reservation.expireTime;
  assert.equal(reserved(reader), 0, "the reader saw the other connection's commit and expired it");
  assert.equal(reason(() => other.release(reservation.reservationId)), "RESERVATION_EXPIRED");
});
