// Every InventoryService RPC and error against a real server on a loopback
// port, through the generated client.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Metadata, status as Code, type ServiceError } from "@grpc/grpc-js";

import { ERROR_DOMAIN } from "../../src/inventory/errors.js";
import {
  ReservationState,
  type ImportStockRequest,
  type ImportStockResponse,
  type InventoryServiceClient,
  type WatchStockResponse,
} from "../../gen/shop/inventory/v1/inventory_service.js";
import { deadline, expectFailure, fields, startServer, tempDir, unary, waitFor, type Running } from "./support.js";

const ESPRESSO = "sku-espresso-beans-1kg"; // initial_stock 120
const FILTER = "sku-filter-beans-500g"; // initial_stock 80
const DECAF = "sku-decaf-beans-500g"; // initial_stock 40

function importStock(client: InventoryServiceClient, items: ImportStockRequest[]): Promise<ImportStockResponse> {
  return new Promise((resolve, reject) => {
    const call = client.importStock(new Metadata(), deadline(), (err, response) => {
      if (err !== null) {
        reject(err);
        return;
      }
      resolve(response);
    });
    for (const item of items) {
      call.write(item);
    }
    call.end();
  });
}

async function level(client: InventoryServiceClient, sku: string) {
  const response = await unary(client, "getStock", { skus: [sku] });
  const found = response.levels[0];
  assert.ok(found);
  return found;
}

describe("InventoryService", () => {
  let running: Running;
  let client: InventoryServiceClient;
  const dir = tempDir();

  before(async () => {
    running = await startServer(`${dir.dir}/inventory.db`);
    client = running.client;
  });

  after(async () => {
    await running.stop();
    dir.remove();
  });

  describe("GetStock", () => {
    test("returns the seeded levels in the order asked", async () => {
      const response = await unary(client, "getStock", { skus: [FILTER, ESPRESSO] });
      assert.deepEqual(
        response.levels.map((l) => [l.sku, l.onHand, l.reserved, l.available]),
        [
          [FILTER, 80, 0, 80],
          [ESPRESSO, 120, 0, 120],
        ],
      );
      assert.ok(response.levels[0]?.updateTime, "update_time is set");
    });

    test("an empty list is INVALID_ARGUMENT on skus", async () => {
      const failure = await expectFailure(unary(client, "getStock", { skus: [] }), Code.INVALID_ARGUMENT);
      assert.deepEqual(fields(failure), ["skus"]);
    });

    test("an empty SKU is INVALID_ARGUMENT naming its index", async () => {
      const failure = await expectFailure(
        unary(client, "getStock", { skus: [ESPRESSO, ""] }),
        Code.INVALID_ARGUMENT,
      );
      assert.deepEqual(fields(failure), ["skus[1]"]);
    });

    test("more than 100 SKUs is INVALID_ARGUMENT", async () => {
      const skus = Array.from({ length: 101 }, () => ESPRESSO);
      const failure = await expectFailure(unary(client, "getStock", { skus }), Code.INVALID_ARGUMENT);
      assert.deepEqual(fields(failure), ["skus"]);
    });

    test("unknown SKUs are NOT_FOUND, reason SKU_NOT_FOUND, listing each", async () => {
      const failure = await expectFailure(
        unary(client, "getStock", { skus: ["nope-1", ESPRESSO, "nope-2"] }),
        Code.NOT_FOUND,
      );
      assert.deepEqual(failure.errorInfo, {
        reason: "SKU_NOT_FOUND",
        domain: ERROR_DOMAIN,
        metadata: { skus: "nope-1,nope-2" },
      });
    });
  });

  describe("Reserve, Commit and Release", () => {
    test("Reserve holds stock, merging lines of the same SKU, ordered by SKU", async () => {
      const response = await unary(client, "reserve", {
        requestId: "merge-1",
        lines: [
          { sku: FILTER, quantity: 2 },
          { sku: DECAF, quantity: 1 },
          { sku: FILTER, quantity: 3 },
        ],
      });
      const reservation = response.reservation;
      assert.ok(reservation);
      assert.equal(reservation.state, ReservationState.RESERVATION_STATE_RESERVED);
      assert.equal(reservation.requestId, "merge-1");
      assert.deepEqual(reservation.lines, [
        { sku: DECAF, quantity: 1 },
        { sku: FILTER, quantity: 5 },
      ]);
      assert.ok(reservation.createTime && reservation.expireTime);
      assert.ok(reservation.expireTime.seconds > reservation.createTime.seconds, "expires after it was created");
      const filter = await level(client, FILTER);
      assert.deepEqual([filter.onHand, filter.reserved, filter.available], [80, 5, 75]);
      await unary(client, "release", { reservationId: reservation.reservationId });
    });

    test("Reserve is idempotent on request_id: the same reservation, reserved once", async () => {
      const request = { requestId: "idem-1", lines: [{ sku: ESPRESSO, quantity: 4 }] };
      const first = await unary(client, "reserve", request);
      const second = await unary(client, "reserve", request);
      assert.deepEqual(second, first);
      const espresso = await level(client, ESPRESSO);
      assert.equal(espresso.reserved, 4, "the retry reserved nothing more");
      await unary(client, "release", { reservationId: first.reservation?.reservationId ?? "" });
    });

    test("a reused request_id with other lines is ALREADY_EXISTS, reason REQUEST_ID_REUSED", async () => {
      await unary(client, "reserve", { requestId: "reuse-1", lines: [{ sku: DECAF, quantity: 1 }] });
      const failure = await expectFailure(
        unary(client, "reserve", { requestId: "reuse-1", lines: [{ sku: DECAF, quantity: 2 }] }),
        Code.ALREADY_EXISTS,
      );
      assert.equal(failure.errorInfo?.reason, "REQUEST_ID_REUSED");
      assert.equal(failure.errorInfo.domain, ERROR_DOMAIN);
    });

    test("not enough stock is FAILED_PRECONDITION, OUT_OF_STOCK naming every short SKU, nothing reserved", async () => {
      const before = await unary(client, "getStock", { skus: [ESPRESSO, FILTER, DECAF] });
      const failure = await expectFailure(
        unary(client, "reserve", {
          requestId: "short-1",
          lines: [
            { sku: ESPRESSO, quantity: 1 },
            { sku: FILTER, quantity: 10_000 },
            { sku: DECAF, quantity: 10_000 },
          ],
        }),
        Code.FAILED_PRECONDITION,
      );
      assert.deepEqual(failure.errorInfo, {
        reason: "OUT_OF_STOCK",
        domain: ERROR_DOMAIN,
        metadata: { skus: [DECAF, FILTER].join(",") },
      });
      const afterwards = await unary(client, "getStock", { skus: [ESPRESSO, FILTER, DECAF] });
      assert.deepEqual(afterwards, before, "all or nothing: the line that fitted was not reserved either");
    });

    test("an unknown SKU is NOT_FOUND, reason SKU_NOT_FOUND", async () => {
      const failure = await expectFailure(
        unary(client, "reserve", { requestId: "unknown-1", lines: [{ sku: "nope", quantity: 1 }] }),
        Code.NOT_FOUND,
      );
      assert.deepEqual(failure.errorInfo?.metadata, { skus: "nope" });
    });

    test("bad input is INVALID_ARGUMENT with one field violation per problem", async () => {
      const failure = await expectFailure(
        unary(client, "reserve", {
          requestId: "",
          lines: [
            { sku: ESPRESSO, quantity: 0 },
            { sku: "", quantity: 1 },
            { sku: ESPRESSO, quantity: 10_001 },
          ],
        }),
        Code.INVALID_ARGUMENT,
      );
      assert.deepEqual(fields(failure), ["request_id", "lines[0].quantity", "lines[1].sku", "lines[2].quantity"]);
      const noLines = await expectFailure(
        unary(client, "reserve", { requestId: "x".repeat(129), lines: [] }),
        Code.INVALID_ARGUMENT,
      );
      assert.deepEqual(fields(noLines), ["request_id", "lines"]);
    });

    test("Commit decrements on_hand for good and is idempotent; Release then fails", async () => {
      const reserved = await unary(client, "reserve", {
        requestId: "commit-1",
        lines: [{ sku: DECAF, quantity: 3 }],
      });
      const id = reserved.reservation?.reservationId ?? "";
      const before = await level(client, DECAF);
      const committed = await unary(client, "commit", { reservationId: id });
      assert.equal(committed.reservation?.state, ReservationState.RESERVATION_STATE_COMMITTED);
      const afterwards = await level(client, DECAF);
      assert.deepEqual(
        [afterwards.onHand, afterwards.reserved],
        [before.onHand - 3, before.reserved - 3],
        "the held units left on_hand",
      );
      const again = await unary(client, "commit", { reservationId: id });
      assert.deepEqual(again, committed, "a second Commit returns it unchanged");
      assert.equal((await level(client, DECAF)).onHand, afterwards.onHand, "and takes nothing more");
      const failure = await expectFailure(
        unary(client, "release", { reservationId: id }),
        Code.FAILED_PRECONDITION,
      );
      assert.equal(failure.errorInfo?.reason, "RESERVATION_COMMITTED");
    });

    test("Release returns the stock and is idempotent; Commit then fails", async () => {
      const reserved = await unary(client, "reserve", {
        requestId: "release-1",
        lines: [{ sku: FILTER, quantity: 6 }],
      });
      const id = reserved.reservation?.reservationId ?? "";
      assert.equal((await level(client, FILTER)).reserved, 6);
      const released = await unary(client, "release", { reservationId: id });
      assert.equal(released.reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);
      assert.equal((await level(client, FILTER)).reserved, 0);
      assert.deepEqual(await unary(client, "release", { reservationId: id }), released);
      assert.equal((await level(client, FILTER)).reserved, 0, "a second Release returns nothing more");
      const failure = await expectFailure(unary(client, "commit", { reservationId: id }), Code.FAILED_PRECONDITION);
      assert.equal(failure.errorInfo?.reason, "RESERVATION_RELEASED");
    });

    test("an unknown reservation is NOT_FOUND, reason RESERVATION_NOT_FOUND", async () => {
      for (const method of ["commit", "release"] as const) {
        const failure = await expectFailure(unary(client, method, { reservationId: "no-such-id" }), Code.NOT_FOUND);
        assert.equal(failure.errorInfo?.reason, "RESERVATION_NOT_FOUND");
      }
    });

    test("an empty reservation_id is INVALID_ARGUMENT", async () => {
      for (const method of ["commit", "release"] as const) {
        const failure = await expectFailure(unary(client, method, { reservationId: "" }), Code.INVALID_ARGUMENT);
        assert.deepEqual(fields(failure), ["reservation_id"]);
      }
    });
  });

  describe("ImportStock", () => {
    test("applies every item at the end and summarises; a later item for a SKU wins", async () => {
      const summary = await importStock(client, [
        { sku: "sku-import-new", onHand: 5 },
        { sku: ESPRESSO, onHand: 200 },
        { sku: "sku-import-new", onHand: 7 },
      ]);
      assert.deepEqual(summary, { itemsReceived: 3, skusCreated: 1, skusUpdated: 1 });
      const response = await unary(client, "getStock", { skus: ["sku-import-new", ESPRESSO] });
      assert.deepEqual(
        response.levels.map((l) => [l.sku, l.onHand]),
        [
          ["sku-import-new", 7],
          [ESPRESSO, 200],
        ],
      );
    });

    test("a bad item fails the whole import, naming its index, and nothing is applied", async () => {
      const failure = await expectFailure(
        importStock(client, [
          { sku: "sku-import-never", onHand: 1 },
          { sku: ESPRESSO, onHand: 1 },
          { sku: "", onHand: 3 },
          { sku: FILTER, onHand: -1 },
        ]),
        Code.INVALID_ARGUMENT,
      );
      assert.deepEqual(fields(failure), ["items[2].sku", "items[3].on_hand"]);
      await expectFailure(unary(client, "getStock", { skus: ["sku-import-never"] }), Code.NOT_FOUND);
      assert.equal((await level(client, ESPRESSO)).onHand, 200, "the good items were not applied either");
    });

    test("on_hand below the units reserved is INVALID_ARGUMENT on that item", async () => {
      const reserved = await unary(client, "reserve", {
        requestId: "import-reserved",
        lines: [{ sku: DECAF, quantity: 2 }],
      });
      const failure = await expectFailure(
        importStock(client, [
          { sku: FILTER, onHand: 50 },
          { sku: DECAF, onHand: 1 },
        ]),
        Code.INVALID_ARGUMENT,
      );
      assert.deepEqual(fields(failure), ["items[1].on_hand"]);
      assert.equal((await level(client, FILTER)).onHand, 80, "nothing was applied");
      await unary(client, "release", { reservationId: reserved.reservation?.reservationId ?? "" });
    });
  });

  describe("WatchStock", () => {
    test("streams the current levels first, then every change, and leaves no listener after cancel", async () => {
      const call = client.watchStock({ skus: [DECAF, FILTER] }, deadline());
      const received: WatchStockResponse[] = [];
      const errors: ServiceError[] = [];
      call.on("data", (message: WatchStockResponse) => received.push(message));
      call.on("error", (err: ServiceError) => errors.push(err));
      await waitFor(() => received.length === 2, "the initial levels");
      assert.deepEqual(
        received.map((m) => [m.level?.sku, m.initial]),
        [
          [DECAF, true],
          [FILTER, true],
        ],
      );
      assert.equal(running.server.watchCount(), 1);

      const reserved = await unary(client, "reserve", {
        requestId: "watch-1",
        lines: [{ sku: FILTER, quantity: 1 }],
      });
      await unary(client, "release", { reservationId: reserved.reservation?.reservationId ?? "" });
      await waitFor(() => received.length === 4, "two changes");
      assert.deepEqual(
        received.slice(2).map((m) => [m.level?.sku, m.level?.reserved, m.initial]),
        [
          [FILTER, 1, false],
          [FILTER, 0, false],
        ],
      );

      call.cancel();
      await waitFor(() => running.server.watchCount() === 0, "the listener to be removed");
      assert.equal(errors[0]?.code, Code.CANCELLED);
    });

    test("unknown SKUs are NOT_FOUND before any message", async () => {
      const call = client.watchStock({ skus: [FILTER, "nope"] }, deadline());
      const received: WatchStockResponse[] = [];
      call.on("data", (message: WatchStockResponse) => received.push(message));
      const err = await new Promise<ServiceError>((resolve) => call.on("error", resolve));
      assert.equal(err.code, Code.NOT_FOUND);
      assert.equal(received.length, 0);
      assert.equal(running.server.watchCount(), 0);
    });

    test("a watch ends at its deadline and leaves no listener", async () => {
      const call = client.watchStock({ skus: [FILTER] }, { deadline: Date.now() + 1500 });
      call.on("data", () => undefined);
      const err = await new Promise<ServiceError>((resolve) => call.on("error", resolve));
      assert.equal(err.code, Code.DEADLINE_EXCEEDED);
      await waitFor(() => running.server.watchCount() === 0, "the listener to be removed");
    });
  });

  describe("logs", () => {
    test("every RPC logs method, code, duration_ms and x-request-id as JSON", async () => {
      const metadata = new Metadata();
      metadata.set("x-request-id", "log-test-1");
      await expectFailure(unary(client, "getStock", { skus: ["nope"] }, metadata), Code.NOT_FOUND);
      await waitFor(() => running.logs.some((l) => l["request_id"] === "log-test-1"), "the rpc log line");
      const line = running.logs.find((l) => l["request_id"] === "log-test-1");
      assert.ok(line);
      assert.equal(line["msg"], "rpc");
      assert.equal(line["service"], "inventory");
      assert.equal(line["level"], "info");
      assert.equal(line["method"], "/shop.inventory.v1.InventoryService/GetStock");
      assert.equal(line["code"], "NOT_FOUND");
      assert.equal(typeof line["duration_ms"], "number");
      assert.match(String(line["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    });
  });
});
