// One customer: the profile, the journey (stage changes) and the timeline, each paged with
// the API's cursors; and the page through all of a customer's identities.
import * as api from "./api.js";
import {
  CHANNELS, TYPES, bar, customerLink, dash, field, fmtDuration, fmtNumber, fmtTime, h,
  jsonText, localInstant, paged, select, table,
} from "./dom.js";

export async function customerView(view, ctx, id) {
  const profile = await api.profile(id);
  view.append(h("h1", {}, "Customer ", h("span", { class: "mono" }, profile.id)));
  if (profile.merged) {
    view.append(h("p", { class: "note" }, "The id ", h("span", { class: "mono" }, profile.requested_id),
      " was merged into this customer: everything below is the survivor's."));
  }
  view.append(
    profileSection(profile),
    h("div", { class: "columns" }, journeySection(ctx, profile.id), timelineSection(ctx, profile.id)),
  );
}

const fact = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));

function profileSection(p) {
  const total = p.event_count || 1;
  const channels = Object.entries(p.channel_counts).sort((a, b) => b[1] - a[1]);
  const counts = Object.entries(p.identity_counts).map(([kind, n]) => `${kind} ${fmtNumber(n)}`);
  const traits = Object.entries(p.traits);
  return h("section", { class: "card profile" },
    h("dl", { class: "facts" },
      fact("Current stage", p.stage ?? dash), fact("Furthest stage", p.furthest_stage ?? dash),
      fact("First seen", fmtTime(p.first_seen_at)), fact("Last seen", fmtTime(p.last_seen_at)),
      fact("Events", fmtNumber(p.event_count))),
    h("div", { class: "grid" },
      h("div", {}, h("h2", {}, "Events by channel"),
        table(["Channel", "Events", ""], h("tbody", {}, channels.map(([channel, n]) =>
          h("tr", {}, h("td", {}, channel), h("td", { class: "num" }, fmtNumber(n)), h("td", {}, bar(n / total))))))),
      h("div", {}, h("h2", {}, "Identities"),
        table(["Kind", "Value"], h("tbody", {}, p.identities.map((i) =>
          h("tr", {}, h("td", {}, i.kind), h("td", { class: "mono" }, i.value))))),
        h("p", { class: "muted" }, p.identities_truncated
          ? `Showing ${fmtNumber(p.identities.length)} of ${fmtNumber(p.identity_count)}: ${counts.join(", ")}. `
          : `${fmtNumber(p.identity_count)} in all. `,
        h("a", { href: `#/customers/${encodeURIComponent(p.id)}/identities` }, "Page through all identities"))),
      h("div", {}, h("h2", {}, "Traits"), traits.length
        ? table(["Trait", "Value"], h("tbody", {}, traits.map(([name, value]) =>
          h("tr", {}, h("td", {}, name), h("td", {}, h("span", { class: "value" }, jsonText(value)))))))
        : h("p", { class: "muted" }, "No traits."))));
}

function journeySection(ctx, id) {
  const state = h("p", { class: "muted" });
  const list = h("ol", { class: "journey" });
  return h("section", { class: "card" }, h("h2", {}, "Journey"), state, list, paged(ctx, list, {
    load: (cursor) => api.journey(id, { cursor, limit: 50 }),
    show(page) {
      state.replaceChildren(`Model ${page.model}: now in ${page.current_stage ?? dash}, furthest ${page.furthest_stage ?? dash}.`,
        page.up_to_date ? "" : " Computed by an earlier model: `percorso journey rebuild` recomputes it.");
      return page.transitions.map(transition);
    },
    more: "Later changes",
    empty: "No change of stage yet.",
  }));
}

function transition(t) {
  const stayed = t.exited_at
    ? `for ${fmtDuration((Date.parse(t.exited_at) - Date.parse(t.entered_at)) / 1000)}`
    : "current";
  return h("li", {},
    h("time", {}, fmtTime(t.entered_at)),
    h("span", { class: "stage muted-stage" }, t.from_stage ?? "start"), " → ", h("span", { class: "stage" }, t.to_stage),
    h("span", { class: "muted" }, ` ${stayed} · ${t.channel}`, t.event ? ` · ${t.event}` : "", t.rule ? ` · rule ${t.rule}` : ""));
}

function timelineSection(ctx, id) {
  const channel = select([["", "any"], ...CHANNELS.map((c) => [c])], "");
  const type = select([["", "any"], ...TYPES.map((t) => [t])], "");
  const stage = select([["", "any"], ...ctx.model.stages.map((s) => [s])], "");
  const since = h("input", { type: "datetime-local" });
  const until = h("input", { type: "datetime-local" });
  const results = h("div");
  const filters = h("form", { class: "row" }, field("Channel", channel), field("Type", type),
    field("Stage", stage), field("Since", since), field("Until", until),
    h("button", { type: "submit" }, "Filter"));
  function load() {
    const query = {
      channel: channel.value, type: type.value, stage: stage.value, limit: 50,
      since: localInstant(since.value), until: localInstant(until.value),
    };
    const list = h("ol", { class: "events" });
    results.replaceChildren(list, paged(ctx, list, {
      load: (cursor) => api.timeline(id, { ...query, cursor }),
      show: (page) => page.items.map(event),
      more: "Older events",
      empty: "No events match.",
    }));
  }
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  load();
  return h("section", { class: "card" }, h("h2", {}, "Timeline"), h("p", { class: "muted" }, "Newest first."), filters, results);
}

function event(e) {
  const details = { properties: e.properties, context: e.context, message_id: e.message_id, event_id: e.event_id, received_at: e.received_at };
  return h("li", {}, h("details", {},
    h("summary", {},
      h("time", {}, fmtTime(e.occurred_at)), h("span", { class: "chip" }, e.channel), h("span", { class: "chip" }, e.type),
      h("strong", {}, e.event ?? e.type), e.stage ? h("span", { class: "stage" }, e.stage) : null,
      e.flags.map((f) => h("span", { class: "chip flag" }, f))),
    h("pre", {}, jsonText(details))));
}

export function identitiesView(view, ctx, id) {
  const kind = h("input", { placeholder: "any kind", maxLength: 64 });
  const results = h("div");
  const form = h("form", { class: "row" }, field("Kind", kind), h("button", { type: "submit" }, "Filter"));
  function load() {
    const rows = h("tbody");
    results.replaceChildren(table(["Kind", "Value"], rows), paged(ctx, rows, {
      load: (cursor) => api.identities(id, { kind: kind.value.trim(), cursor, limit: 100 }),
      show: (page) => page.items.map((i) => h("tr", {}, h("td", {}, i.kind), h("td", { class: "mono" }, i.value))),
      more: "More identities",
      empty: "No identities.",
    }));
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  load();
  view.append(h("p", {}, customerLink(id, "← Back to the customer")), h("h1", {}, "Identities"),
    h("section", { class: "card" }, form, results));
}
