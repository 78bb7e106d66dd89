// The development sign-in page: paste a token from `make token`, see who it
// names, sign out. session.ts says why this is not a login.
import { session } from "../api.js";
import { alertBox, h, show } from "../dom.js";

export async function signInPage(view: HTMLElement, params: URLSearchParams): Promise<void> {
  const current = session.current();
  const next = params.get("next") ?? "#/";
  const token = h("textarea", { id: "token", name: "token", rows: 4, required: true, spellcheck: "false", autocomplete: "off", "aria-describedby": "token-help token-error" });
  const error = h("p", { class: "field-error", id: "token-error" });
  const form = h(
    "form",
    {
      class: "checkout",
      onsubmit: (e: Event) => {
        e.preventDefault();
        try {
          session.signIn(token.value);
          location.hash = next;
        } catch (err) {
          error.textContent = (err as Error).message;
          token.setAttribute("aria-invalid", "true");
        }
      },
    },
    h("div", { class: "field" }, h("label", { for: "token" }, "Customer token"), token, error),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  show(
    view,
    h("h1", {}, "Development sign-in"),
    alertBox(
      "This is a development sign-in, not a login: the local issuer signs a token for any customer id. " +
        "In production an identity provider signs customers in (docs/security.md).",
      "info",
    ),
    current
      ? h("p", { role: "status" }, `Signed in as ${current.customer}${current.scopes.length ? ` (${current.scopes.join(", ")})` : ""}, until ${new Date(current.expiresAt * 1000).toLocaleTimeString()}. `,
          h("button", { type: "button", onclick: () => { session.signOut(); location.hash = "#/sign-in"; } }, "Sign out"))
      : null,
    h("p", { id: "token-help" }, "Get a token for a customer on the machine that runs the shop, and paste it here: ",
      h("code", {}, "make token CUSTOMER=ada"), " (add ", h("code", {}, "SCOPE=shop.operator"),
      " to pin implementations from the panel). It is kept in this tab only and sent as ",
      h("code", {}, "authorization: Bearer …"), " on every call."),
    form,
  );
}
