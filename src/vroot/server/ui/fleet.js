// #/fleet: every host with its verdict, its age and its findings; under each host its VMs (each a
// vTM on that host) with their joint verdicts, which name the host that vouched for them.
import { api, latestResult } from "./api.js";
import { age, agentLink, el, errorBox, replace, verdictBadge } from "./dom.js";

const REFRESH_MS = 10000;

export function fleetPage({ target, onAuthError }) {
  let seq = 0;
  const timer = setInterval(() => refresh(), REFRESH_MS);

  async function load() {
    const { agents } = await api("/v1/agents");
    const results = await Promise.all(agents.map((a) => latestResult(a.id)));
    return agents.map((agent, i) => ({ agent, result: results[i] }));
  }

  async function refresh() {
    const mine = ++seq;
    let rows;
    try {
      rows = await load();
    } catch (err) {
      onAuthError(err);
      if (mine === seq) replace(target, el("h1", {}, "Fleet"), errorBox(err));
      return;
    }
    if (mine !== seq) return;
    replace(target, render(rows));
  }

  return { refresh, stop: () => { seq += 1; clearInterval(timer); } };
}

function counts(rows) {
  const out = {};
  for (const { result } of rows) {
    const v = result?.verdict ?? "not attested";
    out[v] = (out[v] ?? 0) + 1;
  }
  return Object.entries(out).map(([v, n]) => `${n} ${v}`).join(", ");
}

function render(rows) {
  const hosts = rows.filter((r) => r.agent.kind === "host");
  const guests = rows.filter((r) => r.agent.kind === "guest");
  const hostIds = new Set(hosts.map((h) => h.agent.id));
  const orphans = guests.filter((g) => !hostIds.has(g.agent.host_id));
  return [
    el("h1", {}, "Fleet"),
    el("p", { class: "summary" }, `${hosts.length} hosts (${counts(hosts) || "none"}), `,
       `${guests.length} VMs (${counts(guests) || "none"}). `,
       el("span", { class: "muted" }, "A VM's verdict is joint: it is trusted only if its host was trusted in the same deep quote.")),
    hosts.length === 0 ? el("p", { class: "muted" }, "No host has enrolled yet (vroot host enroll).") : null,
    hosts.map((h) => hostCard(h, guests.filter((g) => g.agent.host_id === h.agent.id))),
    orphans.length ? el("section", { class: "card" }, el("h2", {}, "VMs on no known host"), vmTable(orphans)) : null,
  ];
}

function findingsCell(result) {
  if (!result) return "";
  const n = result.findings.length;
  if (n === 0) return el("span", { class: "muted" }, "no findings");
  const ids = [...new Set(result.findings.map((f) => f.id))];
  return el("span", { class: "findings-count", title: ids.join(", ") }, `${n} finding${n === 1 ? "" : "s"}: `,
            el("code", {}, ids.slice(0, 2).join(", ")), ids.length > 2 ? " …" : "");
}

function hostCard({ agent, result }, vms) {
  return el("section", { class: "card host", dataset: { agent: agent.id, verdict: result?.verdict ?? "none" } },
    el("div", { class: "host-head" },
      el("h2", {}, agentLink(agent.id)),
      verdictBadge(result?.verdict),
      el("span", { class: "age", title: result?.created_at ?? "" }, result ? `attested ${age(result.created_at)}` : ""),
      findingsCell(result),
      el("span", { class: "muted" }, `group ${agent.group}`, agent.zone ? ` · zone ${agent.zone}` : "",
         agent.state !== "active" ? ` · ${agent.state}` : "")),
    vms.length ? vmTable(vms) : el("p", { class: "muted" }, "No VM (vTM) on this host."));
}

function vmTable(vms) {
  return el("table", { class: "vms" },
    el("thead", {}, el("tr", {}, ["VM (vTM)", "verdict", "vouched for by", "attested", "findings", "vTM enrolled"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, vms.map(({ agent, result }) => el("tr", { dataset: { agent: agent.id, verdict: result?.verdict ?? "none" } },
      el("td", {}, agentLink(agent.id)),
      el("td", {}, verdictBadge(result?.verdict)),
      el("td", { class: "vouched" }, result?.host_id ? [result.host_id, " ", verdictBadge(result.host_verdict)] : "—"),
      el("td", {}, result ? age(result.created_at) : ""),
      el("td", {}, findingsCell(result)),
      el("td", {}, agent.state === "active" ? `vEK certified, ${age(agent.enrolled_at)}` : agent.state)))));
}
