// Data survives a restart: a new server on the same database file sees it.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ReservationState } from "../../gen/shop/inventory/v1/inventory_service.js";
import { startServer, tempDir, unary } from "./support.js";

const SKU = "sku-filter-beans-500g"; // initial_stock 80
const dir = tempDir();

after(() => {
  dir.remove();
});

test("a restarted server keeps stock and reservations and does not seed again", async () => {
  const dbPath = `${dir.dir}/inventory.db`;
  const first = await startServer(dbPath);
  const committed = await unary(first.client, "reserve", {
    requestId: "restart-1",
    lines: [{ sku: SKU, quantity: 5 }],
  });
  const id = committed.reservation?.reservationId ?? "";
  await unary(first.client, "commit", { reservationId: id });
  const held = await unary(first.client, "reserve", {
    requestId: "restart-2",
    lines: [{ sku: SKU, quantity: 2 }],
  });
  await first.stop();

  const second = await startServer(dbPath);
  try {
    const stock = await unary(second.client, "getStock", { skus: [SKU] });
    assert.deepEqual(
      stock.levels.map((l) => [l.onHand, l.reserved]),
      [[75, 2]],
      "on_hand 80 - 5 committed, 2 still reserved; the seed was not applied again",
    );
    const again = await unary(second.client, "commit", { reservationId: id });
    assert.equal(again.reservation?.state, ReservationState.RESERVATION_STATE_COMMITTED);
    const retry = await unary(second.client, "reserve", {
      requestId: "restart-2",
      lines: [{ sku: SKU, quantity: 2 }],
    });
    assert.deepEqual(retry, held, "idempotency survives the restart");
  } finally {
    await second.stop();
  }
});
