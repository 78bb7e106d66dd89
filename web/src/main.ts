// The storefront's entry point: a hash router over the pages, the header's
// cart count and the "under the hood" panel.
import { cartPage } from "./pages/cart.js";
import { catalogPage } from "./pages/catalog.js";
import { checkoutPage } from "./pages/checkout.js";
import { orderPage, ordersPage } from "./pages/orders.js";
import { mountPanel } from "./pages/panel.js";
import { productPage } from "./pages/product.js";
import { signInPage } from "./pages/sign-in.js";
import { session } from "./api.js";
import { cart } from "./shop.js";

const view = document.getElementById("main")!;
let current = new AbortController();

function route(): void {
  // Leaving a page ends its calls and streams.
  current.abort();
  current = new AbortController();
  const { signal } = current;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?", 2);
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  setActiveNav(parts[0] ?? "");
  let page: Promise<void>;
  if (parts[0] === "product" && parts[1]) page = productPage(view, parts[1], signal);
  else if (parts[0] === "cart") page = cartPage(view, signal);
  else if (parts[0] === "checkout") page = checkoutPage(view, signal);
  else if (parts[0] === "orders" && parts[1]) page = orderPage(view, parts[1], signal);
  else if (parts[0] === "sign-in") page = signInPage(view, params);
  else if (parts[0] === "orders") page = ordersPage(view, params, signal);
  else page = catalogPage(view, params, signal);
  void page.then(() => {
    if (!signal.aborted) document.title = `${view.querySelector("h1")?.textContent ?? "Shop"} · Shop`;
  });
}

function setActiveNav(section: string): void {
  const current = section === "" || section === "product" ? "catalog" : section === "checkout" ? "cart" : section;
  for (const link of document.querySelectorAll<HTMLAnchorElement>("[data-nav]")) {
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showCartCount(): void {
  const n = cart.count();
  const el = document.getElementById("cart-count")!;
  el.textContent = String(n);
  el.parentElement!.setAttribute("aria-label", `Cart, ${n} item${n === 1 ? "" : "s"}`);
}

function showSession(): void {
  const link = document.getElementById("session")!;
  const current = session.current();
  link.textContent = current ? current.customer : "Sign in";
  link.setAttribute("aria-label", current ? `Signed in as ${current.customer}` : "Sign in (development)");
}

session.subscribe(showSession);
cart.subscribe(() => {
  showCartCount();
  // The cart page re-prices whenever the cart changes.
  if (location.hash.startsWith("#/cart")) route();
});
window.addEventListener("hashchange", () => {
  route();
  view.focus({ preventScroll: false });
});
window.addEventListener("storage", showCartCount);
mountPanel(document.getElementById("hood")!);
showCartCount();
showSession();
route();

// The skip link moves focus without touching the hash the router reads.
document.querySelector<HTMLAnchorElement>("a.skip")?.addEventListener("click", (e) => {
  e.preventDefault();
  view.focus();
});
