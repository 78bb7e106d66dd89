// The inventory's SQLite store. All state lives in the database, laid out by
// data/inventory_schema.sql, so another implementation can run on the same
// file at the same time: every write is one BEGIN IMMEDIATE transaction that
// first expires overdue reservations. The one thing kept in memory is "the
// next expiry" (the earliest expire_time among RESERVED reservations), which
// lets a read skip the expiry path until a reservation is due; it is
// recomputed whenever another connection has committed (PRAGMA data_version).
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";

import Database from "better-sqlite3";

import type { RpcError } from "../common/errors.js";
import { businessError } from "./errors.js";

/** The schema_version this code reads and writes. */
export const SCHEMA_VERSION = 1;

/** How long a connection waits for another writer before SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

export type ReservationStateName = "RESERVED" | "COMMITTED" | "RELEASED" | "EXPIRED";

/** One SKU's stock; times are Unix milliseconds. */
export interface StockRow {
  sku: string;
  onHand: number;
  reserved: number;
  updateTime: number;
}

export interface Line {
  sku: string;
  quantity: number;
}

export interface ReservationRecord {
  reservationId: string;
  requestId: string;
  state: ReservationStateName;
  createTime: number;
  expireTime: number;
  /** One line per SKU, ordered by SKU. */
  lines: Line[];
}

export interface ImportItem {
  sku: string;
  onHand: number;
}

export interface ImportSummary {
  skusCreated: number;
  skusUpdated: number;
}

/** An import item that cannot be applied, by its zero-based index. */
export interface ImportProblem {
  index: number;
  field: "sku" | "on_hand";
  description: string;
}

export interface StoreOptions {
  dbPath: string;
  /** products.json, read only when the database is new. */
  seedFile: string;
  /** data/inventory_schema.sql, the schema every implementation applies. */
  schemaFile: string;
  /** The clock, in Unix milliseconds; tests may replace it. */
  now?: () => number;
}

/** Called after a committed write with the SKUs whose stock changed. */
export type ChangeListener = (skus: readonly string[]) => void;

interface StockDbRow {
  sku: string;
  on_hand: number;
  reserved: number;
  update_time: number;
}

interface ReservationDbRow {
  reservation_id: string;
  request_id: string;
  fingerprint: string;
  state: ReservationStateName;
  create_time: number;
  expire_time: number;
}

/** Compares strings by their UTF-8 bytes, as Go and SQLite's BINARY do. */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Adds up lines of the same SKU and orders them by SKU. */
export function mergeLines(lines: readonly Line[]): Line[] {
  const totals = new Map<string, number>();
  for (const line of lines) {
    totals.set(line.sku, (totals.get(line.sku) ?? 0) + line.quantity);
  }
  return [...totals.entries()]
    .map(([sku, quantity]) => ({ sku, quantity }))
    .sort((a, b) => compareUtf8(a.sku, b.sku));
}

/** The request fingerprint the schema defines, over merged lines. */
export function fingerprint(merged: readonly Line[]): string {
  const text = merged.map((l) => `${Buffer.byteLength(l.sku, "utf8")}:${l.sku}:${l.quantity};`).join("");
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function readSeed(seedFile: string): { sku: string; onHand: number }[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(seedFile, "utf8"));
  } catch (err) {
    throw new Error(`read seed file ${seedFile}: ${(err as Error).message}`, { cause: err });
  }
  const products = (parsed as { products?: unknown }).products;
  if (!Array.isArray(products)) {
    throw new Error(`seed file ${seedFile}: "products" must be an array`);
  }
  return products.map((p: unknown, i: number) => {
    const { id, initial_stock: stock } = p as { id?: unknown; initial_stock?: unknown };
    if (typeof id !== "string" || id === "" || typeof stock !== "number" || !Number.isInteger(stock) || stock < 0) {
      throw new Error(`seed file ${seedFile}: products[${i}] needs a string id and a whole initial_stock of 0 or more`);
    }
    return { sku: id, onHand: stock };
  });
}

export class InventoryStore {
  private readonly db: Database.Database;
  private readonly now: () => number;
  private readonly listeners = new Set<ChangeListener>();
  /**
   * Prepared statements by their SQL. Preparing a statement cost more CPU
   * than running it (node --cpu-prof of GetStock: a tenth of the process's
   * time), so each is prepared once and reused.
   */
  private readonly statements = new Map<string, Database.Statement>();
  /**
   * The next expiry: the earliest expire_time among RESERVED reservations
   * (Infinity when there is none), as of dataVersion. Computed from the
   * database when the store opens, lowered when this store makes a
   * reservation, and recomputed (one indexed MIN query) after anything that
   * may remove the earliest one: an expiry, a commit, a release. A read
   * whose now is before it has nothing to expire and skips the expiry path.
   * It may be earlier than the truth (a rolled-back reservation lowered it),
   * which costs one needless check, never later.
   */
  private nextExpiry = -Infinity;
  /**
   * PRAGMA data_version when nextExpiry was computed. Another process on the
   * same file (a live swap, a canary) may add a reservation that expires
   * earlier; its commit moves data_version, and the next read recomputes.
   * This connection's own commits leave it unchanged.
   */
  private nextExpiryVersion = -1;
  /** Set inside a write that expired, committed or released a reservation. */
  private earliestMayBeGone = false;

  private constructor(db: Database.Database, now: () => number) {
    this.db = db;
    this.now = now;
  }

  /** Opens (creating, migrating and seeding if new) the database. */
  static open(options: StoreOptions): InventoryStore {
    const db = new Database(options.dbPath);
    try {
      db.pragma("journal_mode = WAL");
      // Every commit fsyncs the write-ahead log. better-sqlite3 builds SQLite
      // with SQLITE_DEFAULT_WAL_SYNCHRONOUS=1, so without this a database that
      // was already in WAL mode (every open after the first) ran NORMAL: a
      // Reserve or Commit it answered could be lost in a power cut.
      db.pragma("synchronous = FULL");
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.pragma("foreign_keys = ON");
      const store = new InventoryStore(db, options.now ?? Date.now);
      store.migrate(readFileSync(options.schemaFile, "utf8"), options.seedFile);
      store.refreshNextExpiry();
      return store;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  private prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R> {
    let statement = this.statements.get(sql);
    if (statement === undefined) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement as unknown as Database.Statement<P, R>;
  }

  private migrate(schemaSql: string, seedFile: string): void {
    const getVersion = (): string | undefined =>
      this.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'schema_version'").get()?.value;
    const run = this.db.transaction(() => {
      this.db.exec(schemaSql);
      const version = getVersion();
      if (version === undefined) {
        this.prepare("INSERT INTO meta (key, value) VALUES ('schema_version', ?)").run(String(SCHEMA_VERSION));
        const insert = this.prepare("INSERT INTO stock (sku, on_hand, reserved, update_time) VALUES (?, ?, 0, ?)");
        const now = this.now();
        for (const item of readSeed(seedFile)) {
          insert.run(item.sku, item.onHand, now);
        }
      } else if (Number(version) > SCHEMA_VERSION) {
        throw new Error(`database schema_version ${version} is newer than this service's ${SCHEMA_VERSION}`);
      }
    });
    run.immediate();
  }

  /** Registers a listener for committed stock changes; returns its remover. */
  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.listeners.clear();
    this.db.close();
  }

  /**
   * PRAGMA data_version: changes whenever another connection (another
   * process) commits to the database, so a cheap poll of it finds changes
   * this process did not make.
   */
  dataVersion(): number {
    const version = this.prepare<[], number>("PRAGMA data_version").pluck().get();
    if (version === undefined) {
      throw new Error("PRAGMA data_version returned no row");
    }
    return version;
  }

  /**
   * The next expiry as the store knows it (Unix milliseconds; Infinity when
   * no reservation is RESERVED), after catching up with commits by other
   * connections. Exposed for tests.
   */
  nextExpiryTime(): number {
    this.catchUpNextExpiry();
    return this.nextExpiry;
  }

  /** The stored levels of the SKUs that exist, without expiring anything. */
  readStock(skus: readonly string[]): Map<string, StockRow> {
    const found = new Map<string, StockRow>();
    for (const sku of new Set(skus)) {
      const row = this.readOne(sku);
      if (row !== undefined) {
        found.set(sku, row);
      }
    }
    return found;
  }

  private readOne(sku: string): StockRow | undefined {
    const row = this.prepare<[string], StockDbRow>("SELECT sku, on_hand, reserved, update_time FROM stock WHERE sku = ?")
      .get(sku);
    return row === undefined
      ? undefined
      : { sku, onHand: row.on_hand, reserved: row.reserved, updateTime: row.update_time };
  }

  /**
   * The current levels of the SKUs, in the order asked. Overdue reservations
   * are expired first, so a level never counts stock whose time has run out.
   * Throws SKU_NOT_FOUND naming every unknown SKU.
   */
  getStock(skus: readonly string[]): StockRow[] {
    this.expireDue();
    if (skus.length === 1) {
      // The common read: one SKU, one reused statement, no set or map.
      const row = this.readOne(skus[0]);
      if (row === undefined) {
        throw skuNotFound(skus);
      }
      return [row];
    }
    const found = this.readStock(skus);
    const missing = [...new Set(skus.filter((sku) => !found.has(sku)))];
    if (missing.length > 0) {
      throw skuNotFound(missing);
    }
    return skus.map((sku) => found.get(sku) as StockRow);
  }

  /**
   * Expires every overdue reservation and returns its stock, and how many it
   * expired. Before the next expiry it does nothing (no query but PRAGMA
   * data_version, no write); after it, it takes the write lock only when
   * there is something to expire.
   */
  expireDue(): number {
    this.catchUpNextExpiry();
    const now = this.now();
    if (now < this.nextExpiry) {
      return 0;
    }
    const due = this.prepare<[number], { n: number }>(
        "SELECT count(*) AS n FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?",
      )
      .get(now);
    if (due === undefined || due.n === 0) {
      // Another implementation expired them first: only the next expiry moved.
      this.refreshNextExpiry();
      return 0;
    }
    return this.write((at, changed) => this.expireDueIn(at, changed));
  }

  /** Recomputes the next expiry when another connection has committed since. */
  private catchUpNextExpiry(): void {
    if (this.dataVersion() !== this.nextExpiryVersion) {
      this.refreshNextExpiry();
    }
  }

  /**
   * Computes the next expiry from the file (the reservations_state_expire_time
   * index answers the MIN). data_version is read first, so a commit by
   * another connection between the two reads only makes the next read look
   * again.
   */
  private refreshNextExpiry(): void {
    this.nextExpiryVersion = this.dataVersion();
    const earliest = this.prepare<[], number | null>(
        "SELECT min(expire_time) FROM reservations WHERE state = 'RESERVED'",
      )
      .pluck()
      .get();
    this.nextExpiry = earliest ?? Infinity;
  }

  /**
   * Reserves merged lines for requestId, all or nothing. A retry with the
   * same lines returns the stored reservation, whatever its state now.
   */
  reserve(requestId: string, lines: readonly Line[], ttlMs: number): ReservationRecord {
    const merged = mergeLines(lines);
    const print = fingerprint(merged);
    return this.write((now, changed) => {
      const existing = this.prepare<[string], ReservationDbRow>("SELECT * FROM reservations WHERE request_id = ?")
        .get(requestId);
      if (existing !== undefined) {
        if (existing.fingerprint !== print) {
          return businessError(
            "REQUEST_ID_REUSED",
            `request_id "${requestId}" was already used for a reservation with different lines; send a new request_id for a new reservation.`,
          );
        }
        return this.loadReservation(existing);
      }
      const levels = this.readStock(merged.map((l) => l.sku));
      const missing = merged.filter((l) => !levels.has(l.sku)).map((l) => l.sku);
      if (missing.length > 0) {
        return skuNotFound(missing);
      }
      const short = merged.filter((l) => {
        const level = levels.get(l.sku) as StockRow;
        return level.onHand - level.reserved < l.quantity;
      });
      if (short.length > 0) {
        const detail = short
          .map((l) => {
            const level = levels.get(l.sku) as StockRow;
            return `${l.sku} (asked ${l.quantity}, available ${level.onHand - level.reserved})`;
          })
          .join(", ");
        return businessError("OUT_OF_STOCK", `Not enough stock to reserve: ${detail}; nothing was reserved.`, {
          skus: short.map((l) => l.sku).join(","),
        });
      }
      const reservation: ReservationRecord = {
        reservationId: randomUUID(),
        requestId,
        state: "RESERVED",
        createTime: now,
        expireTime: now + ttlMs,
        lines: merged,
      };
      this.prepare(
          `INSERT INTO reservations (reservation_id, request_id, fingerprint, state, create_time, expire_time, update_time)
           VALUES (?, ?, ?, 'RESERVED', ?, ?, ?)`,
        )
        .run(reservation.reservationId, requestId, print, now, reservation.expireTime, now);
      this.nextExpiry = Math.min(this.nextExpiry, reservation.expireTime);
      const insertLine = this.prepare("INSERT INTO reservation_lines (reservation_id, sku, quantity) VALUES (?, ?, ?)");
      const hold = this.prepare("UPDATE stock SET reserved = reserved + ?, update_time = ? WHERE sku = ?");
      for (const line of merged) {
        insertLine.run(reservation.reservationId, line.sku, line.quantity);
        hold.run(line.quantity, now, line.sku);
        changed.add(line.sku);
      }
      return reservation;
    });
  }

  /** Turns a reservation into a permanent decrement of on_hand. */
  commit(reservationId: string): ReservationRecord {
    return this.write((now, changed) => {
      const row = this.findReservation(reservationId);
      if (!("reservation_id" in row)) {
        return row;
      }
      switch (row.state) {
        case "COMMITTED":
          return this.loadReservation(row);
        case "RELEASED":
          return businessError(
            "RESERVATION_RELEASED",
            `Reservation ${reservationId} was released and can no longer be committed; reserve again.`,
          );
        case "EXPIRED":
          return expired(reservationId);
        case "RESERVED":
          break;
      }
      const reservation = this.loadReservation(row);
      const take = this.prepare(
        "UPDATE stock SET on_hand = on_hand - ?, reserved = reserved - ?, update_time = ? WHERE sku = ?",
      );
      for (const line of reservation.lines) {
        take.run(line.quantity, line.quantity, now, line.sku);
        changed.add(line.sku);
      }
      this.setState(reservationId, "COMMITTED", now);
      this.earliestMayBeGone = true;
      return { ...reservation, state: "COMMITTED" };
    });
  }

  /** Cancels a reservation and returns its stock. */
  release(reservationId: string): ReservationRecord {
    return this.write((now, changed) => {
      const row = this.findReservation(reservationId);
      if (!("reservation_id" in row)) {
        return row;
      }
      switch (row.state) {
        case "RELEASED":
          return this.loadReservation(row);
        case "COMMITTED":
          return businessError(
            "RESERVATION_COMMITTED",
            `Reservation ${reservationId} was committed and can no longer be released.`,
          );
        case "EXPIRED":
          return expired(reservationId);
        case "RESERVED":
          break;
      }
      const reservation = this.loadReservation(row);
      this.returnStock(reservation.lines, now, changed);
      this.setState(reservationId, "RELEASED", now);
      this.earliestMayBeGone = true;
      return { ...reservation, state: "RELEASED" };
    });
  }

  /**
   * Sets on_hand for every item in one transaction, or applies nothing and
   * returns the problems. A later item for the same SKU wins.
   */
  importStock(items: readonly ImportItem[]): ImportSummary | ImportProblem[] {
    let problems: ImportProblem[] = [];
    const summary = this.write((now, changed) => {
      const levels = this.readStock(items.map((item) => item.sku));
      problems = items.flatMap((item, index): ImportProblem[] => {
        const level = levels.get(item.sku);
        if (level !== undefined && item.onHand < level.reserved) {
          return [
            {
              index,
              field: "on_hand",
              description: `must not be below the ${level.reserved} units reserved for ${item.sku}`,
            },
          ];
        }
        return [];
      });
      if (problems.length > 0) {
        return { skusCreated: 0, skusUpdated: 0 };
      }
      const finalOnHand = new Map<string, number>();
      for (const item of items) {
        finalOnHand.set(item.sku, item.onHand);
      }
      const insert = this.prepare("INSERT INTO stock (sku, on_hand, reserved, update_time) VALUES (?, ?, 0, ?)");
      const update = this.prepare("UPDATE stock SET on_hand = ?, update_time = ? WHERE sku = ? AND on_hand <> ?");
      let skusCreated = 0;
      let skusUpdated = 0;
      for (const [sku, onHand] of finalOnHand) {
        if (levels.has(sku)) {
          skusUpdated += 1;
          if (update.run(onHand, now, sku, onHand).changes > 0) {
            changed.add(sku);
          }
        } else {
          skusCreated += 1;
          insert.run(sku, onHand, now);
          changed.add(sku);
        }
      }
      return { skusCreated, skusUpdated };
    });
    return problems.length > 0 ? problems : summary;
  }

  /**
   * Runs fn in one BEGIN IMMEDIATE transaction after expiring overdue
   * reservations. fn returns its result, or an RpcError to throw after the
   * transaction commits (so expiries done on the way are kept). Change
   * listeners hear about the changed SKUs after the commit. The next expiry
   * is recomputed after a write that may have removed the earliest one,
   * whether it committed or rolled back.
   */
  private write<T>(fn: (now: number, changed: Set<string>) => T | RpcError): T {
    const changed = new Set<string>();
    const run = this.db.transaction(() => {
      const now = this.now();
      this.expireDueIn(now, changed);
      return fn(now, changed);
    });
    let result: T | RpcError;
    try {
      result = run.immediate();
    } finally {
      if (this.earliestMayBeGone) {
        this.earliestMayBeGone = false;
        this.refreshNextExpiry();
      }
    }
    if (changed.size > 0) {
      const skus = [...changed];
      for (const listener of this.listeners) {
        listener(skus);
      }
    }
    if (result instanceof Error) {
      throw result;
    }
    return result;
  }

  private expireDueIn(now: number, changed: Set<string>): number {
    const due = this.prepare<[number], { reservation_id: string }>(
        "SELECT reservation_id FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?",
      )
      .all(now);
    for (const { reservation_id: id } of due) {
      this.returnStock(this.loadLines(id), now, changed);
      this.setState(id, "EXPIRED", now);
    }
    if (due.length > 0) {
      this.earliestMayBeGone = true;
    }
    return due.length;
  }

  private returnStock(lines: readonly Line[], now: number, changed: Set<string>): void {
    const give = this.prepare("UPDATE stock SET reserved = reserved - ?, update_time = ? WHERE sku = ?");
    for (const line of lines) {
      give.run(line.quantity, now, line.sku);
      changed.add(line.sku);
    }
  }

  private setState(reservationId: string, state: ReservationStateName, now: number): void {
    this.prepare("UPDATE reservations SET state = ?, update_time = ? WHERE reservation_id = ?")
      .run(state, now, reservationId);
  }

  private findReservation(reservationId: string): ReservationDbRow | RpcError {
    const row = this.prepare<[string], ReservationDbRow>("SELECT * FROM reservations WHERE reservation_id = ?")
      .get(reservationId);
    return (
      row ??
businessError("RESERVATION_NOT_FOUND", `No reservation has the id ${reservationId}.`)
    );
  }

  private loadLines(reservationId: string): Line[] {
    return this.prepare<[string], Line>("SELECT sku, quantity FROM reservation_lines WHERE reservation_id = ?")
      .all(reservationId)
      .sort((a, b) => compareUtf8(a.sku, b.sku));
  }

  private loadReservation(row: ReservationDbRow): ReservationRecord {
    return {
      reservationId: row.reservation_id,
      requestId: row.request_id,
      state: row.state,
      createTime: row.create_time,
      expireTime: row.expire_time,
      lines: this.loadLines(row.reservation_id),
    };
  }
}

function skuNotFound(skus: readonly string[]): RpcError {
  return businessError("SKU_NOT_FOUND", `These SKUs have never been stocked: ${skus.join(", ")}.`, {
    skus: skus.join(","),
  });
}

function expired(reservationId: string): RpcError {
  return businessError(
    "RESERVATION_EXPIRED",
    `Reservation ${reservationId} expired before it was committed and its stock was returned; reserve again.`,
  );
}
