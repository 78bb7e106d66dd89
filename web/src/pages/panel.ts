// "Under the hood": every call the page made, as the edge saw it.
import { calls, getInventoryPin, session, setInventoryPin } from "../api.js";
import type { Call } from "../calls.js";
import { h, show } from "../dom.js";
import { isOperator } from "../session.js";

const PIN_KEY = "shop.inventoryPin";

interface StorefrontConfig {
  services: Record<string, { implementations: string[]; weights: Record<string, number> }>;
  /** Envoy honours x-shop-impl at the edge only for a token with this scope. */
  operator_scope: string;
  /** Zipkin's UI, on the host the page came from, when the stack traces. */
  trace_ui_port?: number;
}

/** Where a trace id opens in Zipkin's UI, once /storefront.json says where that is. */
let traceUi: string | undefined;

export function traceUrl(base: string, traceId: string): string {
  return `${base}/zipkin/traces/${encodeURIComponent(traceId)}`;
}

export function mountPanel(root: HTMLElement): void {
  setInventoryPin(localStorage.getItem(PIN_KEY) ?? "");
  const select = h("select", {
    id: "pin",
    onchange: () => {
      setInventoryPin(select.value);
      localStorage.setItem(PIN_KEY, select.value);
    },
  });
  const routing = h("span", { class: "muted" });
  const pinNote = h("span", { class: "muted", id: "pin-note" });
  const body = h("tbody");
  const count = h("span");
  show(
    root,
    h(
      "details",
      { open: localStorage.getItem("shop.panelOpen") !== "0", ontoggle: (e: Event) => localStorage.setItem("shop.panelOpen", (e.target as HTMLDetailsElement).open ? "1" : "0") },
      h("summary", {}, h("strong", { id: "hood-title" }, "Under the hood"), " · ", count),
      h("div", { class: "pin" }, h("label", { for: "pin" }, "Inventory implementation"), select, routing, pinNote),
      h("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-label": "Calls" },
        h("table", { class: "calls" },
          h("thead", {}, h("tr", {}, ...["Method", "Status", "Latency", "Served by", "x-request-id", "Trace id"].map((c) => h("th", { scope: "col" }, c)))),
          body)),
    ),
  );
  void loadConfig(select, routing, pinNote);
  let queued = false;
  calls.subscribe(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      const list = calls.list();
      count.textContent = `${list.length} call${list.length === 1 ? "" : "s"}`;
      show(body, list.map(row));
    });
  });
}

function row(call: Call): HTMLElement {
  // The page cancels its own streams when it moves on: not a failure.
  const tone = ["OK", "open"].includes(call.status) ? "ok" : ["pending", "CANCELLED"].includes(call.status) ? "" : "bad";
  return h(
    "tr",
    { "data-method": call.method, "data-status": call.status },
    h("td", {}, call.method, call.streaming ? h("span", { class: "muted" }, " (stream)") : null),
    h("td", { class: tone }, call.status, call.streaming && call.messages ? ` · ${call.messages} msg` : ""),
    h("td", { class: "num" }, call.latencyMs === undefined ? "" : `${call.latencyMs} ms`),
    h("td", { "data-served-by": call.servedBy ?? "" }, call.servedBy ?? ""),
    h("td", { class: "mono" }, call.requestId ?? ""),
    h("td", { class: "mono" },
      call.traceId && traceUi
        ? h("a", { href: traceUrl(traceUi, call.traceId), target: "_blank", rel: "noopener", title: "Open this call's trace in Zipkin" }, call.traceId)
        : call.traceId ?? "—"),
  );
}

/** The implementations that run, from the routes Envoy serves (/storefront.json). */
async function loadConfig(select: HTMLSelectElement, routing: HTMLElement, pinNote: HTMLElement): Promise<void> {
  let config: StorefrontConfig | undefined;
  try {
    const res = await fetch("/storefront.json", { cache: "no-store" });
    if (res.ok) config = (await res.json()) as StorefrontConfig;
  } catch {
    // Without it the panel still lists calls; only pinning is unavailable.
  }
  if (config?.trace_ui_port) traceUi = `http://${location.hostname}:${config.trace_ui_port}`;
  const inventory = config?.services.inventory;
  const weights = inventory ? Object.entries(inventory.weights).map(([impl, w]) => `${impl} ${w}%`).join(", ") : "";
  show(select,
    h("option", { value: "" }, "Envoy decides"),
    (inventory && Object.keys(inventory.weights).length > 1 ? Object.keys(inventory.weights) : []).map((impl) => h("option", { value: impl }, `Pin to ${impl}`)));
  routing.textContent = weights ? `Envoy's routing: ${weights}` : "";
  const allow = (): void => {
    // Only an operator's token may pin (Envoy strips anyone else's header).
    const operator = config !== undefined && isOperator(session.current(), config.operator_scope);
    select.disabled = !operator;
    pinNote.textContent = operator ? "" : " Pinning needs a token with the operator scope.";
    if (!operator) {
      setInventoryPin("");
      select.value = "";
      return;
    }
    select.value = getInventoryPin();
    if (select.value !== getInventoryPin()) setInventoryPin("");
  };
  session.subscribe(allow);
  allow();
}
