// shop.inventory.v1.InventoryService: request validation and the mapping
// between the wire types and the store. The store does the work.
import {
  status as Code,
  type handleUnaryCall,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServiceError,
  type StatusObject,
} from "@grpc/grpc-js";

import type { Timestamp } from "../../gen/google/protobuf/timestamp.js";
import {
  ReservationState,
  type InventoryServiceServer,
  type ImportStockRequest,
  type Reservation,
  type ReservationLine,
  type StockLevel,
} from "../../gen/shop/inventory/v1/inventory_service.js";
import { invalidArgument, RpcError, type FieldViolation } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import type { InventoryStore, ReservationRecord, ReservationStateName, StockRow } from "./store.js";
import type { StockWatchHub } from "./watch.js";

/** Limits from inventory_service.proto. */
export const MAX_SKUS = 100;
export const MAX_LINES = 100;
export const MAX_REQUEST_ID_LENGTH = 128;
export const MAX_LINE_QUANTITY = 10_000;
export const MAX_ON_HAND = 1_000_000;

export interface ServiceDeps {
  store: InventoryStore;
  hub: StockWatchHub;
  reservationTtlMs: number;
  logger: Logger;
  /** Told of each Reserve, Commit and Release that succeeded (the inventory series count them). */
  onReservation?: (outcome: "reserved" | "committed" | "released") => void;
}

function timestamp(ms: number): Timestamp {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

function toLevel(row: StockRow): StockLevel {
  return {
    sku: row.sku,
    onHand: row.onHand,
    reserved: row.reserved,
    available: row.onHand - row.reserved,
    updateTime: timestamp(row.updateTime),
  };
}

const STATES: Record<ReservationStateName, ReservationState> = {
  RESERVED: ReservationState.RESERVATION_STATE_RESERVED,
  COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
  RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
  EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
};

function toReservation(record: ReservationRecord): Reservation {
  return {
    reservationId: record.reservationId,
    requestId: record.requestId,
    lines: record.lines.map((l) => ({ sku: l.sku, quantity: l.quantity })),
    state: STATES[record.state],
    createTime: timestamp(record.createTime),
    expireTime: timestamp(record.expireTime),
  };
}

/** Violations of a repeated SKU field: 1 to MAX_SKUS non-empty SKUs. */
export function checkSkus(skus: readonly string[], field = "skus"): FieldViolation[] {
  if (skus.length === 0 || skus.length > MAX_SKUS) {
    return [{ field, description: `must list 1 to ${MAX_SKUS} SKUs; got ${skus.length}` }];
  }
  return skus.flatMap((sku, i) => (sku === "" ? [{ field: `${field}[${i}]`, description: "must not be empty" }] : []));
}

function checkReservationId(reservationId: string): FieldViolation[] {
  return reservationId === "" ? [{ field: "reservation_id", description: "must be set" }] : [];
}

/** The length in Unicode code points, which is what the proto's "characters" means. */
function codePointCount(text: string): number {
  return Array.from(text).length;
}

/** Violations of a ReserveRequest. */
export function checkReserve(requestId: string, lines: readonly ReservationLine[]): FieldViolation[] {
  const violations: FieldViolation[] = [];
  const idLength = codePointCount(requestId);
  if (idLength === 0) {
    violations.push({ field: "request_id", description: "must be set" });
  } else if (idLength > MAX_REQUEST_ID_LENGTH) {
    violations.push({ field: "request_id", description: `must be at most ${MAX_REQUEST_ID_LENGTH} characters; got ${idLength}` });
  }
  if (lines.length === 0 || lines.length > MAX_LINES) {
    violations.push({ field: "lines", description: `must list 1 to ${MAX_LINES} lines; got ${lines.length}` });
    return violations;
  }
  lines.forEach((line, i) => {
    if (line.sku === "") {
      violations.push({ field: `lines[${i}].sku`, description: "must be set" });
    }
    if (line.quantity < 1 || line.quantity > MAX_LINE_QUANTITY) {
      violations.push({
        field: `lines[${i}].quantity`,
        description: `must be 1 to ${MAX_LINE_QUANTITY}; got ${line.quantity}`,
      });
    }
  });
  return violations;
}

/** Violations of the items of an ImportStock stream, by zero-based index. */
export function checkImportItems(items: readonly ImportStockRequest[]): FieldViolation[] {
  return items.flatMap((item, i) => {
    const violations: FieldViolation[] = [];
    if (item.sku === "") {
      violations.push({ field: `items[${i}].sku`, description: "must be set" });
    }
    if (item.onHand < 0 || item.onHand > MAX_ON_HAND) {
      violations.push({ field: `items[${i}].on_hand`, description: `must be 0 to ${MAX_ON_HAND}; got ${item.onHand}` });
    }
    return violations;
  });
}

/**
 * Turns anything a handler threw into the status for the client: an RpcError
 * as it is, a busy database as UNAVAILABLE (safe to retry), anything else as
 * INTERNAL with the cause logged rather than sent.
 */
export function toServiceError(err: unknown, logger: Logger, method: string): Partial<StatusObject> & ServiceError {
  if (err instanceof RpcError) {
    return err.toStatus();
  }
  const sqliteCode = (err as { code?: unknown }).code;
  if (sqliteCode === "SQLITE_BUSY" || sqliteCode === "SQLITE_LOCKED") {
    return new RpcError(Code.UNAVAILABLE, "The inventory database is busy; retry the call.").toStatus();
  }
  logger.error({ err, method }, "handler failed");
  return new RpcError(Code.INTERNAL, "The inventory service failed unexpectedly; the cause is in its logs.").toStatus();
}

/**
 * Adapts a synchronous handler to grpc-js: it does no work for a call that
 * was already cancelled or timed out, and calls back exactly once.
 */
function unary<Req, Res>(logger: Logger, method: string, fn: (request: Req) => Res): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    if (call.cancelled) {
      return;
    }
    let response: Res;
    try {
      response = fn(call.request);
    } catch (err) {
      callback(toServiceError(err, logger, method));
      return;
    }
    callback(null, response);
  };
}

function fail(violations: readonly FieldViolation[]): void {
  if (violations.length > 0) {
    throw invalidArgument(violations);
  }
}

/** The InventoryService handlers. */
export function createInventoryService(deps: ServiceDeps): InventoryServiceServer {
  const { store, hub, logger } = deps;
  return {
    getStock: unary(logger, "GetStock", (request) => {
      fail(checkSkus(request.skus));
      return { levels: store.getStock(request.skus).map(toLevel) };
    }),

    reserve: unary(logger, "Reserve", (request) => {
      fail(checkReserve(request.requestId, request.lines));
      const reservation = store.reserve(request.requestId, request.lines, deps.reservationTtlMs);
      deps.onReservation?.("reserved");
      return { reservation: toReservation(reservation) };
    }),

    commit: unary(logger, "Commit", (request) => {
      fail(checkReservationId(request.reservationId));
      const reservation = store.commit(request.reservationId);
      deps.onReservation?.("committed");
      return { reservation: toReservation(reservation) };
    }),

    release: unary(logger, "Release", (request) => {
      fail(checkReservationId(request.reservationId));
      const reservation = store.release(request.reservationId);
      deps.onReservation?.("released");
      return { reservation: toReservation(reservation) };
    }),

    watchStock: (call) => {
      let initial: StockRow[];
      try {
        fail(checkSkus(call.request.skus));
        // One message per SKU, however often the request names it.
        initial = store.getStock([...new Set(call.request.skus)]);
      } catch (err) {
        call.emit("error", toServiceError(err, logger, "WatchStock"));
        return;
      }
      if (call.cancelled) {
        return;
      }
      const unsubscribe = hub.subscribe(initial, {
        send: (level, isInitial) => {
          call.write({ level: toLevel(level), initial: isInitial });
        },
        close: () => {
          call.emit("error", new RpcError(Code.UNAVAILABLE, "The server is shutting down; watch again.").toStatus());
        },
      });
      call.on("cancelled", unsubscribe);
    },

    importStock: (call, callback) => {
      const items: ImportStockRequest[] = [];
      call.on("data", (item: ImportStockRequest) => {
        items.push(item);
      });
      call.on("end", () => {
        // A reset stream (the client cancelled, or its deadline passed) also
        // ends the readable side, and grpc-js marks the call cancelled only
        // when the stream closes, a moment later. Look again after the
        // current I/O events, so a reset is never taken for a half-close:
        // nothing is applied unless the client really finished sending.
        setImmediate(() => {
          if (call.cancelled || deadlinePassed(call.getDeadline())) {
            return;
          }
          applyImport();
        });
      });
      const applyImport = (): void => {
        let outcome: ReturnType<InventoryStore["importStock"]>;
        try {
          fail(checkImportItems(items));
          outcome = store.importStock(items);
        } catch (err) {
          callback(toServiceError(err, logger, "ImportStock"));
          return;
        }
        if (Array.isArray(outcome)) {
          callback(
            invalidArgument(
              outcome.map((p) => ({ field: `items[${p.index}].${p.field}`, description: p.description })),
            ).toStatus(),
          );
          return;
        }
        callback(null, { itemsReceived: items.length, ...outcome });
      };
    },
  };
}

/** True when a call's deadline (a Date, a number of ms since the epoch, or Infinity) is in the past. */
function deadlinePassed(deadline: Date | number): boolean {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) && at <= Date.now();
}
