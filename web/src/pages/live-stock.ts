// Live stock for the products on a page: one WatchStock stream, reopened
// after a drop. Each element with data-stock-sku shows its SKU's level.
import type { StockLevel } from "../../gen/shop/inventory/v1/inventory_service_pb.js";
import { inventory } from "../api.js";
import { h } from "../dom.js";
import { follow, type StreamState } from "../stock.js";

export function stockLabel(level: StockLevel): string {
  if (level.available <= 0) return "Out of stock";
  if (level.available < 5) return `Only ${level.available} left`;
  return `${level.available} in stock`;
}

/** A placeholder the stream fills in; the text says what is known. */
export function stockBadge(sku: string): HTMLElement {
  return h("p", { class: "stock", "data-stock-sku": sku }, "Checking stock…");
}

/** The stream's state, for a person: "Stock updates live" or "reconnecting". */
export function streamStatus(): HTMLElement {
  return h("p", { class: "stream-state", role: "status", "data-stream-state": "connecting" }, "Connecting to live stock…");
}

export function watchStock(root: HTMLElement, skus: string[], signal: AbortSignal): void {
  if (skus.length === 0) return;
  const states: Record<StreamState, string> = {
    connecting: "Connecting to live stock…",
    live: "Stock updates live",
    reconnecting: "Live stock interrupted; reconnecting…",
  };
  void follow({
    signal,
    open: (s) => inventory.watchStock({ skus }, { signal: s }),
    onMessage: ({ level }) => {
      if (!level) return;
      for (const el of root.querySelectorAll<HTMLElement>(`[data-stock-sku="${CSS.escape(level.sku)}"]`)) {
        el.textContent = stockLabel(level);
        el.dataset.available = String(level.available);
        el.classList.toggle("stock-out", level.available <= 0);
      }
    },
    onState: (state) => {
      for (const el of root.querySelectorAll<HTMLElement>("[data-stream-state]")) {
        el.dataset.streamState = state;
        el.textContent = states[state];
      }
    },
  });
}
