// Orders: ListOrders for this customer, and one order with GetOrder.
import type { Order } from "../../gen/shop/orders/v1/order_service_pb.js";
import { CALL_TIMEOUT_MS, orders } from "../api.js";
import { alertBox, h, show } from "../dom.js";
import { explain } from "../errors.js";
import { failureLabel, formatMoney, stateLabel } from "../format.js";
import { customerId } from "../shop.js";
import { stepsList } from "./steps.js";

const PAGE_SIZE = 10;
const tokens: string[] = [""];
let tokensOf = "";

export async function ordersPage(view: HTMLElement, params: URLSearchParams, signal: AbortSignal): Promise<void> {
  const customer = customerId();
  let page = Number.parseInt(params.get("page") ?? "1", 10);
  if (customer !== tokensOf) {
    // Another customer signed in: their pages start again.
    tokens.splice(1);
    tokensOf = customer;
  }
  if (!(page >= 1 && page <= tokens.length)) page = 1;
  if (!customer) {
    // Every OrderService call needs a customer token (Envoy's jwt_authn).
    show(view, h("h1", {}, "Your orders"), h("p", {}, "Sign in to see your orders. ",
      h("a", { href: "#/sign-in?next=%23%2Forders" }, "Development sign-in")));
    return;
  }
  const form = h("p", { class: "muted" }, `Signed in as ${customer}. `, h("a", { href: "#/sign-in?next=%23%2Forders" }, "Sign in as someone else"));
  show(view, h("h1", {}, "Your orders"), form, h("p", { role: "status" }, "Loading orders…"));
  let list: Order[];
  let next: string;
  try {
    const reply = await orders.listOrders(
      { customerId: customer, pageSize: PAGE_SIZE, pageToken: tokens[page - 1] },
      { signal, timeoutMs: CALL_TIMEOUT_MS },
    );
    list = reply.orders;
    next = reply.nextPageToken;
  } catch (err) {
    if (signal.aborted) return;
    show(view, h("h1", {}, "Your orders"), form, alertBox(`Orders could not be loaded: ${explain(err).message}`));
    return;
  }
  if (next) tokens[page] = next;
  const table = h(
    "table",
    { class: "lines" },
    h("caption", { class: "visually-hidden" }, `Orders of ${customer}, newest first`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Order"), h("th", { scope: "col" }, "Placed"),
      h("th", { scope: "col" }, "State"), h("th", { scope: "col", class: "num" }, "Total"))),
    h("tbody", {}, list.map((o) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/orders/${encodeURIComponent(o.orderId)}` }, o.orderId)),
      h("td", {}, o.createTime ? new Date(Number(o.createTime.seconds) * 1000).toLocaleString() : ""),
      h("td", {}, stateLabel(o.state)),
      h("td", { class: "num" }, formatMoney(o.total))))),
  );
  show(
    view,
    h("h1", {}, "Your orders"),
    form,
    list.length ? table : h("p", {}, `No orders for ${customer} yet.`),
    h("nav", { class: "pager", "aria-label": "Pages" },
      page > 1 ? h("a", { href: `#/orders?page=${page - 1}` }, "← Newer orders") : null,
      next ? h("a", { href: `#/orders?page=${page + 1}` }, "Older orders →") : null),
  );
}

export async function orderPage(view: HTMLElement, id: string, signal: AbortSignal): Promise<void> {
  show(view, h("p", { role: "status" }, "Loading the order…"));
  let order: Order;
  try {
    order = (await orders.getOrder({ orderId: id }, { signal, timeoutMs: CALL_TIMEOUT_MS })).order!;
  } catch (err) {
    if (signal.aborted) return;
    show(view, h("h1", {}, "Order not available"), alertBox(explain(err).message),
      h("p", {}, h("a", { href: "#/orders" }, "Your orders")));
    return;
  }
  show(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/orders" }, "Your orders"), " / ", order.orderId),
    h("h1", {}, `Order ${order.orderId}`),
    h("dl", { class: "facts" },
      h("dt", {}, "State"), h("dd", { "data-testid": "order-state" }, stateLabel(order.state)),
      order.failureReason ? [h("dt", {}, "Why it failed"), h("dd", {}, `${failureLabel(order.failureReason)}: ${order.failureMessage}`)] : [],
      h("dt", {}, "Customer"), h("dd", {}, order.customerId),
      h("dt", {}, "Total"), h("dd", {}, formatMoney(order.total)),
      h("dt", {}, "Request id"), h("dd", {}, order.requestId),
      order.paymentId ? [h("dt", {}, "Payment"), h("dd", {}, order.paymentId)] : [],
      order.reservationId ? [h("dt", {}, "Reservation"), h("dd", {}, order.reservationId)] : []),
    h("h2", {}, "Lines"),
    h("ul", {}, order.lines.map((l) => h("li", {}, `${l.quantity} × ${l.productId} `, h("span", { class: "num" }, formatMoney(l.lineTotal))))),
    h("h2", {}, "Saga"),
    stepsList(order),
  );
}
