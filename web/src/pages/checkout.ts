// Checkout: PlaceOrder, with the saga followed live on WatchOrder.
//
// PlaceOrder answers only once the saga is over, so while it runs the page
// finds the new order (ListOrders for this customer, matched on the
// request_id it sent) and follows it with WatchOrder, step by step.
import type { Order, PlaceOrderResponse } from "../../gen/shop/orders/v1/order_service_pb.js";
import { OrderState } from "../../gen/shop/orders/v1/order_service_pb.js";
import { CALL_TIMEOUT_MS, PLACE_ORDER_TIMEOUT_MS, orders } from "../api.js";
import { alertBox, h, show } from "../dom.js";
import { explain } from "../errors.js";
import { failureLabel, formatMoney, isTerminal, stateLabel } from "../format.js";
import { attempts, cart, customerId } from "../shop.js";
import { isProblem, priceCart } from "./cart.js";
import { stepsList } from "./steps.js";

/** The payment service's test tokens (protos/shop/payments/v1). */
const TEST_CARDS: readonly [string, string][] = [
  ["tok_success", "Test card: the charge succeeds"],
  ["tok_declined", "Test card: the charge is declined"],
  ["tok_flaky", "Test card: the card network fails once, then succeeds"],
  ["tok_unavailable", "Test card: the card network is down"],
];

export async function checkoutPage(view: HTMLElement, signal: AbortSignal): Promise<void> {
  const items = cart.items();
  if (items.size === 0) {
    show(view, h("h1", {}, "Checkout"), h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the catalog")));
    return;
  }
  show(view, h("h1", {}, "Checkout"), h("p", { role: "status" }, "Pricing your cart…"));
  const result = await priceCart(items, signal);
  if (signal.aborted) return;
  if (isProblem(result)) {
    show(view, h("h1", {}, "Checkout"), alertBox(`Your cart could not be priced: ${result.message}`),
      h("p", {}, h("a", { href: "#/cart" }, "Back to your cart")));
    return;
  }
  const { priced, names } = result;
  if (!customerId()) {
    // Every OrderService call needs a customer token (Envoy's jwt_authn).
    show(view, h("h1", {}, "Checkout"), h("p", {}, "Sign in to place an order. ",
      h("a", { href: "#/sign-in?next=%23%2Fcheckout" }, "Development sign-in")));
    return;
  }

  const customer = h("input", { id: "customer", name: "customer", value: customerId(), readonly: true, "aria-describedby": "customer-error customer-help" });
  const card = h("select", { id: "card", name: "card", "aria-describedby": "card-error" },
    TEST_CARDS.map(([token, label]) => h("option", { value: token }, label)));
  const submit = h("button", { type: "submit", class: "primary" }, `Place order: pay ${formatMoney(priced.total)}`);
  const customerError = h("p", { class: "field-error", id: "customer-error" });
  const cardError = h("p", { class: "field-error", id: "card-error" });
  const progress = h("section", { class: "progress", "aria-labelledby": "progress-title", hidden: true });
  const outcome = h("div", { class: "outcome" });
  let busy = false;

  const form = h(
    "form",
    {
      class: "checkout",
      onsubmit: (e: Event) => {
        e.preventDefault();
        // A second click while the first is in flight does nothing; a retry
        // after an error reuses the attempt's request_id (CheckoutAttempts).
        if (busy) return;
        busy = true;
        submit.disabled = true;
        void place().finally(() => {
          busy = false;
          submit.disabled = cart.items().size === 0;
        });
      },
    },
    h("div", { class: "field" }, h("label", { for: "customer" }, "Customer ID"), customer,
      h("p", { class: "muted", id: "customer-help" }, "From your token. ", h("a", { href: "#/sign-in?next=%23%2Fcheckout" }, "Sign in as someone else")),
      customerError),
    h("div", { class: "field" }, h("label", { for: "card" }, "Card"), card, cardError),
    submit,
  );

  async function place(): Promise<void> {
    customerError.textContent = "";
    cardError.textContent = "";
    customer.removeAttribute("aria-invalid");
    card.removeAttribute("aria-invalid");
    show(outcome);
    const input = { customerId: customer.value.trim(), paymentToken: card.value, items };
    const requestId = attempts.requestIdFor(input);
    progress.hidden = false;
    renderProgress(progress, undefined, []);

    const placing = orders.placeOrder(
      {
        requestId,
        customerId: input.customerId,
        paymentToken: input.paymentToken,
        lines: [...items].map(([productId, quantity]) => ({ productId, quantity })),
      },
      { timeoutMs: PLACE_ORDER_TIMEOUT_MS },
    );
    const seen: OrderState[] = [];
    const watching = followOrder(requestId, input.customerId, placing, (order) => {
      if (seen.at(-1) !== order.state) seen.push(order.state);
      renderProgress(progress, order, seen);
    });
    let order: Order | undefined;
    try {
      order = (await placing).order;
      attempts.answered();
    } catch (err) {
      const problem = explain(err);
      for (const [field, description] of problem.fields) {
        if (field === "customer_id") {
          customerError.textContent = description;
          customer.setAttribute("aria-invalid", "true");
        } else if (field === "payment_token") {
          cardError.textContent = description;
          card.setAttribute("aria-invalid", "true");
        }
      }
      const others = [...problem.fields].filter(([f]) => f !== "customer_id" && f !== "payment_token");
      show(
        outcome,
        alertBox(`The order was not placed: ${problem.message}`),
        others.length ? h("ul", { class: "field-errors" }, others.map(([f, d]) => h("li", {}, `${f}: ${d}`))) : null,
        problem.fields.size === 0 ? h("p", {}, "Placing it again is safe: it is the same order request, so the shop will not take it twice.") : null,
      );
      progress.hidden = problem.fields.size > 0;
      await watching;
      return;
    }
    await watching;
    if (!order) return;
    renderProgress(progress, order, seen.at(-1) === order.state ? seen : [...seen, order.state]);
    if (order.state === OrderState.CONFIRMED) {
      cart.clear();
      show(outcome, h("p", { class: "alert alert-success", role: "status" },
        `Order confirmed: ${formatMoney(order.total)} charged. `,
        h("a", { href: `#/orders/${encodeURIComponent(order.orderId)}` }, "View the order")));
    } else {
      show(outcome, alertBox(`The order failed: ${failureLabel(order.failureReason)}.`),
        h("p", { class: "muted" }, `The shop said: ${order.failureMessage}`),
        h("p", {}, h("a", { href: `#/orders/${encodeURIComponent(order.orderId)}` }, "View the order")));
    }
  }

  show(
    view,
    h("h1", {}, "Checkout"),
    h("section", { "aria-labelledby": "summary-title", class: "summary" },
      h("h2", { id: "summary-title" }, "Your order"),
      h("ul", {}, priced.lines.map((l) => h("li", {}, `${l.quantity} × ${names.get(l.productId) ?? l.productId}`,
        h("span", { class: "num" }, formatMoney(l.lineTotal))))),
      h("p", { class: "total" }, "Total ", h("strong", { "data-testid": "checkout-total" }, formatMoney(priced.total)))),
    form,
    progress,
    outcome,
  );
}

/** Finds the order PlaceOrder is running and follows it until it ends. */
async function followOrder(
  requestId: string,
  customer: string,
  placing: Promise<PlaceOrderResponse>,
  onOrder: (order: Order) => void,
): Promise<void> {
  let settled = false;
  let placed: Order | undefined;
  const done = placing.then((r) => { placed = r.order; }, () => undefined).finally(() => { settled = true; });
  let orderId: string | undefined;
  while (!orderId && !settled) {
    try {
      const page = await orders.listOrders({ customerId: customer, pageSize: 5 }, { timeoutMs: CALL_TIMEOUT_MS });
      orderId = page.orders.find((o) => o.requestId === requestId)?.orderId;
    } catch {
      // PlaceOrder's own answer will say what went wrong.
    }
    if (!orderId) await Promise.race([done, new Promise((r) => setTimeout(r, 200))]);
  }
  await done;
  orderId ??= placed?.orderId;
  if (!orderId) return;
  try {
    for await (const { order } of orders.watchOrder({ orderId }, { timeoutMs: PLACE_ORDER_TIMEOUT_MS })) {
      if (order) onOrder(order);
      if (order && isTerminal(order)) break;
    }
  } catch {
    // The stream dropped: PlaceOrder's answer has the final state.
  }
}

function renderProgress(section: HTMLElement, order: Order | undefined, seen: OrderState[]): void {
  show(
    section,
    h("h2", { id: "progress-title" }, "Order progress"),
    order
      ? stepsList(order)
      : h("p", { role: "status" }, "Placing your order…"),
    seen.length
      ? h("p", { class: "muted", "data-testid": "states-seen" }, `Live from WatchOrder: ${seen.map(stateLabel).join(" → ")}`)
      : null,
  );
}
