// Journey analytics: stage distribution, funnel, channel × stage touchpoints, attribution
// and abandoned carts, each a form over the analytics API and its answer drawn as tables with
// bars. The forms' values are kept while the tab is open.
import * as api from "./api.js";
import {
  TYPES, bar, count, customerLink, dash, dateValue, dayStart, field, fmtDuration, fmtNumber, fmtShare,
  fmtTime, h, jsonText, paged, select, table,
} from "./dom.js";

const DAY = 86400;
// The last 30 days, today included: until is the start of tomorrow (windows exclude it).
const state = {
  window: { since: dateValue(-29), until: dateValue(1) },
  stages: { since: "", until: "" },
  funnel: { skipped: new Set(), within: "" },
  touchpoints: { type: "", machine: false },
  attribution: { model: "last", dimension: "channel", on: "stage", stage: "purchase", event: "", lookback: 30, halfLife: 7, limit: 50 },
  carts: { idle: 3600, since: "" },
};

const TABS = {
  stages: ["Stages", stagesTab],
  funnel: ["Funnel", funnelTab],
  touchpoints: ["Touchpoints", touchpointsTab],
  attribution: ["Attribution", attributionTab],
  "abandoned-carts": ["Abandoned carts", cartsTab],
};

export function analyticsView(view, ctx, tab) {
  view.append(h("h1", {}, "Analytics"), h("nav", { class: "tabs" }, Object.entries(TABS).map(([name, [label]]) =>
    h("a", { href: `#/analytics/${name}`, class: name === tab ? "current" : "" }, label))));
  if (!TABS[tab]) {
    view.append(h("p", {}, "No such analysis."));
    return;
  }
  const [controls, run] = TABS[tab][1](ctx);
  const results = h("div", { class: "card results" });
  const form = h("form", { class: "card row" }, controls, h("button", { type: "submit" }, "Show"));
  // Each answer into its own box: one that arrives after a later request's is dropped with
  // its box, not shown for values the form no longer holds.
  async function show() {
    const answer = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    results.replaceChildren(answer);
    try {
      answer.replaceChildren(await run());
    } catch (err) {
      ctx.report(answer, err);
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    show();
  });
  view.append(form, results);
  show();
}

// An input bound to `state[group][key]`.
function bound(group, key, props = {}) {
  const input = h("input", { ...props, value: state[group][key] });
  input.addEventListener("input", () => { state[group][key] = input.type === "number" ? Number(input.value) : input.value; });
  return input;
}

function boundSelect(group, key, options) {
  const control = select(options, state[group][key]);
  control.addEventListener("change", () => { state[group][key] = control.value; });
  return control;
}

function windowControls() {
  const since = bound("window", "since", { type: "date", required: true });
  const until = bound("window", "until", { type: "date", required: true });
  const preset = (days) => h("button", {
    type: "button",
    class: "link",
    onclick(e) {
      state.window = { since: dateValue(1 - days), until: dateValue(1) };
      since.value = state.window.since;
      until.value = state.window.until;
      e.target.form.requestSubmit();
    },
  }, `${days} d`);
  return [field("Since", since), field("Until (excluded)", until), h("span", { class: "presets" }, "Last ", [7, 30, 90, 365].map(preset))];
}

// What a form's values cannot ask the API, said where its answer would be.
const unasked = (text) => h("p", { class: "problem", role: "alert" }, text);

const windowQuery = () => ({ since: dayStart(state.window.since), until: dayStart(state.window.until) });
const stageLabel = (stage) => stage ?? "no stage";

function stagesTab() {
  const controls = [
    field("Last seen since", bound("stages", "since", { type: "date" })),
    field("Last seen until (excluded)", bound("stages", "until", { type: "date" })),
  ];
  return [controls, async () => {
    const data = await api.stages({ last_seen_since: dayStart(state.stages.since), last_seen_until: dayStart(state.stages.until) });
    return h("div", {},
      h("p", {}, `${count(data.customers, "customer")}, model ${data.model}.`),
      h("div", { class: "grid" }, distribution("By current stage", data.current), distribution("By furthest stage", data.furthest)));
  }];
}

function distribution(title, d) {
  const top = Math.max(...d.stages.map((s) => s.customers), 1);
  const row = (label, n, share) => h("tr", {}, h("td", {}, label), h("td", { class: "num" }, fmtNumber(n)),
    h("td", { class: "num" }, fmtShare(share)), h("td", { class: "wide" }, bar(n / top)));
  return h("div", {}, h("h2", {}, title), table(["Stage", "Customers", "Share", ""], h("tbody", {},
    d.stages.map((s) => row(s.stage, s.customers, s.share)),
    h("tr", { class: "muted" }, h("td", {}, "no stage yet"), h("td", { class: "num" }, fmtNumber(d.no_stage)), h("td", {}), h("td", {})),
    d.other_stage ? h("tr", { class: "muted" }, h("td", {}, "another model's stage"), h("td", { class: "num" }, fmtNumber(d.other_stage)), h("td", {}), h("td", {})) : null)));
}

function funnelTab(ctx) {
  const skipped = state.funnel.skipped;
  const boxes = ctx.model.stages.map((stage) => {
    const box = h("input", { type: "checkbox", checked: !skipped.has(stage) });
    box.addEventListener("change", () => (box.checked ? skipped.delete(stage) : skipped.add(stage)));
    return h("label", { class: "check" }, box, stage);
  });
  const controls = [...windowControls(), field("Steps", h("span", { class: "checks" }, boxes)),
    field("Within (days)", bound("funnel", "within", { type: "number", min: 0, max: 366, step: "any", placeholder: "no limit" }))];
  return [controls, async () => {
    const steps = ctx.model.stages.filter((s) => !skipped.has(s));
    // None checked would ask for the default, every stage: not what the form shows.
    if (steps.length < 2) return unasked("Check two steps or more.");
    const within = Number(state.funnel.within);
    const data = await api.funnel({
      ...windowQuery(),
      stages: skipped.size ? steps : undefined,
      within: within > 0 ? within * DAY : undefined,
    });
    const first = data.steps[0]?.customers || 1;
    return h("div", {},
      h("p", { class: "muted" }, "Customers who first entered the first step in the window, then each later step in order."),
      table(["Step", "Customers", "", "From previous", "From first", "Median time", "p90 time"], h("tbody", {}, data.steps.map((s) =>
        h("tr", {}, h("td", {}, s.stage), h("td", { class: "num" }, fmtNumber(s.customers)), h("td", { class: "wide" }, bar(s.customers / first)),
          h("td", { class: "num" }, fmtShare(s.conversion_from_previous)), h("td", { class: "num" }, fmtShare(s.conversion_from_first)),
          h("td", { class: "num" }, fmtDuration(s.median_seconds_from_previous)), h("td", { class: "num" }, fmtDuration(s.p90_seconds_from_previous)))))));
  }];
}

function touchpointsTab() {
  const machine = h("input", { type: "checkbox", checked: state.touchpoints.machine });
  machine.addEventListener("change", () => { state.touchpoints.machine = machine.checked; });
  const controls = [...windowControls(), field("Type", boundSelect("touchpoints", "type", [["", "any"], ...TYPES.map((t) => [t])])),
    h("label", { class: "check" }, machine, "machine activity too")];
  return [controls, async () => {
    const data = await api.touchpoints({ ...windowQuery(), type: state.touchpoints.type, include_machine: state.touchpoints.machine || undefined });
    const cells = new Map(data.cells.map((c) => [`${c.channel} ${c.stage}`, c]));
    const top = Math.max(...data.cells.map((c) => c.events), 1);
    const cell = (c, heat) => h("td", { class: heat ? `num heat-${Math.ceil((c.events / top) * 5)}` : "num total" },
      fmtNumber(c.events), h("small", {}, count(c.customers, "customer")));
    return h("div", {},
      h("p", { class: "muted" }, "Events by channel and by the stage the customer was in once each was applied; distinct customers below."),
      h("div", { class: "scroll" }, table(["Channel", ...data.stages.map(stageLabel), "All stages"], h("tbody", {},
        data.channels.map((channel, i) => h("tr", {}, h("th", {}, channel),
          data.stages.map((stage) => cell(cells.get(`${channel} ${stage}`) ?? { events: 0, customers: 0 }, true)), cell(data.by_channel[i], false))),
        h("tr", {}, h("th", {}, "All channels"), data.by_stage.map((s) => cell(s, false)), cell(data.total, false))))));
  }];
}

function attributionTab(ctx) {
  // The API's default, purchase, where the model has it; else the user picks.
  if (!ctx.model.stages.includes(state.attribution.stage)) state.attribution.stage = ctx.model.stages[0];
  const on = boundSelect("attribution", "on", [["stage", "entering stage"], ["event", "event named"]]);
  const stage = boundSelect("attribution", "stage", ctx.model.stages.map((s) => [s]));
  const event = bound("attribution", "event", { placeholder: "Order Completed", maxLength: 200 });
  const toggle = () => { stage.hidden = on.value !== "stage"; event.hidden = !stage.hidden; };
  on.addEventListener("change", toggle);
  toggle();
  const controls = [...windowControls(),
    field("Model", boundSelect("attribution", "model", [["first"], ["last"], ["linear"], ["time_decay", "time decay"]])),
    field("Credit", boundSelect("attribution", "dimension", [["channel"], ["campaign.source", "utm_source"], ["campaign.medium", "utm_medium"], ["campaign.name", "utm_campaign"]])),
    field("Conversion", h("span", {}, on, stage, event)),
    field("Lookback (days)", bound("attribution", "lookback", { type: "number", min: 1, max: 90, step: "any", required: true })),
    field("Half-life (days, time decay)", bound("attribution", "halfLife", { type: "number", min: 0.001, max: 366, step: "any", required: true })),
    field("Values", bound("attribution", "limit", { type: "number", min: 1, max: 500, required: true }))];
  return [controls, async () => {
    const s = state.attribution;
    // No name would ask for the default, entering purchase: not what the form shows.
    if (s.on === "event" && !s.event.trim()) return unasked("Name the conversion event.");
    const data = await api.attribution({
      ...windowQuery(), model: s.model, dimension: s.dimension, limit: s.limit,
      stage: s.on === "stage" ? s.stage : undefined, event: s.on === "event" ? s.event : undefined,
      lookback: s.lookback * DAY, half_life: s.model === "time_decay" ? s.halfLife * DAY : undefined,
    });
    const whole = data.attributed || 1;
    const row = (label, credit, touchpoints) => h("tr", {}, h("td", {}, label),
      h("td", { class: "num" }, credit.toFixed(2)), h("td", { class: "num" }, fmtShare(credit / whole)),
      h("td", { class: "wide" }, bar(credit / whole)), h("td", { class: "num" }, fmtNumber(touchpoints)));
    return h("div", {},
      h("p", {}, `${count(data.conversions, "conversion")} (${data.stage ? `entering ${data.stage}` : data.event}): `,
        `${fmtNumber(data.attributed)} attributed, ${fmtNumber(data.unattributed)} without a touchpoint in the lookback.`),
      table(["Value", "Credit", "Share", "", "Touchpoints"], h("tbody", {},
        data.values.map((v) => row(v.value, v.credit, v.touchpoints)),
        data.other.values ? row(`${fmtNumber(data.other.values)} others`, data.other.credit, data.other.touchpoints) : null)),
      data.values.length ? null : h("p", { class: "muted" }, "Nothing to credit in this window."));
  }];
}

const IDLE = [[900, "15 minutes"], [3600, "1 hour"], [4 * 3600, "4 hours"], [DAY, "1 day"], [3 * DAY, "3 days"], [7 * DAY, "7 days"]];

function cartsTab(ctx) {
  const idle = select(IDLE.map(([s, label]) => [String(s), label]), String(state.carts.idle));
  idle.addEventListener("change", () => { state.carts.idle = Number(idle.value); });
  const controls = [field("Idle for at least", idle), field("Active since", bound("carts", "since", { type: "date", placeholder: "30 days ago" }))];
  return [controls, async () => {
    const rows = h("tbody");
    let asOf; // every page from the moment of the first
    const pager = paged(ctx, rows, {
      async load(cursor) {
        const page = await api.abandonedCarts({ idle: state.carts.idle, since: dayStart(state.carts.since), as_of: asOf, cursor, limit: 50 });
        asOf = page.as_of;
        return page;
      },
      show: (page) => page.items.map(cart),
      more: "More carts",
      empty: "No abandoned carts.",
    });
    return h("div", {}, table(["Last activity", "Customer", "Event", "Channel", "Value", "Products"], rows), pager);
  }];
}

function cart(c) {
  const names = c.products.map((p) => jsonText(p.name ?? p.sku ?? p.product_id ?? "a product"));
  const listed = names.slice(0, 3).join(", ") + (names.length > 3 ? ` and ${names.length - 3} more` : "");
  return h("tr", {}, h("td", {}, fmtTime(c.occurred_at)), h("td", {}, customerLink(c.customer_id)),
    h("td", {}, c.event), h("td", {}, c.channel),
    h("td", { class: "num" }, c.value === null ? dash : `${c.value.toLocaleString()} ${c.currency ?? ""}`),
    h("td", {}, listed || dash));
}
