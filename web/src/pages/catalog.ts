// The catalog: ListProducts a page at a time, optionally by tag, with live stock.
import type { Product } from "../../gen/shop/catalog/v1/catalog_service_pb.js";
import { CALL_TIMEOUT_MS, catalog } from "../api.js";
import { alertBox, h, show } from "../dom.js";
import { explain } from "../errors.js";
import { formatMoney } from "../format.js";
import { cart } from "../shop.js";
import { stockBadge, streamStatus, watchStock } from "./live-stock.js";

const PAGE_SIZE = 12;
// The token of each page reached so far, per tag: page N+1 needs page N's
// next_page_token, so "Previous" walks back through these.
const tokens = new Map<string, string[]>();
const tagsSeen = new Set<string>();

export async function catalogPage(view: HTMLElement, params: URLSearchParams, signal: AbortSignal): Promise<void> {
  const tag = (params.get("tag") ?? "").trim().toLowerCase();
  const known = tokens.get(tag) ?? [""];
  tokens.set(tag, known);
  let page = Number.parseInt(params.get("page") ?? "1", 10);
  if (!(page >= 1 && page <= known.length)) page = 1;

  const heading = h("h1", {}, tag ? `Products tagged “${tag}”` : "All products");
  show(view, heading, filterForm(tag), h("p", { role: "status" }, "Loading products…"));
  let products: Product[];
  let next: string;
  try {
    const reply = await catalog.listProducts(
      { pageSize: PAGE_SIZE, pageToken: known[page - 1], tag },
      { signal, timeoutMs: CALL_TIMEOUT_MS },
    );
    products = reply.products;
    next = reply.nextPageToken;
  } catch (err) {
    if (signal.aborted) return;
    show(view, heading, filterForm(tag), alertBox(`The catalog could not be loaded: ${explain(err).message}`));
    return;
  }
  if (next) known[page] = next;
  for (const p of products) p.tags.forEach((t) => tagsSeen.add(t));

  const grid = h("ul", { class: "grid", "aria-label": "Products" }, products.map(productCard));
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    page > 1 ? h("a", { href: link(tag, page - 1), rel: "prev" }, "← Previous page") : null,
    h("span", { "aria-current": "page" }, `Page ${page}`),
    next ? h("a", { href: link(tag, page + 1), rel: "next" }, "Next page →") : null,
  );
  show(
    view,
    heading,
    filterForm(tag),
    streamStatus(),
    products.length ? grid : alertBox(`No product is tagged “${tag}”.`, "info"),
    pager,
  );
  watchStock(
    view,
    products.map((p) => p.id),
    signal,
  );
}

function link(tag: string, page: number): string {
  const q = new URLSearchParams();
  if (tag) q.set("tag", tag);
  if (page > 1) q.set("page", String(page));
  const s = q.toString();
  return s ? `#/?${s}` : "#/";
}

function filterForm(tag: string): HTMLElement {
  const input = h("input", { id: "tag-filter", name: "tag", list: "known-tags", value: tag, autocomplete: "off" });
  return h(
    "form",
    {
      class: "filter",
      role: "search",
      onsubmit: (e: Event) => {
        e.preventDefault();
        location.hash = link(input.value.trim().toLowerCase(), 1);
      },
    },
    h("label", { for: "tag-filter" }, "Filter by tag"),
    input,
    h("datalist", { id: "known-tags" }, [...tagsSeen].sort().map((t) => h("option", { value: t }))),
    h("button", { type: "submit" }, "Filter"),
    tag ? h("a", { href: "#/" }, "Show all") : null,
  );
}

export function addToCartButton(product: Product, quantity: () => number = () => 1): HTMLElement {
  return h(
    "button",
    {
      type: "button",
      class: "primary",
      "aria-label": `Add ${product.name} to cart`,
      onclick: () => {
        const n = quantity();
        cart.add(product.id, n);
        const note = document.getElementById("announce");
        if (note) note.textContent = `Added ${n} × ${product.name} to your cart.`;
      },
    },
    "Add to cart",
  );
}

function productCard(product: Product): HTMLElement {
  return h(
    "li",
    { class: "card" },
    h("h2", {}, h("a", { href: `#/product/${encodeURIComponent(product.id)}` }, product.name)),
    h("p", { class: "price" }, formatMoney(product.price)),
    stockBadge(product.id),
    h(
      "p",
      { class: "tags" },
      product.tags.map((t) => h("a", { href: link(t, 1), class: "tag", "aria-label": `Products tagged ${t}` }, t)),
    ),
    addToCartButton(product),
  );
}
