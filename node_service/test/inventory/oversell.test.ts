// Many concurrent Reserve calls at one SKU grant exactly the units available.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { race, startServer, tempDir, unary, type Running } from "./support.js";

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

test("concurrent reservations at one SKU never oversell", async () => {
  const { client } = running;
  const granted = await race(client, SKU, "race", CALLS);
  assert.equal(granted, 40, "exactly the 40 available units were granted");
  const stock = await unary(client, "getStock", { skus: [SKU] });
  assert.deepEqual(
    stock.levels.map((l) => [l.onHand, l.reserved, l.available]),
    [[40, 40, 0]],
  );
});
