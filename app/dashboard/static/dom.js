// Page building and formatting. Data goes into the page as text only (text nodes,
// textContent, properties), never as markup: traits and event properties come from
// whoever sent the events, and `<img src=x onerror=…>` must show as those characters.

// As app/touchpoint.py's Channel and EventType (a test compares them).
export const CHANNELS = [
  "web", "email", "social", "in_store", "mobile", "crm", "call_center", "ads", "other",
];
export const TYPES = ["track", "page", "screen", "identify", "alias", "group"];

// An element: `props` are properties (`value`, `hidden`…), `class`, `on<event>` listeners
// or, for names the element has no property for, attributes; children are nodes or text.
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el) el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...nodes(children));
  return el;
}

function nodes(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

export const customerLink = (id, label = id) =>
  h("a", { href: `#/customers/${encodeURIComponent(id)}`, class: "mono" }, label);

export const dash = "—";
export const fmtNumber = (n) => (n === null || n === undefined ? dash : n.toLocaleString());
export const count = (n, one, many = `${one}s`) => `${fmtNumber(n)} ${n === 1 ? one : many}`;
export const fmtShare = (x) => (x === null || x === undefined ? dash : `${(x * 100).toFixed(1)} %`);
export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : dash);
export const jsonText = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  const units = [[86400, "d"], [3600, "h"], [60, "min"]];
  for (const [size, unit] of units) {
    if (seconds >= size) return `${(seconds / size).toFixed(seconds >= 10 * size ? 0 : 1)} ${unit}`;
  }
  return `${Math.round(seconds)} s`;
}

// A horizontal bar for a share from 0 to 1. Its width is set through the CSSOM, which the
// Content-Security-Policy allows (a style attribute it would refuse).
export function bar(fraction) {
  const fill = h("span", { class: "bar-fill" });
  fill.style.width = `${(Math.max(0, Math.min(1, fraction || 0)) * 100).toFixed(2)}%`;
  return h("span", { class: "bar" }, fill);
}

// Dates as <input type="date"> holds them (the browser's day), and the instants they start.
export function dateValue(daysFromToday = 0) {
  const d = new Date();
  d.setDate(d.getDate() + daysFromToday);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
export const dayStart = (value) => (value ? new Date(`${value}T00:00`).toISOString() : undefined);
export const localInstant = (value) => (value ? new Date(value).toISOString() : undefined);

// Label and control on one line of a form.
export const field = (label, control) => h("label", { class: "field" }, h("span", {}, label), control);

export function select(options, value, props = {}) {
  return h("select", props, options.map(([v, label]) =>
    h("option", { value: v, selected: v === value }, label ?? v)));
}

export const table = (head, body) =>
  h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), body);

// An error as the user should read it: the problem's title, detail and failing fields.
export function problemBox(err) {
  if (!err.problem) console.error(err);
  const problem = err.problem || { title: "The dashboard failed", detail: String(err) };
  const box = h("div", { class: "problem", role: "alert" },
    h("strong", {}, problem.title || "Error", err.status ? ` (${err.status})` : ""));
  if (problem.detail && problem.detail !== problem.title) box.append(h("p", {}, problem.detail));
  if (Array.isArray(problem.errors)) box.append(h("ul", {}, problem.errors.map(describe)));
  if (err.status === 503) {
    const wait = err.retryAfter ? `in ${err.retryAfter} s` : "in a moment";
    box.append(h("p", {}, `The service is busy or a dependency is down: retry ${wait}.`));
  }
  return box;
}

function describe(error) {
  if (error && error.field !== undefined) {
    return h("li", {}, h("code", {}, String(error.field).replace(/^(?:query|path)\./, "")), `: ${error.message}`);
  }
  if (error && Array.isArray(error.errors)) {
    return h("li", {}, `item ${error.index}`, h("ul", {}, error.errors.map(describe)));
  }
  return h("li", {}, jsonText(error));
}

// A list read page by page with the API's cursor into `rows` (a tbody, a list): `load(cursor)`
// fetches a page, `show(page)` returns its rows; the button asks for the next page.
export function paged(ctx, rows, { load, show, more = "More", empty = "Nothing to show." }) {
  const status = h("div");
  const button = h("button", { type: "button", class: "more", hidden: true }, more);
  let cursor = null;
  let shown = 0;
  async function next() {
    button.disabled = true;
    status.replaceChildren();
    try {
      const page = await load(cursor);
      const items = show(page);
      rows.append(...items);
      shown += items.length;
      cursor = page.next_cursor;
      button.hidden = !cursor;
      if (!shown) status.append(h("p", { class: "muted" }, empty));
    } catch (err) {
      ctx.report(status, err);
    }
    button.disabled = false;
  }
  button.addEventListener("click", next);
  next();
  return h("div", { class: "pager" }, status, button);
}
