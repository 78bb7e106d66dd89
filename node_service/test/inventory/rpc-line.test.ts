// The one line per finished RPC that the bootstrap's interceptor
// (common/interceptors.ts) writes, in a process as it runs in the stack:
// exactly the keys docs/conventions.md lists, the span's ids (continuing the
// caller's traceparent), and a call its deadline ended logged with its code
// and its trace like any other.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { credentials, Metadata } from "@grpc/grpc-js";

import { InventoryServiceClient } from "../../gen/shop/inventory/v1/inventory_service.js";
import { spawnMain, tempDir, unary, waitFor, type Child, type LogLine } from "./support.js";

const SKU = "sku-decaf-beans-500g";
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID = "00f067aa0ba902b7";
const dir = tempDir();
let child: Child | undefined;

after(() => {
  child?.process.kill("SIGKILL");
  dir.remove();
});

function traced(requestId: string): Metadata {
  const metadata = new Metadata();
  metadata.set("x-request-id", requestId);
  metadata.set("traceparent", `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`);
  return metadata;
}

async function lineOf(running: Child, requestId: string): Promise<LogLine> {
  await waitFor(() => running.lines.some((l) => l["request_id"] === requestId), `the rpc line of ${requestId}`);
  const line = running.lines.find((l) => l["request_id"] === requestId);
  assert.ok(line);
  return line;
}

test("a finished call's line has exactly the convention's keys and its span's ids, the caller's trace", async () => {
  child = await spawnMain({ SHOP_DB_PATH: `${dir.dir}/line.db`, SHOP_TRACE_SAMPLE_RATIO: "0" });
  const client = new InventoryServiceClient(child.addr, credentials.createInsecure());
  try {
    await unary(client, "getStock", { skus: [SKU] }, traced("line-1"));
    // Unsampled (no traceparent, ratio 0): a trace id all the same.
    const plain = new Metadata();
    plain.set("x-request-id", "line-2");
    await unary(client, "getStock", { skus: [SKU] }, plain);
  } finally {
    client.close();
  }
  const line = await lineOf(child, "line-1");
  assert.deepEqual(Object.keys(line).sort(), [
    "code",
    "duration_ms",
    "impl",
    "level",
    "method",
    "msg",
    "request_id",
    "service",
    "span_id",
    "time",
    "trace_id",
  ]);
  assert.equal(line["msg"], "rpc");
  assert.equal(line["level"], "info");
  assert.equal(line["service"], "inventory");
  assert.equal(line["impl"], "node");
  assert.equal(line["method"], "/shop.inventory.v1.InventoryService/GetStock");
  assert.equal(line["code"], "OK");
  assert.equal(typeof line["duration_ms"], "number");
  assert.equal(line["trace_id"], TRACE_ID, "the caller's trace");
  assert.match(String(line["span_id"]), /^[0-9a-f]{16}$/);
  assert.notEqual(line["span_id"], PARENT_SPAN_ID, "the server's own span");

  const unsampled = await lineOf(child, "line-2");
  assert.match(String(unsampled["trace_id"]), /^[0-9a-f]{32}$/, "an unsampled call's line still has a trace id");
  assert.notEqual(unsampled["trace_id"], TRACE_ID);
});

test("a stream its deadline ends logs DEADLINE_EXCEEDED once, with its span's trace", async () => {
  child ??= await spawnMain({ SHOP_DB_PATH: `${dir.dir}/line.db` });
  const running = child;
  const client = new InventoryServiceClient(running.addr, credentials.createInsecure());
  try {
    const stream = client.watchStock({ skus: [SKU] }, traced("watch-1"), { deadline: Date.now() + 500 });
    await new Promise<void>((resolve) => {
      stream.on("error", () => {
        resolve();
      });
      stream.on("end", resolve);
      stream.on("data", () => undefined);
    });
  } finally {
    client.close();
  }
  const line = await lineOf(running, "watch-1");
  assert.equal(line["method"], "/shop.inventory.v1.InventoryService/WatchStock");
  assert.equal(line["code"], "DEADLINE_EXCEEDED");
  assert.equal(line["trace_id"], TRACE_ID, "the cancelled call's line carries its trace");
  assert.equal(running.lines.filter((l) => l["request_id"] === "watch-1").length, 1, "one line per call");
});
