// Reservation expiry with a short time to live: the stock comes back and the
// reservation can no longer be committed or released.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { status as Code, type ServiceError } from "@grpc/grpc-js";

import { ReservationState, type WatchStockResponse } from "../../gen/shop/inventory/v1/inventory_service.js";
import { deadline, expectFailure, sleepUntil, startServer, tempDir, unary, waitFor, type Running } from "./support.js";

const SKU = "sku-decaf-beans-500g"; // initial_stock 40
const TTL_MS = 500;

let running: Running;
const dir = tempDir();

before(async () => {
  running = await startServer(`${dir.dir}/inventory.db`, { reservationTtlMs: TTL_MS });
});

after(async () => {
  await running.stop();
  dir.remove();
});

test("an uncommitted reservation expires after the TTL, its stock returns, and Commit and Release say RESERVATION_EXPIRED", async () => {
  const { client } = running;
  const reserved = await unary(client, "reserve", { requestId: "ttl-1", lines: [{ sku: SKU, quantity: 10 }] });
  const reservation = reserved.reservation;
  assert.ok(reservation?.expireTime);
  const expireMs = reservation.expireTime.seconds * 1000 + reservation.expireTime.nanos / 1e6;
  assert.ok(expireMs - Date.now() <= TTL_MS, "the expire_time honours the configured TTL");
  await sleepUntil(expireMs + 1);

  const stock = await unary(client, "getStock", { skus: [SKU] });
  assert.deepEqual(
    stock.levels.map((l) => [l.onHand, l.reserved, l.available]),
    [[40, 0, 40]],
  );
  for (const method of ["commit", "release"] as const) {
    const failure = await expectFailure(
      unary(client, method, { reservationId: reservation.reservationId }),
      Code.FAILED_PRECONDITION,
    );
    assert.equal(failure.errorInfo?.reason, "RESERVATION_EXPIRED");
  }
  const retry = await unary(client, "reserve", { requestId: "ttl-1", lines: [{ sku: SKU, quantity: 10 }] });
  assert.equal(retry.reservation?.state, ReservationState.RESERVATION_STATE_EXPIRED, "a retry finds it expired");
  assert.equal(retry.reservation.reservationId, reservation.reservationId);
});

test("watchers see an expiry without any other call (the periodic sweep)", async () => {
  const { client, server } = running;
  const call = client.watchStock({ skus: [SKU] }, deadline());
  const received: WatchStockResponse[] = [];
  call.on("data", (message: WatchStockResponse) => received.push(message));
  call.on("error", (err: ServiceError) => {
    assert.equal(err.code, Code.CANCELLED);
  });
  await waitFor(() => received.length === 1, "the initial level");
  await unary(client, "reserve", { requestId: "ttl-2", lines: [{ sku: SKU, quantity: 3 }] });
  await waitFor(() => received.some((m) => !m.initial && m.level?.reserved === 0), "the expiry to be streamed");
  assert.deepEqual(
    received.map((m) => m.level?.reserved),
    [0, 3, 0],
  );
  call.cancel();
  await waitFor(() => server.watchCount() === 0, "the listener to be removed");
});
