// What the page shows of the API's values. Money is formatted from its exact
// decimal string: the browser never computes with prices.
import type { Money } from "../gen/google/type/money_pb.js";
import { OrderFailureReason, OrderState, type Order } from "../gen/shop/orders/v1/order_service_pb.js";

/** google.type.Money as "€24.90", from units and nanos without floating point. */
export function formatMoney(money: Money | undefined, locale = "en-IE"): string {
  if (!money || !money.currencyCode) return "";
  const negative = money.units < 0n || money.nanos < 0;
  const units = (money.units < 0n ? -money.units : money.units).toString();
  const nanos = Math.abs(money.nanos).toString().padStart(9, "0");
  const decimal = `${negative ? "-" : ""}${units}.${nanos}` as Intl.StringNumericLiteral;
  return new Intl.NumberFormat(locale, { style: "currency", currency: money.currencyCode }).format(decimal);
}

/** OrderState.CONFIRMED as "Confirmed". */
export function stateLabel(state: OrderState): string {
  const name = OrderState[state] ?? "UNSPECIFIED";
  return name.charAt(0) + name.slice(1).toLowerCase();
}

const FAILURES: Record<OrderFailureReason, string> = {
  [OrderFailureReason.UNSPECIFIED]: "",
  [OrderFailureReason.UNKNOWN_PRODUCT]: "a product is not in the catalog",
  [OrderFailureReason.OUT_OF_STOCK]: "not enough stock",
  [OrderFailureReason.CARD_DECLINED]: "the card was declined",
  [OrderFailureReason.DEPENDENCY_UNAVAILABLE]: "a service the order needs was unavailable",
  [OrderFailureReason.DEADLINE_EXCEEDED]: "the order took too long",
  [OrderFailureReason.INTERNAL]: "an internal error",
};

export function failureLabel(reason: OrderFailureReason): string {
  return FAILURES[reason] ?? OrderFailureReason[reason];
}

export type StepStatus = "done" | "in progress" | "failed" | "skipped" | "waiting";

export interface Step {
  readonly label: string;
  readonly status: StepStatus;
  /** Compensations undo an earlier step after a failure. */
  readonly compensation: boolean;
}

export function isTerminal(order: Order): boolean {
  return order.state === OrderState.CONFIRMED || order.state === OrderState.FAILED;
}

/**
 * The saga's steps as far as this order got, compensations included. States
 * only move forward, and each step leaves its mark on the order (a total, a
 * reservation id, a payment id), so the latest order says which steps ran.
 */
export function sagaSteps(order: Order): Step[] {
  const failed = order.state === OrderState.FAILED || order.state === OrderState.COMPENSATING;
  const reached = [
    true,
    order.state >= OrderState.PRICED || order.total !== undefined,
    order.reservationId !== "",
    order.paymentId !== "",
    order.state === OrderState.CONFIRMED,
  ];
  const labels = [
    "Order recorded",
    "Priced by the catalog",
    "Stock reserved by the inventory",
    "Card charged by payments",
    "Stock committed: order confirmed",
  ];
  const firstMissing = reached.indexOf(false);
  const steps: Step[] = labels.map((label, i) => {
    let status: StepStatus;
    if (reached[i]) status = "done";
    else if (i === firstMissing) status = failed ? "failed" : "in progress";
    else status = failed ? "skipped" : "waiting";
    return { label, status, compensation: false };
  });
  if (failed) {
    const undo: StepStatus = order.state === OrderState.FAILED ? "done" : "in progress";
    if (order.paymentId) steps.push({ label: "Charge refunded", status: undo, compensation: true });
    if (order.reservationId) steps.push({ label: "Reservation released", status: undo, compensation: true });
  }
  return steps;
}
