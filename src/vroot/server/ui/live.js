// #/live: the server's event stream (verdict changes, enrollments, revocations, migrations, moves)
// as it arrives; the feed runs from sign-in on, so the events since then are all here.
import { agentLink, el, replace, time } from "./dom.js";

export function livePage({ target, shared }) {
  const list = el("ol", { id: "events", class: "events", reversed: true });
  const filter = el("input", { id: "event-filter", type: "search", placeholder: "filter: kind or agent",
                               "aria-label": "filter events" });
  const state = el("span", { id: "live-state" });
  const matches = (e) => !filter.value || `${e.kind} ${e.agent_id ?? ""}`.includes(filter.value.trim());

  function row(e) {
    return el("li", { class: `event kind-${(e.kind ?? "").replaceAll(".", "-")}`, dataset: { kind: e.kind, agent: e.agent_id ?? "" } },
      el("span", { class: "muted mono" }, `#${e.id} ${time(e.created_at)}`), " ",
      el("strong", {}, e.kind), " ", e.agent_id ? agentLink(e.agent_id) : "", " ",
      el("span", { class: "event-summary" }, summary(e)), " ",
      el("details", { class: "small" }, el("summary", {}, "body"), el("code", {}, JSON.stringify(e.body ?? {}))));
  }

  function render() {
    state.textContent = `stream ${shared.feedState}; ${shared.events.length} events since sign-in`;
    state.dataset.state = shared.feedState;
    replace(list, shared.events.filter(matches).slice().reverse().map(row));
  }

  const listener = (e) => (e.kind === "feed.state" ? render() : (matches(e) ? render() : null));
  shared.listeners.add(listener);
  filter.addEventListener("input", render);
  replace(target, el("h1", {}, "Live events"), el("p", {}, state, " ", filter),
          el("p", { class: "muted small" }, "From GET /v1/events (server-sent events), newest first; the page updates as they arrive."),
          list);
  return { refresh: render, stop: () => shared.listeners.delete(listener) };
}

/** One line for an event's body: a verdict's change, a migration's route and step times, a move. */
function summary(e) {
  const b = e.body ?? {};
  if (e.kind === "verdict.changed") return `${b.previous ?? "none"} → ${b.verdict} (result ${b.result_id})`;
  if ((e.kind ?? "").startsWith("migration.") && b.source) {
    const steps = (b.steps ?? []).map((s) => `${s.name} ${s.ms === null ? "…" : `${Math.round(s.ms)} ms`}`).join(", ");
    return `${b.source} → ${b.destination}: ${b.state}${steps ? ` (${steps})` : ""}${b.error ? `: ${b.error}` : ""}`;
  }
  if (e.kind === "agent.moved") return `${b.from} → ${b.to}`;
  const text = JSON.stringify(b);
  return text.length > 160 ? `${text.slice(0, 160)}…` : text;
}
