import assert from "node:assert/strict";
import { test } from "node:test";

import { Code } from "@connectrpc/connect";

import { CallLog, statusName } from "../src/calls.js";

test("connect's code names become gRPC's", () => {
  assert.equal(statusName(Code.NotFound), "NOT_FOUND");
  assert.equal(statusName(Code.InvalidArgument), "INVALID_ARGUMENT");
  assert.equal(statusName(Code.Unavailable), "UNAVAILABLE");
  assert.equal(statusName(Code.Canceled), "CANCELLED");
});

test("a call records its latency, request id, the cluster that served it and a trace id", () => {
  let now = 1000;
  const log = new CallLog(10, () => now);
  const seen: number[] = [];
  log.subscribe((calls) => seen.push(calls.length));
  const call = log.start("CatalogService/GetProduct", false);
  assert.equal(call.status, "pending");
  log.headers(call, new Headers({ "x-request-id": "req-1", "x-shop-impl": "catalog-go" }));
  now = 1042.4;
  log.finish(call, "OK");
  assert.deepEqual(
    { status: call.status, latencyMs: call.latencyMs, requestId: call.requestId, servedBy: call.servedBy, traceId: call.traceId },
    { status: "OK", latencyMs: 42, requestId: "req-1", servedBy: "catalog-go", traceId: undefined },
  );
  log.headers(call, new Headers({ "x-trace-id": "4bf92f3577b34da6a3ce929d0e0e4736" }));
  assert.equal(call.traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
  assert.ok(seen.length >= 3, "listeners hear of every change");
});

test("the log keeps the newest calls first, up to its limit", () => {
  const log = new CallLog(3);
  for (const m of ["a", "b", "c", "d"]) log.start(m, false);
  assert.deepEqual(log.list().map((c) => c.method), ["d", "c", "b"]);
});

test("a stream is open after its first message and counts them", () => {
  const log = new CallLog(3);
  const call = log.start("InventoryService/WatchStock", true);
  log.message(call);
  log.message(call);
  assert.equal(call.status, "open");
  assert.equal(call.messages, 2);
});
