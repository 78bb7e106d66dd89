// The browser-side state every page shares: the cart, the signed-in customer, checkout attempts.
import { session } from "./api.js";
import { Cart, CheckoutAttempts } from "./cart.js";

export const cart = new Cart(localStorage);
export const attempts = new CheckoutAttempts();

/** The signed-in customer ("" when signed out): orders are always theirs. */
export function customerId(): string {
  return session.current()?.customer ?? "";
}
