// The browser-side state every page shares: the cart, the customer, checkout attempts.
import { Cart, CheckoutAttempts } from "./cart.js";

export const cart = new Cart(localStorage);
export const attempts = new CheckoutAttempts();

const CUSTOMER_KEY = "shop.customer";

/** Until the shop has sign-in, a customer id kept in this browser. */
export function customerId(): string {
  let id = localStorage.getItem(CUSTOMER_KEY);
  if (!id) {
    id = `guest-${crypto.randomUUID().slice(0, 8)}`;
    localStorage.setItem(CUSTOMER_KEY, id);
  }
  return id;
}

export function setCustomerId(id: string): void {
  localStorage.setItem(CUSTOMER_KEY, id);
}
