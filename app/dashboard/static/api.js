// Every request the dashboard makes, in this one module: each calls `get` or `post` with its
// path as the OpenAPI document spells it, and a test checks those operations against the
// document.

// Where the API is: the page's URL less `dashboard/` (the page is served only there, its
// files beside it). `/` at the origin's root; `/percorso/` behind a reverse proxy that serves
// Percorso under that path, which the page never has to be told.
const ROOT = new URL("../", window.location.href);

const TOKEN_KEY = "percorso.dashboard.token";

// The token lives in this tab's sessionStorage only: never in a URL, never logged; closing
// the tab forgets it.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (secret) => sessionStorage.setItem(TOKEN_KEY, secret),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// An error answer (a problem+json document), or no answer (status 0): the API out of reach,
// or a token no request can carry.
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }

  // The token is missing, unknown, revoked or may not read: sign in again.
  get signedOut() {
    return this.status === 401 || this.status === 403;
  }
}

// What a header cannot hold, on which fetch throws before sending anything: a character
// beyond U+00FF (a curly quote or a zero-width space pasted along), NUL, CR or LF. Percorso's
// tokens are `pr_` or `pa_` then letters, digits, `-` and `_` (app/auth/keys.py); any other
// mistake the API refuses itself, with its reason.
const UNSENDABLE = /[\0\n\r]|[^\0-\xff]/u;

function unsendable(secret) {
  const found = UNSENDABLE.exec(secret);
  if (!found) return null;
  const code = found[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return new ApiError(0, {
    title: "Not a Percorso token",
    detail: `Character ${found.index + 1} of the token, ${found[0]} (U+${code}), cannot be in a `
      + "Percorso token, and a browser cannot send it: a token is pr_ or pa_ then letters, "
      + "digits, - and _. Copy it again as it was printed.",
  });
}

async function request(method, template, path, query, json, secret = token.get()) {
  const refused = unsendable(secret);
  if (refused) throw refused;
  // `.` + the path as the document spells it (`/v1/…`): relative to the API's root.
  const filled = template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(path[name]));
  const url = new URL(`.${filled}`, ROOT);
  for (const [name, value] of Object.entries(query || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, item);
    }
  }
  const headers = { authorization: `Bearer ${secret}`, accept: "application/json" };
  if (json !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, {
      title: "The API could not be reached",
      detail: "Check that Percorso is running and the network is up, then retry.",
    });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const problem = body && typeof body === "object" ? body : { title: response.statusText };
    throw new ApiError(response.status, problem, response.headers.get("retry-after"));
  }
  return body;
}

const get = (template, path, query, secret) =>
  request("GET", template, path, query, undefined, secret);
// What must stay out of URLs, which proxies' access logs keep (an email, a phone), goes in
// a POST's JSON body.
const post = (template, json) => request("POST", template, {}, {}, json);

const customer = (id) => ({ customer_id: id });

export const journeyModel = (secret) => get("/v1/journey/model", {}, {}, secret);
export const lookup = (kind, value) => post("/v1/customers/lookup", { kind, value });
export const profile = (id) => get("/v1/customers/{customer_id}", customer(id));
export const identities = (id, query) =>
  get("/v1/customers/{customer_id}/identities", customer(id), query);
export const timeline = (id, query) =>
  get("/v1/customers/{customer_id}/timeline", customer(id), query);
export const journey = (id, query) =>
  get("/v1/customers/{customer_id}/journey", customer(id), query);
export const stages = (query) => get("/v1/analytics/stages", {}, query);
export const funnel = (query) => get("/v1/analytics/funnel", {}, query);
export const touchpoints = (query) => get("/v1/analytics/touchpoints", {}, query);
export const attribution = (query) => get("/v1/analytics/attribution", {}, query);
export const abandonedCarts = (query) => get("/v1/analytics/abandoned-carts", {}, query);
