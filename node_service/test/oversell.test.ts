// Many concurrent Reserve calls at one SKU grant exactly the units available.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Metadata, status as Code, type ServiceError } from "@grpc/grpc-js";

import type { InventoryServiceClient } from "../src/gen/shop/inventory/v1/inventory_service.js";
import { decodeFailure, deadline, startServer, tempDir, unary, type Running } from "./helpers.js";

const SKU = "sku-decaf-beans-500g"; // initial_stock 40
const CALLS = 120;

let running: Running;
const dir = tempDir();

before(async () => {
  running = await startServer(`${dir.dir}/inventory.db`);
});

after(async () => {
  await running.stop();
  dir.remove();
});

/** Fires count concurrent one-unit reservations; returns how many were granted. */
export async function race(client: InventoryServiceClient, prefix: string, count: number): Promise<number> {
  const outcomes = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<"granted" | "out_of_stock">((resolve, reject) => {
          client.reserve(
            { requestId: `${prefix}-${i}`, lines: [{ sku: SKU, quantity: 1 }] },
            new Metadata(),
            deadline(),
            (err: ServiceError | null) => {
              if (err === null) {
                resolve("granted");
              } else if (err.code === Code.FAILED_PRECONDITION && decodeFailure(err).errorInfo?.reason === "OUT_OF_STOCK") {
                resolve("out_of_stock");
              } else {
                reject(err);
              }
            },
          );
        }),
    ),
  );
  return outcomes.filter((o) => o === "granted").length;
}

test("concurrent reservations at one SKU never oversell", async () => {
  const { client } = running;
  const granted = await race(client, "race", CALLS);
  assert.equal(granted, 40, "exactly the 40 available units were granted");
  const stock = await unary(client, "getStock", { skus: [SKU] });
  assert.deepEqual(
    stock.levels.map((l) => [l.onHand, l.reserved, l.available]),
    [[40, 40, 0]],
  );
});
