// The cart: priced by the catalog (PriceCart) every time it is shown or changed.
import type { PriceCartResponse, Product } from "../../gen/shop/catalog/v1/catalog_service_pb.js";
import { CALL_TIMEOUT_MS, catalog } from "../api.js";
import type { CartItems } from "../cart.js";
import { alertBox, h, show } from "../dom.js";
import { explain, type Problem } from "../errors.js";
import { formatMoney } from "../format.js";
import { cart } from "../shop.js";

export interface PricedCart {
  readonly priced: PriceCartResponse;
  readonly names: ReadonlyMap<string, string>;
}

/** Prices the cart and fetches its product names, or says why it cannot. */
export async function priceCart(items: CartItems, signal: AbortSignal): Promise<PricedCart | Problem> {
  const ids = [...items.keys()];
  try {
    const [priced, products] = await Promise.all([
      catalog.priceCart(
        { items: ids.map((productId) => ({ productId, quantity: items.get(productId)! })) },
        { signal, timeoutMs: CALL_TIMEOUT_MS },
      ),
      ids.length
        ? catalog.batchGetProducts({ productIds: ids }, { signal, timeoutMs: CALL_TIMEOUT_MS }).then((r) => r.products)
        : Promise.resolve([] as Product[]),
    ]);
    return { priced, names: new Map(products.map((p) => [p.id, p.name])) };
  } catch (err) {
    return explain(err);
  }
}

export function isProblem(x: PricedCart | Problem): x is Problem {
  return "code" in x;
}

export async function cartPage(view: HTMLElement, signal: AbortSignal): Promise<void> {
  const items = cart.items();
  if (items.size === 0) {
    show(view, h("h1", {}, "Your cart"), h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the catalog")));
    return;
  }
  show(view, h("h1", {}, "Your cart"), h("p", { role: "status" }, "Pricing your cart…"));
  const result = await priceCart(items, signal);
  if (signal.aborted) return;
  if (isProblem(result) && result.fields.size === 0) {
    show(
      view,
      h("h1", {}, "Your cart"),
      alertBox(`Your cart could not be priced: ${result.message}`),
      h("button", { type: "button", onclick: () => { cart.clear(); } }, "Empty the cart"),
    );
    return;
  }
  // Bad quantities come back as field violations on items[i].quantity: shown on their line.
  const problem = isProblem(result) ? result : undefined;
  const priced = isProblem(result) ? undefined : result;
  const ids = priced ? priced.priced.lines.map((l) => l.productId) : [...items.keys()];
  const rows = ids.map((id) => {
    const index = [...items.keys()].indexOf(id);
    const line = priced?.priced.lines.find((l) => l.productId === id);
    const name = priced?.names.get(id) ?? id;
    const error = problem?.fields.get(`items[${index}].quantity`);
    const inputId = `qty-${index}`;
    const input = h("input", {
      id: inputId,
      type: "number",
      min: 1,
      max: 999,
      value: items.get(id) ?? 1,
      inputmode: "numeric",
      "aria-invalid": error ? "true" : undefined,
      "aria-describedby": error ? `${inputId}-error` : undefined,
      onchange: () => cart.set(id, Number.parseInt(input.value, 10) || 0),
    });
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: `#/product/${encodeURIComponent(id)}` }, name)),
      h(
        "td",
        {},
        h("label", { for: inputId, class: "visually-hidden" }, `Quantity of ${name}`),
        input,
        error ? h("p", { class: "field-error", id: `${inputId}-error` }, error) : null,
      ),
      h("td", { class: "num" }, formatMoney(line?.unitPrice)),
      h("td", { class: "num" }, formatMoney(line?.lineTotal)),
      h("td", {}, h("button", { type: "button", onclick: () => cart.remove(id), "aria-label": `Remove ${name}` }, "Remove")),
    );
  });
  show(
    view,
    h("h1", {}, "Your cart"),
    problem ? alertBox(problem.message) : null,
    h(
      "table",
      { class: "lines" },
      h("caption", { class: "visually-hidden" }, "Cart lines, priced by the catalog"),
      h(
        "thead",
        {},
        h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col" }, "Quantity"),
          h("th", { scope: "col", class: "num" }, "Unit price"), h("th", { scope: "col", class: "num" }, "Total"),
          h("td", {})),
      ),
      h("tbody", {}, rows),
      priced
        ? h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: 3 }, `Total (${priced.priced.itemCount} item${priced.priced.itemCount === 1 ? "" : "s"})`),
            h("td", { class: "num total", "data-testid": "cart-total" }, formatMoney(priced.priced.total)), h("td", {})))
        : null,
    ),
    priced ? h("p", { class: "actions" }, h("a", { href: "#/checkout", class: "button primary" }, "Proceed to checkout")) : null,
  );
}
