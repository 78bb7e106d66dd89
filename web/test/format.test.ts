import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { MoneySchema } from "../gen/google/type/money_pb.js";
import { OrderFailureReason, OrderSchema, OrderState } from "../gen/shop/orders/v1/order_service_pb.js";
import { formatMoney, sagaSteps, stateLabel } from "../src/format.js";

const eur = (units: bigint, nanos: number) => create(MoneySchema, { currencyCode: "EUR", units, nanos });

test("money is formatted from its exact decimal, rounded to the currency's cents", () => {
  assert.equal(formatMoney(eur(24n, 900_000_000)), "€24.90");
  assert.equal(formatMoney(eur(0n, 0)), "€0.00");
  assert.equal(formatMoney(eur(1234567n, 50_000_000)), "€1,234,567.05");
  // 0.1 + 0.2 in floating point would show 0.30000000000000004 somewhere; here there is no arithmetic.
  assert.equal(formatMoney(eur(0n, 300_000_000)), "€0.30");
  // Beyond 2^53 a float would lose the last units.
  assert.equal(formatMoney(eur(9_007_199_254_740_993n, 0)), "€9,007,199,254,740,993.00");
  assert.equal(formatMoney(eur(-3n, -500_000_000)), "-€3.50");
  assert.equal(formatMoney(undefined), "");
});

test("order states read as words", () => {
  assert.equal(stateLabel(OrderState.CONFIRMED), "Confirmed");
  assert.equal(stateLabel(OrderState.COMPENSATING), "Compensating");
});

const order = (fields: Parameters<typeof create<typeof OrderSchema>>[1]) => create(OrderSchema, fields);

test("a confirmed order shows every step done and no compensation", () => {
  const steps = sagaSteps(order({ state: OrderState.CONFIRMED, total: eur(5n, 0), reservationId: "res-1", paymentId: "pay-1" }));
  assert.deepEqual(steps.map((s) => s.status), ["done", "done", "done", "done", "done"]);
  assert.ok(steps.every((s) => !s.compensation));
});

test("an order in flight shows the step it is on", () => {
  const steps = sagaSteps(order({ state: OrderState.RESERVED, total: eur(5n, 0), reservationId: "res-1" }));
  assert.deepEqual(steps.map((s) => s.status), ["done", "done", "done", "in progress", "waiting"]);
});

test("a declined card fails the charge and releases the reservation", () => {
  const steps = sagaSteps(order({
    state: OrderState.FAILED,
    failureReason: OrderFailureReason.CARD_DECLINED,
    total: eur(5n, 0),
    reservationId: "res-1",
  }));
  assert.deepEqual(
    steps.map((s) => `${s.label}: ${s.status}`),
    [
      "Order recorded: done",
      "Priced by the catalog: done",
      "Stock reserved by the inventory: done",
      "Card charged by payments: failed",
      "Stock committed: order confirmed: skipped",
      "Reservation released: done",
    ],
  );
});

test("a charge taken before a failure is refunded, and shown in progress while compensating", () => {
  const steps = sagaSteps(order({ state: OrderState.COMPENSATING, total: eur(5n, 0), reservationId: "r", paymentId: "p" }));
  const undo = steps.filter((s) => s.compensation);
  assert.deepEqual(undo.map((s) => `${s.label}: ${s.status}`), ["Charge refunded: in progress", "Reservation released: in progress"]);
});
