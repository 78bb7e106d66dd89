// The cart (product ids and quantities, kept in localStorage) and checkout
// attempts. Prices are never kept here: the catalog prices the cart on every
// view (PriceCart).

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export type CartItems = ReadonlyMap<string, number>;

export class Cart {
  private static readonly KEY = "shop.cart";
  private listeners = new Set<(items: CartItems) => void>();

  constructor(private readonly store: KeyValueStore) {}

  items(): CartItems {
    try {
      const raw = JSON.parse(this.store.getItem(Cart.KEY) ?? "[]") as unknown;
      if (!Array.isArray(raw)) return new Map();
      return new Map(raw.filter(isLine));
    } catch {
      return new Map();
    }
  }

  count(): number {
    let n = 0;
    for (const q of this.items().values()) n += q;
    return n;
  }

  add(productId: string, quantity = 1): void {
    const items = new Map(this.items());
    items.set(productId, (items.get(productId) ?? 0) + quantity);
    this.save(items);
  }

  /** Sets a line's quantity as typed; the server says if it is out of range. */
  set(productId: string, quantity: number): void {
    const items = new Map(this.items());
    items.set(productId, quantity);
    this.save(items);
  }

  remove(productId: string): void {
    const items = new Map(this.items());
    items.delete(productId);
    this.save(items);
  }

  clear(): void {
    this.save(new Map());
  }

  subscribe(listener: (items: CartItems) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private save(items: CartItems): void {
    this.store.setItem(Cart.KEY, JSON.stringify([...items]));
    for (const listener of this.listeners) listener(items);
  }
}

function isLine(line: unknown): line is [string, number] {
  return Array.isArray(line) && typeof line[0] === "string" && Number.isInteger(line[1]);
}

export interface CheckoutInput {
  readonly customerId: string;
  readonly paymentToken: string;
  readonly items: CartItems;
}

/**
 * One request_id per checkout attempt. Sending the same attempt again (a
 * double click, a retry after a dropped connection) reuses its id, so
 * PlaceOrder's idempotency returns the one order. An attempt ends when the
 * shop answered with an order, or when what is being ordered changes.
 */
export class CheckoutAttempts {
  private current?: { key: string; requestId: string };

  constructor(private readonly newId: () => string = () => crypto.randomUUID()) {}

  requestIdFor(input: CheckoutInput): string {
    const key = JSON.stringify([input.customerId, input.paymentToken, [...input.items].sort()]);
    if (this.current?.key !== key) this.current = { key, requestId: `web-${this.newId()}` };
    return this.current.requestId;
  }

  /** The shop answered with an order: the next checkout is a new attempt. */
  answered(): void {
    this.current = undefined;
  }
}
