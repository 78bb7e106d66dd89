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

test("each call carries a new sampled W3C traceparent, and its row knows the trace id", async () => {
  const { newTraceparent } = await import("../src/calls.js");
  let n = 0;
  // A fake source of randomness: all zeros first (invalid ids, drawn again), then counting bytes.
  const random = (bytes: Uint8Array): Uint8Array => {
    n++;
    return n <= 1 ? bytes.fill(0) : bytes.map((_, i) => i + n);
  };
  const trace = newTraceparent(random);
  assert.match(trace.header, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.equal(trace.header.split("-")[1], trace.traceId);
  assert.notEqual(trace.traceId, "0".repeat(32));
  assert.notEqual(newTraceparent().traceId, newTraceparent().traceId);

  const log = new CallLog(10);
  const header = new Headers();
  const req = { service: { name: "CatalogService" }, method: { name: "GetProduct", methodKind: "unary" }, stream: false, header };
  const next = async () => ({ stream: false, header: new Headers({ "x-trace-id": header.get("traceparent")!.split("-")[1] }) });
  await log.interceptor()(next as never)(req as never);
  const call = log.list()[0];
  assert.match(header.get("traceparent")!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.equal(call.traceId, header.get("traceparent")!.split("-")[1]);

  // A caller's own traceparent is kept.
  const own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const kept = new Headers({ traceparent: own });
  await log.interceptor()((async () => ({ stream: false, header: new Headers() })) as never)({ ...req, header: kept } as never);
  assert.equal(kept.get("traceparent"), own);
});
