import assert from "node:assert/strict";
import { test } from "node:test";

import { follow, type StreamState } from "../src/stock.js";

test("a dropped stream is opened again and its messages keep coming", async () => {
  const controller = new AbortController();
  const got: number[] = [];
  const states: StreamState[] = [];
  let opens = 0;
  async function* open(): AsyncIterable<number> {
    opens++;
    if (opens === 2) throw new Error("connection refused"); // the reconnect itself fails once
    yield opens * 10;
    yield opens * 10 + 1;
    if (opens === 3) {
      controller.abort();
      return;
    }
    throw new Error("stream reset"); // the first stream drops after two messages
  }
  await follow({ open, onMessage: (m) => got.push(m), onState: (s) => states.push(s), signal: controller.signal, delays: [1, 2] });
  assert.deepEqual(got, [10, 11, 30, 31]);
  assert.equal(opens, 3);
  assert.deepEqual(states.filter((s, i) => s !== states[i - 1]), ["connecting", "live", "reconnecting", "live"]);
});

test("a stream the server ends normally is reopened too (an idle timeout, a restart)", async () => {
  const controller = new AbortController();
  let opens = 0;
  async function* open(): AsyncIterable<string> {
    opens++;
    yield "level";
    if (opens === 2) controller.abort();
  }
  await follow({ open, onMessage: () => undefined, signal: controller.signal, delays: [1] });
  assert.equal(opens, 2);
});

test("stopping ends the wait between attempts at once", async () => {
  const controller = new AbortController();
  async function* open(): AsyncIterable<string> {
    throw new Error("down");
  }
  const following = follow({ open, onMessage: () => undefined, signal: controller.signal, delays: [60_000] });
  setTimeout(() => controller.abort(), 10);
  await following; // would hang for a minute if the pause ignored the signal
});
