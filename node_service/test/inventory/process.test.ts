// The service as a process (dist/src/inventory/main.js): start-up, health, the
// SIGTERM path, a taken port, and two processes sharing one database file as
// they do during a live swap.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { credentials, status as Code, type ServiceError } from "@grpc/grpc-js";

import {
  InventoryServiceClient,
  type WatchStockResponse,
} from "../../gen/shop/inventory/v1/inventory_service.js";
import { checkHealth } from "../../src/common/healthcheck.js";
import { deadline, race, spawnMain, tempDir, unary, waitFor, type Child } from "./support.js";

const SKU = "sku-decaf-beans-500g"; // initial_stock 40
const dir = tempDir();
const children: Child[] = [];

after(() => {
  for (const child of children) {
    child.process.kill("SIGKILL");
  }
  dir.remove();
});

async function start(env: Record<string, string>): Promise<Child> {
  const child = await spawnMain(env);
  children.push(child);
  return child;
}

test("main serves health, logs JSON, and on SIGTERM reports NOT_SERVING, drains and exits 0", async () => {
  const child = await start({ SHOP_DB_PATH: `${dir.dir}/sigterm.db` });
  assert.equal(await checkHealth(child.addr, 30_000), "SERVING");
  const listening = child.lines.find((l) => l["msg"] === "listening");
  assert.equal(listening?.["service"], "inventory");
  assert.equal(listening["level"], "info");
  assert.match(String(listening["addr"]), /^127\.0\.0\.1:\d+$/);

  child.process.kill("SIGTERM");
  assert.equal(await child.exited, 0, `exit code; logs: ${JSON.stringify(child.lines)}`);
  assert.ok(child.lines.some((l) => l["msg"] === "shutting down"));
  assert.ok(child.lines.some((l) => l["msg"] === "stopped"));
});

test("every call's log line reaches stdout, in full, before a process stopped by SIGTERM exits", async () => {
  const child = await start({ SHOP_DB_PATH: `${dir.dir}/log-flush.db` });
  const client = new InventoryServiceClient(child.addr, credentials.createInsecure());
  const calls = 300;
  try {
    await Promise.all(Array.from({ length: calls }, () => unary(client, "getStock", { skus: [SKU] })));
  } finally {
    client.close();
  }
  const stdoutClosed = new Promise((resolve) => child.process.stdout.once("close", resolve));
  child.process.kill("SIGTERM");
  assert.equal(await child.exited, 0);
  await stdoutClosed;
  const rpcLines = child.lines.filter(
    (l) => l["msg"] === "rpc" && l["method"] === "/shop.inventory.v1.InventoryService/GetStock",
  );
  assert.equal(rpcLines.length, calls, `GetStock lines logged, of ${calls} calls`);
  assert.equal(child.lines.at(-1)?.["msg"], "stopped", "the last line is the last one logged");
});

test("a taken port exits non-zero naming the address", async () => {
  const first = await start({ SHOP_DB_PATH: `${dir.dir}/port-a.db` });
  const second = spawnMain({ SHOP_DB_PATH: `${dir.dir}/port-b.db`, SHOP_LISTEN_ADDR: first.addr });
  await assert.rejects(second, (err: Error) => {
    assert.match(err.message, /exited with 1/);
    assert.ok(err.message.includes(first.addr), err.message);
    return true;
  });
  first.process.kill("SIGTERM");
  assert.equal(await first.exited, 0);
});

test("two processes on one database file never oversell, and a watch on one sees the other's changes", async () => {
  const dbPath = `${dir.dir}/shared.db`;
  const a = await start({ SHOP_DB_PATH: dbPath });
  const b = await start({ SHOP_DB_PATH: dbPath });
  const clientA = new InventoryServiceClient(a.addr, credentials.createInsecure());
  const clientB = new InventoryServiceClient(b.addr, credentials.createInsecure());
  try {
    const watch = clientA.watchStock({ skus: [SKU] }, deadline());
    const received: WatchStockResponse[] = [];
    watch.on("data", (message: WatchStockResponse) => received.push(message));
    watch.on("error", (err: ServiceError) => {
      assert.equal(err.code, Code.CANCELLED);
    });
    await waitFor(() => received.length === 1, "the initial level");

    const [grantedA, grantedB] = await Promise.all([race(clientA, SKU, "a", 40), race(clientB, SKU, "b", 40)]);
    assert.equal(grantedA + grantedB, 40, `granted ${grantedA} on A and ${grantedB} on B`);
    const stock = await unary(clientB, "getStock", { skus: [SKU] });
    assert.deepEqual(
      stock.levels.map((l) => [l.onHand, l.reserved, l.available]),
      [[40, 40, 0]],
    );
    await waitFor(
      () => received.at(-1)?.level?.reserved === 40,
      `the watch on A to reach reserved 40 (saw ${JSON.stringify(received.map((m) => m.level?.reserved))})`,
    );
    watch.cancel();
  } finally {
    clientA.close();
    clientB.close();
  }
  a.process.kill("SIGTERM");
  b.process.kill("SIGTERM");
  assert.deepEqual(await Promise.all([a.exited, b.exited]), [0, 0]);
});
