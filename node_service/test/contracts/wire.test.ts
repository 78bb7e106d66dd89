// One message of every proto package survives the wire format: encoded and
// decoded with the generated ts-proto codecs, it comes back deep-equal. The
// same test, by the same name, is go_service/internal/contracts/wire_test.go
// and python_services/tests/contracts/test_wire.py.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Product } from "../../gen/shop/catalog/v1/catalog_service.js";
import { Reservation, ReservationState } from "../../gen/shop/inventory/v1/inventory_service.js";
import { Order, OrderFailureReason, OrderState } from "../../gen/shop/orders/v1/order_service.js";
import { Payment, PaymentState } from "../../gen/shop/payments/v1/payment_service.js";

const price = { currencyCode: "EUR", units: 24, nanos: 900_000_000 };
const time = { seconds: 1_790_000_000, nanos: 123_000_000 };

interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

function roundTrip<T>(codec: Codec<T>, message: T): void {
  const bytes = codec.encode(message).finish();
  assert.ok(bytes.length > 0);
  assert.deepEqual(codec.decode(bytes), message);
}

describe("one message of every proto package survives the wire format", () => {
  test("shop.catalog.v1.Product", () => {
    roundTrip(Product, {
      id: "sku-espresso-beans-1kg",
      name: "Espresso beans, 1 kg",
      description: "Dark-roasted.",
      price,
      tags: ["beans", "coffee"],
      createTime: time,
    });
  });

  test("shop.inventory.v1.Reservation", () => {
    roundTrip(Reservation, {
      reservationId: "8d5e0f0e-0000-4000-8000-000000000001",
      requestId: "order-1",
      lines: [
        { sku: "sku-a", quantity: 2 },
        { sku: "sku-b", quantity: 10_000 },
      ],
      state: ReservationState.RESERVATION_STATE_COMMITTED,
      createTime: time,
      expireTime: { seconds: time.seconds + 900, nanos: 0 },
    });
  });

  test("shop.payments.v1.Payment", () => {
    roundTrip(Payment, {
      paymentId: "pay-1",
      requestId: "order-1-charge",
      reference: "order-1",
      amount: price,
      state: PaymentState.PAYMENT_STATE_REFUNDED,
      createTime: time,
      refundTime: { seconds: time.seconds + 60, nanos: 1 },
    });
  });

  test("shop.orders.v1.Order", () => {
    roundTrip(Order, {
      orderId: "order-1",
      requestId: "place-1",
      customerId: "customer-1",
      lines: [{ productId: "sku-a", quantity: 2, unitPrice: price, lineTotal: { ...price, units: 49, nanos: 800_000_000 } }],
      total: { ...price, units: 49, nanos: 800_000_000 },
      state: OrderState.ORDER_STATE_RESERVED,
      failureReason: OrderFailureReason.ORDER_FAILURE_REASON_OUT_OF_STOCK,
      failureMessage: "Not enough stock.",
      reservationId: "res-1",
      paymentId: "pay-1",
      createTime: time,
      updateTime: time,
    });
  });
});
