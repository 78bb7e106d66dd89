import assert from "node:assert/strict";
import { test } from "node:test";

import { isOperator, readToken, SessionStore } from "../src/session.js";

const b64url = (value: object | string): string =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
const jwt = (claims: object): string => `${b64url({ alg: "ES256", typ: "JWT" })}.${b64url(claims)}.${b64url("signature")}`;

function memory() {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k: string) => data.get(k) ?? null,
    setItem: (k: string, v: string) => void data.set(k, v),
    removeItem: (k: string) => void data.delete(k),
  };
}

test("a token's customer, scopes and expiry are read from its claims", () => {
  const token = jwt({ sub: "ada", scope: "shop.operator other", exp: 2000 });
  assert.deepEqual(readToken(`  Bearer ${token}\n`), { token, customer: "ada", scopes: ["shop.operator", "other"], expiresAt: 2000 });
  assert.deepEqual(readToken(jwt({ sub: "bob", exp: 2000 })).scopes, []);
});

test("anything that is not a usable token is refused with the reason", () => {
  assert.throws(() => readToken("hello"), /three base64url parts/);
  assert.throws(() => readToken("a.b c.d"), /three base64url parts/);
  assert.throws(() => readToken(`${b64url("{}")}.${b64url("not json")}.x`), /not readable JSON/);
  assert.throws(() => readToken(jwt({ exp: 2000 })), /no `sub`/);
  assert.throws(() => readToken(jwt({ sub: "ada" })), /no `exp`/);
});

test("the store keeps a signed-in token until it expires or the customer signs out", () => {
  let now = 1000;
  const store = memory();
  const sessions = new SessionStore(store, () => now);
  const seen: (string | undefined)[] = [];
  sessions.subscribe((s) => seen.push(s?.customer));
  assert.equal(sessions.current(), undefined);
  assert.throws(() => sessions.signIn(jwt({ sub: "old", exp: 999 })), /expired/);
  assert.equal(store.data.size, 0, "an expired token is never kept");
  sessions.signIn(jwt({ sub: "ada", exp: 2000 }));
  assert.equal(sessions.current()?.customer, "ada");
  now = 2000;
  assert.equal(sessions.current(), undefined, "expired in the meantime");
  now = 1500;
  sessions.signOut();
  assert.equal(sessions.current(), undefined);
  assert.deepEqual(seen, ["ada", undefined]);
});

test("only a token with the operator scope may pin", () => {
  assert.equal(isOperator(readToken(jwt({ sub: "op", scope: "shop.operator", exp: 1 })), "shop.operator"), true);
  assert.equal(isOperator(readToken(jwt({ sub: "ada", scope: "shop.operatorish", exp: 1 })), "shop.operator"), false);
  assert.equal(isOperator(undefined, "shop.operator"), false);
});
