// One product: GetProduct, with live stock. An unknown id shows the service's NOT_FOUND message.
import { CALL_TIMEOUT_MS, catalog } from "../api.js";
import { alertBox, h, show } from "../dom.js";
import { explain } from "../errors.js";
import { formatMoney } from "../format.js";
import { addToCartButton } from "./catalog.js";
import { stockBadge, streamStatus, watchStock } from "./live-stock.js";

export async function productPage(view: HTMLElement, id: string, signal: AbortSignal): Promise<void> {
  show(view, h("p", { role: "status" }, "Loading the product…"));
  let reply;
  try {
    reply = await catalog.getProduct({ productId: id }, { signal, timeoutMs: CALL_TIMEOUT_MS });
  } catch (err) {
    if (signal.aborted) return;
    const problem = explain(err);
    show(
      view,
      h("h1", {}, problem.code === "NOT_FOUND" ? "Product not found" : "The product could not be loaded"),
      alertBox(problem.message),
      h("p", {}, h("a", { href: "#/" }, "Back to the catalog")),
    );
    return;
  }
  const product = reply.product!;
  const quantity = h("input", { id: "quantity", type: "number", min: 1, max: 999, value: 1, inputmode: "numeric" });
  show(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Catalog"), " / ", product.name),
    h(
      "article",
      { class: "product" },
      h("h1", {}, product.name),
      h("p", { class: "price price-large" }, formatMoney(product.price)),
      h("p", {}, product.description),
      stockBadge(product.id),
      streamStatus(),
      h("p", { class: "tags" }, product.tags.map((t) => h("a", { href: `#/?tag=${encodeURIComponent(t)}`, class: "tag" }, t))),
      h(
        "div",
        { class: "buy" },
        h("label", { for: "quantity" }, "Quantity"),
        quantity,
        addToCartButton(product, () => Math.max(1, Number.parseInt(quantity.value, 10) || 1)),
      ),
      h("p", { class: "muted" }, `Product id ${product.id}`),
    ),
  );
  watchStock(view, [product.id], signal);
}
