// Just enough of a browser to run the dashboard's modules in node against a live API:
// a small DOM (elements, text, events, forms), location and sessionStorage. It signs in,
// opens each view and prints, as JSON, the text each one shows and the paths it requested.
// Setting innerHTML (or its kin) throws, so a script that writes markup fails here too.
//
// The page is at <path> (`/dashboard/`, or under a prefix: `/tools/percorso/dashboard/`),
// and fetch is a reverse proxy that serves the API at the path before `dashboard/`: it
// forwards what is under that path, the prefix removed, and answers 404 to anything else.
//
//   node browser.mjs <static dir copy> <API base URL> <path> <token> <customer id> <an id merged into it>
import { pathToFileURL } from "node:url";

const [dir, base, path, secret, customerId, mergedId] = process.argv.slice(2);
const prefix = path.slice(0, -"dashboard/".length);

class Node {
  constructor() { this.childNodes = []; this.parentNode = null; this.listeners = {}; }
  get textContent() { return this.childNodes.map((c) => c.textContent).join(""); }
  set textContent(text) { this.replaceChildren(text); }
  append(...items) {
    for (const item of items) {
      const node = item instanceof Node ? item : new Text(String(item));
      node.parentNode?.childNodes.splice(node.parentNode.childNodes.indexOf(node), 1);
      node.parentNode = this;
      this.childNodes.push(node);
    }
  }
  replaceChildren(...items) { this.childNodes = []; this.append(...items); }
  addEventListener(type, listener) { (this.listeners[type] ??= []).push(listener); }
  dispatchEvent(event) {
    event.target ??= this;
    for (const listener of this.listeners[event.type] ?? []) listener.call(this, event);
    if (!event.stopped && this.parentNode) this.parentNode.dispatchEvent(event);
  }
}

class Text extends Node {
  constructor(text) { super(); this.text = text; }
  get textContent() { return this.text; }
}

const PROPERTIES = ["value", "type", "hidden", "checked", "selected", "disabled", "href",
  "placeholder", "required", "maxLength", "min", "max", "step", "size", "spellcheck",
  "autocomplete", "open", "role"];

class Element extends Node {
  constructor(tag) {
    super();
    this.tagName = tag.toUpperCase();
    this.attributes = {};
    this.className = "";
    this.dataset = {};
    this.style = {};
    this.classList = {
      toggle: (name, on) => {
        const names = new Set(this.className.split(" ").filter(Boolean));
        if (on) names.add(name); else names.delete(name);
        this.className = [...names].join(" ");
      },
    };
  }
  get textContent() { return this.hidden ? "" : super.textContent; } // what shows
  set textContent(text) { this.replaceChildren(text); }
  setAttribute(name, value) { this.attributes[name] = String(value); }
  getAttribute(name) { return this.attributes[name] ?? null; }
  focus() {}
  get form() { let n = this.parentNode; while (n && n.tagName !== "FORM") n = n.parentNode; return n; }
  querySelectorAll(tag) {
    const found = [];
    const walk = (n) => n.childNodes.forEach((c) => { if (c.tagName === tag.toUpperCase()) found.push(c); walk(c); });
    walk(this);
    return found;
  }
  requestSubmit() { this.dispatchEvent(new Event("submit")); }
  click() { this.dispatchEvent(new Event("click")); }
}
for (const name of PROPERTIES) {
  Object.defineProperty(Element.prototype, name, {
    get() {
      if (name === "value" && this.tagName === "SELECT") {
        const options = this.querySelectorAll("option");
        return (options.find((o) => o.selected) ?? options[0])?.value ?? "";
      }
      return this.attributes[`.${name}`] ?? (name === "value" ? "" : undefined);
    },
    set(value) { this.attributes[`.${name}`] = value; },
  });
}
for (const name of ["innerHTML", "outerHTML", "insertAdjacentHTML"]) {
  Object.defineProperty(Element.prototype, name, { set() { throw new Error(`${name} used`); }, get() { throw new Error(`${name} used`); } });
}

class Event {
  constructor(type) { this.type = type; this.stopped = false; }
  preventDefault() {}
  stopPropagation() { this.stopped = true; }
}

const page = new Element("body");
const byId = {};
for (const id of ["main", "nav", "sign-out"]) page.append((byId[id] = new Element(id === "sign-out" ? "button" : id)));
for (const section of ["customers", "analytics"]) {
  const link = new Element("a");
  link.dataset.section = section;
  byId.nav.append(link);
}

const windowListeners = {};
let hash = "";
const storage = new Map();
let pending = 0;
const requested = [];
let slow = null; // a request whose query holds this answers 300 ms late
const realFetch = fetch;
Object.assign(globalThis, {
  Node,
  document: {
    createElement: (tag) => new Element(tag),
    createTextNode: (text) => new Text(text),
    getElementById: (id) => byId[id],
  },
  sessionStorage: {
    getItem: (k) => storage.get(k) ?? null,
    setItem: (k, v) => storage.set(k, String(v)),
    removeItem: (k) => storage.delete(k),
  },
  location: {
    origin: base,
    href: new URL(path, base).href,
    get hash() { return hash; },
    set hash(value) {
      hash = value.startsWith("#") ? value : `#${value}`;
      setTimeout(() => windowListeners.hashchange?.forEach((l) => l()));
    },
  },
  fetch: async (url, init) => {
    pending += 1;
    try {
      const asked = new URL(url);
      requested.push(asked.pathname + asked.search);
      if (slow && asked.search.includes(slow)) await new Promise((resolve) => setTimeout(resolve, 300));
      if (asked.origin !== base || !asked.pathname.startsWith(prefix)) return new Response(null, { status: 404 });
      return await realFetch(new URL(`/${asked.pathname.slice(prefix.length)}${asked.search}`, base), init);
    } finally { pending -= 1; }
  },
});
globalThis.window = { location: globalThis.location, addEventListener: (t, l) => (windowListeners[t] ??= []).push(l) };

async function settled() {
  for (let quiet = 0; quiet < 3;) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    quiet = pending ? 0 : quiet + 1;
  }
}

const find = (tag, where = byId.main) => where.querySelectorAll(tag);
const text = () => byId.main.textContent;
const shown = {};

await import(pathToFileURL(`${dir}/app.js`));
await settled();
shown.signin = text();
find("input")[0].value = "pr_not-a-token";
find("form")[0].requestSubmit();
await settled();
shown.refused = text();
let before = requested.length;
find("input")[0].value = `\u201c${secret}\u201d`; // pasted with curly quotes
find("form")[0].requestSubmit();
await settled();
shown.unsendable = text();
shown.unsendable_requests = requested.length - before;
shown.unsendable_stored = storage.has("percorso.dashboard.token");
find("input")[0].value = ` \u00a0${secret}\n`; // and with blanks, which are trimmed
find("form")[0].requestSubmit();
await settled();
shown.lookup = text();
shown.stored = storage.get("percorso.dashboard.token");
shown.nav_hidden = byId.nav.hidden;
find("input")[1].value = " ADA@example.com"; // the value (the first: a custom kind, hidden)
find("form")[0].requestSubmit();
await settled();
shown.found = hash;

location.hash = `#/customers/${customerId}`;
await settled();
shown.customer = text();
location.hash = `#/customers/${mergedId}`;
await settled();
shown.merged = text();
location.hash = "#/customers/not-an-id";
await settled();
shown.invalid_id = text();
for (const tab of ["stages", "funnel", "touchpoints", "attribution", "abandoned-carts"]) {
  location.hash = `#/analytics/${tab}`;
  await settled();
  shown[tab] = text();
}
// A slow answer for an earlier form does not replace the answer for the form as it is.
location.hash = "#/analytics/stages";
await settled();
const [lastSeenSince] = find("input");
slow = "last_seen_since";
lastSeenSince.value = "2999-01-01";
lastSeenSince.dispatchEvent(new Event("input"));
find("form")[0].requestSubmit();
lastSeenSince.value = "";
lastSeenSince.dispatchEvent(new Event("input"));
find("form")[0].requestSubmit();
await settled();
slow = null;
shown.stages_after_slow = text();
// A funnel of no step, or one, is not asked for (the API would answer every stage's).
location.hash = "#/analytics/funnel";
await settled();
for (const box of find("input").filter((i) => i.type === "checkbox")) {
  box.checked = false;
  box.dispatchEvent(new Event("change"));
}
before = requested.length;
find("form")[0].requestSubmit();
await settled();
shown.funnel_no_step = text();
shown.funnel_no_step_requests = requested.length - before;
// Nor is attribution to an event without a name (the API would answer entering purchase's).
location.hash = "#/analytics/attribution";
await settled();
const [on] = find("select").filter((s) => s.querySelectorAll("option").some((o) => o.value === "event"));
for (const option of on.querySelectorAll("option")) option.selected = option.value === "event";
on.dispatchEvent(new Event("change"));
before = requested.length;
find("form")[0].requestSubmit();
await settled();
shown.attribution_no_event = text();
shown.attribution_no_event_requests = requested.length - before;
location.hash = `#/customers/${customerId}/identities`;
await settled();
shown.identities = text();
storage.set("percorso.dashboard.token", "pr_revoked");
location.hash = "#/analytics/stages";
await settled();
shown.signed_out = text();
shown.requested = requested;
process.stdout.write(JSON.stringify(shown));
