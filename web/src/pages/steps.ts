// The saga's steps as a list, on the checkout and on an order's page.
import type { Order } from "../../gen/shop/orders/v1/order_service_pb.js";
import { h } from "../dom.js";
import { sagaSteps } from "../format.js";

export function stepsList(order: Order): HTMLElement {
  return h(
    "ol",
    { class: "steps", "aria-label": "Saga steps" },
    sagaSteps(order).map((s) =>
      h(
        "li",
        { class: `step step-${s.status.replace(" ", "-")}${s.compensation ? " compensation" : ""}` },
        h("span", { class: "step-label" }, s.label),
        h("span", { class: "step-status" }, s.status),
      ),
    ),
  );
}
