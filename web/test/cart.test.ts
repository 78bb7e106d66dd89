import assert from "node:assert/strict";
import { test } from "node:test";

import { Cart, CheckoutAttempts, type KeyValueStore } from "../src/cart.js";

function memory(): KeyValueStore & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
}

test("the cart keeps ids and quantities, and survives a reload", () => {
  const store = memory();
  const cart = new Cart(store);
  cart.add("sku-a");
  cart.add("sku-a", 2);
  cart.add("sku-b");
  cart.set("sku-b", 5);
  assert.deepEqual([...new Cart(store).items()], [["sku-a", 3], ["sku-b", 5]]);
  assert.equal(cart.count(), 8);
  cart.remove("sku-a");
  assert.deepEqual([...cart.items()], [["sku-b", 5]]);
  cart.clear();
  assert.equal(cart.items().size, 0);
});

test("a damaged stored cart reads as empty", () => {
  const store = memory();
  store.setItem("shop.cart", "{not json");
  assert.equal(new Cart(store).items().size, 0);
  store.setItem("shop.cart", JSON.stringify([["sku-a", 1.5], ["sku-b", 2], "x"]));
  assert.deepEqual([...new Cart(store).items()], [["sku-b", 2]]);
});

test("the cart tells its listeners of every change", () => {
  const cart = new Cart(memory());
  const counts: number[] = [];
  cart.subscribe((items) => counts.push(items.size));
  cart.add("a");
  cart.add("b");
  cart.remove("a");
  assert.deepEqual(counts, [1, 2, 1]);
});

test("one checkout attempt keeps one request_id until the shop answers", () => {
  let n = 0;
  const attempts = new CheckoutAttempts(() => `id-${++n}`);
  const input = { customerId: "ada", paymentToken: "tok_success", items: new Map([["sku-a", 1]]) };
  const first = attempts.requestIdFor(input);
  // A double click, or a retry after the connection dropped: the same id.
  assert.equal(attempts.requestIdFor({ ...input, items: new Map([["sku-a", 1]]) }), first);
  // Another card is another attempt.
  const other = attempts.requestIdFor({ ...input, paymentToken: "tok_declined" });
  assert.notEqual(other, first);
  // Once the shop answered with an order, the next checkout is a new attempt.
  attempts.answered();
  assert.notEqual(attempts.requestIdFor({ ...input, paymentToken: "tok_declined" }), other);
  assert.match(first, /^web-id-1$/);
});
