// Find a customer: by an identifier (normalised by the API as events' are) or by id.
import * as api from "./api.js";
import { field, h, select } from "./dom.js";

const KINDS = ["email", "user_id", "phone", "anonymous_id", "crm_id"];
const OTHER = "other";
const open = (id) => { location.hash = `#/customers/${encodeURIComponent(id)}`; };

export function lookupView(view, ctx) {
  const kind = select([...KINDS.map((k) => [k]), [OTHER, "other kind…"]], "email");
  const custom = h("input", { placeholder: "loyalty_card", maxLength: 64, hidden: true });
  const value = h("input", { required: true, maxLength: 255, placeholder: "ada@example.com" });
  const found = h("div");
  kind.addEventListener("change", () => {
    custom.hidden = kind.value !== OTHER;
    custom.required = !custom.hidden;
  });
  const byIdentifier = h("form", { class: "card" },
    h("h2", {}, "By identifier"),
    h("div", { class: "row" }, field("Kind", h("span", {}, kind, custom)), field("Value", value),
      h("button", { type: "submit" }, "Find")),
    found);
  byIdentifier.addEventListener("submit", async (event) => {
    event.preventDefault();
    found.replaceChildren(h("p", { class: "muted" }, "Looking…"));
    try {
      const profile = await api.lookup(kind.value === OTHER ? custom.value : kind.value, value.value);
      open(profile.id);
    } catch (err) {
      ctx.report(found, err);
    }
  });

  const id = h("input", { required: true, placeholder: "0190f6a4-…", size: 40, spellcheck: false });
  const byId = h("form", { class: "card" },
    h("h2", {}, "By customer id"),
    h("div", { class: "row" }, field("Id", id), h("button", { type: "submit" }, "Open")));
  byId.addEventListener("submit", (event) => {
    event.preventDefault();
    open(id.value.trim());
  });

  view.append(h("h1", {}, "Find a customer"), byIdentifier, byId);
}
