// The development sign-in: a customer token from the stack's local issuer
// (`make token CUSTOMER=ada`), pasted by the person and kept in this tab only.
//
// This is NOT a login. The local issuer signs whatever customer id it is
// given; the page never checks a token's signature (it has no key and needs
// none): it reads the claims only to show who is signed in and whether the
// token carries the operator scope. Envoy's jwt_authn verifies every token it
// is sent. docs/security.md says what production puts here instead (an OIDC
// provider's sign-in).
import type { KeyValueStore } from "./cart.js";

export interface Session {
  readonly token: string;
  /** The token's `sub`: the customer every order call acts as. */
  readonly customer: string;
  readonly scopes: readonly string[];
  /** Seconds since the epoch (`exp`). */
  readonly expiresAt: number;
}

const KEY = "shop.token";

/** A token's claims, unverified (for display); a clear error for anything that is not a JWT. */
export function readToken(token: string): Session {
  const trimmed = token.trim().replace(/^Bearer\s+/i, "");
  const parts = trimmed.split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) {
    throw new Error("That is not a token: expected three base64url parts separated by dots (the output of `make token`).");
  }
  let claims: unknown;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
  } catch {
    throw new Error("That token's claims are not readable JSON.");
  }
  const { sub, exp, scope } = (claims ?? {}) as Record<string, unknown>;
  if (typeof sub !== "string" || sub === "") throw new Error("That token names no customer (no `sub` claim).");
  if (typeof exp !== "number") throw new Error("That token has no expiry (no `exp` claim).");
  const scopes = typeof scope === "string" ? scope.split(" ").filter(Boolean) : [];
  return { token: trimmed, customer: sub, scopes, expiresAt: exp };
}

/** The signed-in customer of this tab, kept in a store (sessionStorage in the page). */
export class SessionStore {
  private readonly listeners = new Set<(s: Session | undefined) => void>();

  constructor(
    private readonly store: KeyValueStore & { removeItem(key: string): void },
    private readonly now: () => number = () => Date.now() / 1000,
  ) {}

  /** The session, or undefined when signed out or when the token has expired. */
  current(): Session | undefined {
    const token = this.store.getItem(KEY);
    if (!token) return undefined;
    try {
      const session = readToken(token);
      return session.expiresAt > this.now() ? session : undefined;
    } catch {
      return undefined;
    }
  }

  /** Keeps a token after reading it; throws the reason it is refused. */
  signIn(token: string): Session {
    const session = readToken(token);
    if (session.expiresAt <= this.now()) throw new Error("That token has expired: run `make token` again.");
    this.store.setItem(KEY, session.token);
    this.notify();
    return session;
  }

  signOut(): void {
    this.store.removeItem(KEY);
    this.notify();
  }

  subscribe(listener: (s: Session | undefined) => void): void {
    this.listeners.add(listener);
  }

  private notify(): void {
    const session = this.current();
    for (const listener of this.listeners) listener(session);
  }
}

/** Whether a session may pin implementations: Envoy honours x-shop-impl only for this scope. */
export function isOperator(session: Session | undefined, operatorScope: string): boolean {
  return !!session && session.scopes.includes(operatorScope);
}
