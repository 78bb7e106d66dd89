// StockWatchHub fans stock changes out to WatchStock streams. Changes made by
// this process arrive from the store right after each commit. Changes made by
// another process on the same database file (a second implementation during a
// live swap) are found by polling PRAGMA data_version, which moves whenever
// another connection commits; the hub then re-reads the watched SKUs and sends
// only those whose level changed. Those are coalesced to the poll interval.
import type { Logger } from "../common/logger.js";
import type { InventoryStore, StockRow } from "./store.js";

/** How often the hub looks for commits by other processes while anyone watches. */
export const DEFAULT_POLL_INTERVAL_MS = 200;

export interface Watcher {
  /** Sends one level; initial is true only for the first of each SKU. */
  send(level: StockRow, initial: boolean): void;
  /** Ends the stream because the server is shutting down. */
  close(): void;
}

interface Subscription {
  readonly skus: readonly string[];
  readonly watcher: Watcher;
  /** The last level sent for each SKU, to send only real changes. */
  readonly last: Map<string, StockRow>;
}

function sameLevel(a: StockRow | undefined, b: StockRow): boolean {
  return a !== undefined && a.onHand === b.onHand && a.reserved === b.reserved && a.updateTime === b.updateTime;
}

export class StockWatchHub {
  private readonly store: InventoryStore;
  private readonly logger: Logger;
  private readonly pollIntervalMs: number;
  // The open WatchStock streams; the poll timer runs only while there are some.
  private readonly subscriptions = new Set<Subscription>();
  private readonly stopListening: () => void;
  private pollTimer: NodeJS.Timeout | undefined;
  private lastDataVersion = 0;
  private closed = false;

  constructor(store: InventoryStore, logger: Logger, pollIntervalMs = DEFAULT_POLL_INTERVAL_MS) {
    this.store = store;
    this.logger = logger;
    this.pollIntervalMs = pollIntervalMs;
    this.stopListening = store.onChange((skus) => {
      this.onLocalChange(skus);
    });
  }

  /** The number of open watches (tests check that cancelled ones leave). */
  get size(): number {
    return this.subscriptions.size;
  }

  /**
   * Sends the initial levels (which the caller read, all SKUs known) and then
   * every change until the returned function is called.
   */
  subscribe(initial: readonly StockRow[], watcher: Watcher): () => void {
    if (this.closed) {
      watcher.close();
      return () => undefined;
    }
    if (this.subscriptions.size === 0) {
      this.lastDataVersion = this.store.dataVersion();
      this.pollTimer = setInterval(() => {
        this.poll();
      }, this.pollIntervalMs);
      this.pollTimer.unref();
    }
    const subscription: Subscription = {
      skus: [...new Set(initial.map((level) => level.sku))],
      watcher,
      last: new Map(),
    };
    for (const level of initial) {
      subscription.last.set(level.sku, level);
      watcher.send(level, true);
    }
    this.subscriptions.add(subscription);
    return () => {
      this.remove(subscription);
    };
  }

  /** Ends every watch and stops listening; used at shutdown. */
  close(): void {
    this.closed = true;
    this.stopListening();
    for (const subscription of [...this.subscriptions]) {
      this.remove(subscription);
      subscription.watcher.close();
    }
  }

  private remove(subscription: Subscription): void {
    if (this.subscriptions.delete(subscription) && this.subscriptions.size === 0 && this.pollTimer !== undefined) {
      clearInterval(this.pollTimer);
      this.pollTimer = undefined;
    }
  }

  // Runs right after a write committed: a failure here must not turn that
  // write's answer into an error, so it is logged instead.
  private onLocalChange(skus: readonly string[]): void {
    const changed = new Set(skus);
    try {
      for (const subscription of this.subscriptions) {
        const watched = subscription.skus.filter((sku) => changed.has(sku));
        if (watched.length > 0) {
          this.refresh(subscription, watched);
        }
      }
    } catch (err) {
      this.logger.error({ err }, "watch update failed");
    }
  }

  private poll(): void {
    try {
      const version = this.store.dataVersion();
      if (version === this.lastDataVersion) {
        return;
      }
      this.lastDataVersion = version;
      for (const subscription of this.subscriptions) {
        this.refresh(subscription, subscription.skus);
      }
    } catch (err) {
      this.logger.error({ err }, "watch poll failed");
    }
  }

  private refresh(subscription: Subscription, skus: readonly string[]): void {
    const levels = this.store.readStock(skus);
    for (const sku of skus) {
      const level = levels.get(sku);
      if (level !== undefined && !sameLevel(subscription.last.get(sku), level)) {
        subscription.last.set(sku, level);
        subscription.watcher.send(level, false);
      }
    }
  }
}
