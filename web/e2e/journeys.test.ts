// The storefront's journeys in a real browser: Debian's chromium driven by
// playwright-core, against a running stack. tests/web/test_storefront.py
// starts them on the session's stack and passes its addresses:
//   SHOP_PUBLIC_URL    the public listener over TLS (serves the page and the API)
//   SHOP_INTERNAL_URL  the internal listener (ImportStock, GetStock for checks),
//                      mutual TLS with the operator's certificate
//   SHOP_CERTS_DIR     the stack's CA and certificates (`make certs`)
//   SHOP_WEB_TOKENS    JSON {"customers": [...], "operators": [...]}: tokens
//                      from the stack's local issuer (Stack.token()), one per
//                      journey; the operators' carry the operator scope
//   SHOP_INVENTORY_IMPLS  the inventory implementations running (node,go,python)
//   SHOP_WEB_ARTIFACTS a folder for a failing journey's screenshot and console
//   SHOP_CHROMIUM      the browser (default /usr/bin/chromium)
//
// Every journey owns its catalog SKU and sets its stock first, so exact stock
// assertions hold on a shared stack; each journey signs in through the
// storefront's development sign-in with a token of its own customer.
// Chromium ignores certificate errors in these contexts only (the edge's
// certificate is from the stack's own CA); node trusts that CA through
// NODE_EXTRA_CA_CERTS.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { chromium, type Browser, type Page } from "playwright-core";

import { InventoryService } from "../gen/shop/inventory/v1/inventory_service_pb.js";
import { OrderService } from "../gen/shop/orders/v1/order_service_pb.js";

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set: run these through tests/web/test_storefront.py`);
  return value;
};
const PUBLIC_URL = env("SHOP_PUBLIC_URL");
const INTERNAL_URL = env("SHOP_INTERNAL_URL");
const IMPLS = env("SHOP_INVENTORY_IMPLS", "node").split(",").filter(Boolean);
const ARTIFACTS = env("SHOP_WEB_ARTIFACTS", join(process.cwd(), ".build", "artifacts"));
const CHROMIUM = env("SHOP_CHROMIUM", "/usr/bin/chromium");
const CERTS = env("SHOP_CERTS_DIR");
const TOKENS = JSON.parse(env("SHOP_WEB_TOKENS")) as { customers: string[]; operators: string[]; longCustomer: string };
const TIMEOUT_MS = 15_000;

// The internal listener, to set and read stock as a test fixture would: as
// the operator (its RBAC allows the operator every RPC).
const internal = createGrpcTransport({
  baseUrl: INTERNAL_URL,
  nodeOptions: {
    ca: readFileSync(join(CERTS, "ca.crt")),
    cert: readFileSync(join(CERTS, "operator.crt")),
    key: readFileSync(join(CERTS, "operator.key")),
  },
});
const inventory = createClient(InventoryService, internal);
const orders = createClient(OrderService, internal);

async function setStock(sku: string, onHand: number): Promise<void> {
  async function* lines() {
    yield { sku, onHand };
  }
  await inventory.importStock(lines(), { timeoutMs: TIMEOUT_MS });
}

async function stockOf(sku: string) {
  const { levels } = await inventory.getStock({ skus: [sku] }, { timeoutMs: TIMEOUT_MS });
  return levels[0];
}

let browser: Browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  await mkdir(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

/** A journey in a fresh browser context; a failure keeps a screenshot and the console. */
function journey(name: string, run: (page: Page) => Promise<void>, viewport = { width: 1280, height: 900 }): void {
  test(name, async () => {
    const context = await browser.newContext({ viewport, ignoreHTTPSErrors: true });
    context.setDefaultTimeout(TIMEOUT_MS);
    const page = await context.newPage();
    const consoleLines: string[] = [];
    page.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.stack ?? e.message}`));
    try {
      await run(page);
      assert.deepEqual(consoleLines.filter((l) => l.startsWith("[pageerror]")), [], "the page threw");
    } catch (err) {
      const file = name.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
      await page.screenshot({ path: join(ARTIFACTS, `${file}.png`), fullPage: true }).catch(() => undefined);
      await writeFile(join(ARTIFACTS, `${file}.console.txt`), consoleLines.join("\n") + "\n");
      throw new Error(`${String(err)}\n  screenshot: ${join(ARTIFACTS, `${file}.png`)}\n  console: ${join(ARTIFACTS, `${file}.console.txt`)}`, { cause: err });
    } finally {
      await context.close();
    }
  });
}

/** The customer a token names (its `sub`), read as the page reads it. */
function subject(token: string): string {
  return (JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()) as { sub: string }).sub;
}

function takeToken(operator: boolean): string {
  const token = (operator ? TOKENS.operators : TOKENS.customers).shift();
  if (!token) throw new Error(`SHOP_WEB_TOKENS has too few ${operator ? "operator" : "customer"} tokens for these journeys`);
  return token;
}

/** Signs in on the development sign-in page with a token, then goes to hash. */
async function signIn(page: Page, token: string, hash: string): Promise<void> {
  await page.goto(`${PUBLIC_URL}/#/sign-in?next=${encodeURIComponent(hash)}`);
  await page.getByLabel("Customer token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: `Signed in as ${subject(token)}` }).waitFor();
}

/**
 * Opens the storefront signed in as a customer of its own (an operator when
 * pinning, which only an operator's token may do), pinned to one inventory
 * implementation if asked.
 */
async function open(page: Page, hash = "#/", pin?: string): Promise<string> {
  const token = takeToken(pin !== undefined);
  await signIn(page, token, hash);
  if (pin) {
    // The choice is kept in the browser: after a reload every inventory call is pinned.
    await page.getByLabel("Inventory implementation").selectOption(pin);
    await page.reload();
    // The select fills in once /storefront.json arrives; it then shows the kept pin.
    await page.waitForFunction((p) => (document.getElementById("pin") as HTMLSelectElement | null)?.value === p, pin);
  }
  return subject(token);
}

const card = (page: Page, name: string) => page.getByRole("listitem").filter({ has: page.getByRole("heading", { name }) });
const panelRows = (page: Page, method: string) => page.locator(`#hood tr[data-method="${method}"]`);

async function addFromCatalog(page: Page, tag: string, name: string): Promise<void> {
  await page.getByLabel("Filter by tag").fill(tag);
  await page.getByLabel("Filter by tag").press("Enter");
  await page.getByRole("heading", { name: `Products tagged “${tag}”` }).waitFor();
  await card(page, name).getByRole("button", { name: `Add ${name} to cart` }).click();
}

async function checkout(page: Page, cardLabel = "Test card: the charge succeeds"): Promise<void> {
  await page.getByRole("link", { name: /^Cart/ }).click();
  await page.getByRole("link", { name: "Proceed to checkout" }).click();
  await page.getByLabel("Card").selectOption({ label: cardLabel });
}

for (const [impl, sku] of [
  ["node", "sku-chai-spice-mix"],
  ["go", "sku-rooibos-tea"],
  ["python", "sku-black-tea-assam"],
] as const) {
  if (!IMPLS.includes(impl)) continue;
  journey(`browse, add to cart and check out to CONFIRMED with inventory pinned to ${impl}`, async (page) => {
    await setStock(sku, 40);
    const customer = await open(page, "#/", impl);
    const productName = await realName(sku);
    await addFromCatalog(page, "tea", productName);
    await card(page, productName).getByText("40 in stock").waitFor();
    await card(page, productName).getByRole("button", { name: `Add ${productName} to cart` }).click();
    await page.getByRole("link", { name: "Cart, 2 items" }).waitFor();

    // The cart is priced by the catalog (PriceCart), never in the browser.
    await page.getByRole("link", { name: /^Cart/ }).click();
    const total = page.getByTestId("cart-total");
    await total.waitFor();
    assert.match((await total.textContent()) ?? "", /^€\d+\.\d\d$/);
    await page.getByLabel(`Quantity of ${productName}`).fill("3");
    await page.getByLabel(`Quantity of ${productName}`).press("Tab");
    await page.getByRole("row", { name: /Total \(3 items\)/ }).waitFor();

    await page.getByRole("link", { name: "Proceed to checkout" }).click();
    await page.getByRole("button", { name: /^Place order/ }).click();
    await page.getByText(/^Order confirmed/).waitFor();
    const steps = page.getByRole("list", { name: "Saga steps" }).getByRole("listitem");
    assert.deepEqual(await steps.allInnerTexts().then((t) => t.map((s) => s.replace(/\s+/g, " ").trim())), [
      "Order recorded done",
      "Priced by the catalog done",
      "Stock reserved by the inventory done",
      "Card charged by payments done",
      "Stock committed: order confirmed done",
    ]);
    await page.getByTestId("states-seen").getByText(/Confirmed$/).waitFor();
    await page.getByRole("link", { name: "Cart, 0 items" }).waitFor();

    // Three committed, and the inventory calls went to the pinned implementation.
    const level = await stockOf(sku);
    assert.deepEqual([level.onHand, level.reserved], [37, 0]);
    const servedBy = await page.locator(`#hood tr[data-method^="InventoryService/"] [data-served-by]`).evaluateAll(
      (cells) => cells.map((c) => (c as HTMLElement).dataset.servedBy).filter(Boolean),
    );
    assert.ok(servedBy.length > 0, "no inventory call in the panel");
    assert.deepEqual([...new Set(servedBy)], [`inventory-${impl}`]);
    // The page traced its PlaceOrder (a sampled traceparent of its own) and links it to Zipkin's UI.
    const traceLink = panelRows(page, "OrderService/PlaceOrder").getByRole("link");
    const href = (await traceLink.getAttribute("href")) ?? "";
    assert.match(href, /^http:\/\/[^/]+:\d+\/zipkin\/traces\/[0-9a-f]{32}$/);
    assert.equal(href.split("/").pop(), await traceLink.textContent());

    // The orders page lists it, and GetOrder shows it.
    await page.getByRole("link", { name: "Orders" }).click();
    await page.getByRole("cell", { name: "Confirmed" }).waitFor();
    const { orders: placed } = await orders.listOrders({ customerId: customer }, { timeoutMs: TIMEOUT_MS });
    assert.equal(placed.length, 1);
    await page.getByRole("link", { name: placed[0].orderId }).click();
    await page.getByTestId("order-state").getByText("Confirmed").waitFor();
  });
}

async function realName(sku: string): Promise<string> {
  const res = await fetch(`${PUBLIC_URL}/v1/products/${sku}`);
  const body = (await res.json()) as { product: { name: string } };
  return body.product.name;
}

journey("a declined card shows its reason, and the stock is unchanged", async (page) => {
  const sku = "sku-vanilla-syrup";
  await setStock(sku, 30);
  const name = await realName(sku);
  const ownToken = takeToken(false);
  await signIn(page, ownToken, `#/product/${sku}`);
  await page.getByText("30 in stock").waitFor();
  await page.getByLabel("Quantity").fill("2");
  await page.getByRole("button", { name: `Add ${name} to cart` }).click();
  await checkout(page, "Test card: the charge is declined");
  // Bad input first: signed in with a token for a customer id longer than the
  // contract allows, the service's BadRequest shows next to its field.
  const customer = page.getByLabel("Customer ID");
  await signIn(page, TOKENS.longCustomer, "#/checkout");
  await page.getByLabel("Card").selectOption({ label: "Test card: the charge is declined" });
  await page.getByRole("button", { name: /^Place order/ }).click();
  await page.locator("#customer-error").getByText(/128/).waitFor();
  assert.equal(await customer.getAttribute("aria-invalid"), "true");
  await signIn(page, ownToken, "#/checkout");
  await page.getByLabel("Card").selectOption({ label: "Test card: the charge is declined" });
  assert.equal(await customer.inputValue(), subject(ownToken));
  await page.getByRole("button", { name: /^Place order/ }).click();
  await page.getByRole("alert").getByText(/^The order failed: the card was declined\./).waitFor();
  const steps = page.getByRole("list", { name: "Saga steps" });
  await steps.getByRole("listitem").filter({ hasText: "Card charged by payments" }).getByText("failed").waitFor();
  await steps.getByRole("listitem").filter({ hasText: "Reservation released" }).getByText("done").waitFor();
  const level = await stockOf(sku);
  assert.deepEqual([level.onHand, level.reserved, level.available], [30, 0, 30]);
});

journey("a stock change made through ImportStock appears live", async (page) => {
  const sku = "sku-caramel-syrup";
  await setStock(sku, 50);
  await open(page, `#/product/${sku}`);
  await page.getByText("50 in stock").waitFor();
  await page.getByText("Stock updates live").waitFor();
  await setStock(sku, 3);
  await page.getByText("Only 3 left").waitFor();
  await setStock(sku, 0);
  await page.getByText("Out of stock").waitFor();
  assert.equal(await panelRows(page, "InventoryService/WatchStock").count(), 1, "one stream, no reload");
});

journey("an unknown product shows the NOT_FOUND message from its status", async (page) => {
  const sku = `sku-nope-${randomUUID().slice(0, 8)}`;
  await open(page, `#/product/${sku}`);
  await page.getByRole("heading", { name: "Product not found" }).waitFor();
  await page.getByRole("alert").getByText(`Product "${sku}" does not exist in the catalog.`).waitFor();
  await panelRows(page, "CatalogService/GetProduct").filter({ hasText: "NOT_FOUND" }).waitFor();
});

journey("a double-clicked checkout makes one order", async (page) => {
  const sku = "sku-almond-biscotti";
  await setStock(sku, 25);
  const name = await realName(sku);
  const customer = await open(page, `#/product/${sku}`);
  await page.getByRole("button", { name: `Add ${name} to cart` }).click();
  await checkout(page);
  await page.getByRole("button", { name: /^Place order/ }).dblclick();
  await page.getByText(/^Order confirmed/).waitFor();
  const { orders: placed } = await orders.listOrders({ customerId: customer }, { timeoutMs: TIMEOUT_MS });
  assert.equal(placed.length, 1, `orders for ${customer}: ${placed.map((o) => o.orderId).join(", ")}`);
  assert.equal((await stockOf(sku)).onHand, 24);
});

journey("the catalog pages forward and back, a page at a time", async (page) => {
  await open(page, "#/");
  const names = () => page.getByRole("list", { name: "Products" }).getByRole("heading").allInnerTexts();
  await page.getByRole("list", { name: "Products" }).waitFor();
  const first = await names();
  await page.getByRole("link", { name: "Next page →" }).click();
  await page.getByText("Page 2").waitFor();
  const second = await names();
  assert.equal(first.length, 12);
  assert.ok(second.length > 0 && second.every((n) => !first.includes(n)), `page 2 repeats page 1: ${second}`);
  await page.getByRole("link", { name: "← Previous page" }).click();
  await page.getByText("Page 1").waitFor();
  assert.deepEqual(await names(), first);
});

journey("on a narrow screen the catalog is one column and usable from the keyboard", async (page) => {
  await open(page, "#/?tag=gifts");
  await page.getByRole("list", { name: "Products" }).waitFor();
  const widths = await page.locator(".card").evaluateAll((cards) => cards.map((c) => c.getBoundingClientRect().width));
  assert.ok(widths.length > 0 && widths.every((w) => w > 300), `cards: ${widths}`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.equal(overflow, 0, "the page scrolls sideways");
  // Tab from the top reaches the first product's link, and Enter opens it.
  const visited: string[] = [];
  for (let i = 0; i < 15 && !visited.at(-1)?.startsWith("#/product/"); i++) {
    await page.keyboard.press("Tab");
    visited.push(await page.evaluate(() => document.activeElement?.getAttribute("href") ?? document.activeElement?.tagName ?? ""));
  }
  assert.ok(visited.at(-1)?.startsWith("#/product/"), `Tab never reached a product: ${visited.join(" ")}`);
  await page.keyboard.press("Enter");
  // The catalog stays on screen until the product has loaded: wait for the product page itself.
  await page.getByText(/^Product id sku-/).waitFor();
  await page.getByRole("button", { name: /^Add .* to cart$/ }).waitFor();
}, { width: 360, height: 740 });
