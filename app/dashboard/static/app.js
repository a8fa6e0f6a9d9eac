// The dashboard's entry: sign-in with a read (or admin) token, and hash routing to views.
import * as api from "./api.js";
import { h, problemBox } from "./dom.js";
import { lookupView } from "./lookup.js";
import { customerView, identitiesView } from "./customer.js";
import { analyticsView } from "./analytics.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

// What every view is handed: the active journey model (stages in order), and `report`,
// which shows an error where it happened, or the sign-in form when the token is refused.
const ctx = {
  model: null,
  report(where, err) {
    if (err instanceof api.ApiError && err.signedOut) signOut(err);
    else where.replaceChildren(problemBox(err));
  },
};

const routes = [
  [/^#\/customers\/([^/]+)\/identities$/, (view, m) => identitiesView(view, ctx, decodeURIComponent(m[1]))],
  [/^#\/customers\/([^/]+)$/, (view, m) => customerView(view, ctx, decodeURIComponent(m[1]))],
  [/^#\/analytics(?:\/([\w-]+))?$/, (view, m) => analyticsView(view, ctx, m[1] || "stages")],
  [/^(#\/?)?$/, (view) => lookupView(view, ctx)],
];

async function route() {
  const view = h("div", { class: "view" });
  main.replaceChildren(view);
  if (!api.token.get()) {
    signIn(view);
    return;
  }
  nav.hidden = false;
  const section = location.hash.startsWith("#/analytics") ? "analytics" : "customers";
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("current", link.dataset.section === section);
  }
  try {
    ctx.model ??= await api.journeyModel();
    const found = routes.find(([pattern]) => pattern.test(location.hash));
    if (found) await found[1](view, location.hash.match(found[0]));
    else view.append(h("h1", {}, "No such page"), h("p", {}, h("a", { href: "#/" }, "Find a customer")));
  } catch (err) {
    ctx.report(view, err);
  }
}

function signOut(err) {
  api.token.clear();
  ctx.model = null;
  const view = h("div", { class: "view" });
  main.replaceChildren(view);
  signIn(view, err);
}

function signIn(view, err) {
  nav.hidden = true;
  const secret = h("input", {
    type: "password", required: true, autocomplete: "off", spellcheck: false, placeholder: "pr_…",
  });
  const status = h("div", {}, err ? problemBox(err) : null);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card signin" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a read (or admin) token: ", h("code", {}, "make run"),
      " prints a demo one, ", h("code", {}, "percorso tokens create --scope read"),
      " makes another. This tab keeps it until it is closed or you sign out."),
    h("label", { class: "field" }, h("span", {}, "Token"), secret),
    button, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    // Without the blanks a paste brings along (spaces, a line break, a no-break space).
    const pasted = secret.value.trim();
    try {
      ctx.model = await api.journeyModel(pasted);
      api.token.set(pasted);
      route();
    } catch (failed) {
      status.replaceChildren(problemBox(failed));
      button.disabled = false;
    }
  });
  view.append(form);
  secret.focus();
}

document.getElementById("sign-out").addEventListener("click", () => {
  api.token.clear();
  ctx.model = null;
  route();
});
window.addEventListener("hashchange", route);
route();
