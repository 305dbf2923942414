// #/migrations: start a migration (a VM, and a destination or the controller's best), with the
// placement that says why each other host is refused; every migration with its steps and times.
import { ApiError, api } from "./api.js";
import { age, agentLink, el, errorBox, ms, replace, stateBadge, time } from "./dom.js";

const REFRESH_MS = 5000;
const enc = encodeURIComponent;

export function migrationsPage({ target, onAuthError }) {
  let seq = 0;
  const timer = setInterval(() => refresh(), REFRESH_MS);
  const form = { vm: null, to: "", placement: null, placementError: null, message: null };
  const formBox = el("section", { class: "card", id: "start-migration" });
  const listBox = el("section", { id: "migration-list" });
  let agents = [];
  let started = false;
  let placementSeq = 0;

  async function refresh() {
    const mine = ++seq;
    let migrations;
    try {
      [{ agents }, { migrations }] = await Promise.all([api("/v1/agents"), api("/v1/migrations?limit=50")]);
    } catch (err) {
      onAuthError(err);
      if (mine === seq) replace(listBox, errorBox(err));
      return;
    }
    if (mine !== seq) return;
    if (!started) {
      started = true;
      replace(target, el("h1", {}, "Migrations"), formBox, listBox);
      renderForm();
      checkPlacement();
    }
    replace(listBox, renderList(migrations));
  }

  async function checkPlacement() {
    const mine = ++placementSeq; // only the answer to the latest choice is shown
    form.placement = form.placementError = null;
    renderForm();
    if (!form.vm) return;
    const query = form.to ? `?to=${enc(form.to)}` : "";
    let placement = null;
    let error = null;
    try {
      placement = await api(`/v1/placement/${enc(form.vm)}${query}`);
    } catch (err) {
      onAuthError(err);
      error = err;
    }
    if (mine !== placementSeq) return;
    form.placement = placement;
    form.placementError = error;
    renderForm();
  }

  async function start() {
    form.message = el("p", { class: "muted" }, "requesting…");
    renderForm();
    try {
      const body = { vm_uuid: form.vm, ...(form.to ? { to: form.to } : {}) };
      const m = await api("/v1/migrations", { method: "POST", body });
      form.message = el("p", { id: "start-result", class: "ok", dataset: { migration: m.id } },
                        `Migration ${m.id} started: ${m.source} → ${m.destination} (${m.state}).`);
    } catch (err) {
      onAuthError(err);
      form.message = el("div", { id: "start-result", class: "error", role: "alert" },
                        err instanceof ApiError && err.status === 409 ? `Refused: ${err.detail}` : err.message);
    }
    await checkPlacement();
    await refresh();
  }

  function renderForm() {
    const guests = agents.filter((a) => a.kind === "guest" && a.state === "active");
    const hosts = agents.filter((a) => a.kind === "host" && a.state === "active");
    if (form.vm === null && guests.length) form.vm = guests[0].id.replace(/^vm:/, "");
    const vmSelect = el("select", { id: "mig-vm", name: "vm" }, guests.map((g) => {
      const uuid = g.id.replace(/^vm:/, "");
      return el("option", { value: uuid, selected: uuid === form.vm }, `${g.id} (on ${g.host_id ?? "?"})`);
    }));
    const toSelect = el("select", { id: "mig-to", name: "to" },
      el("option", { value: "", selected: form.to === "" }, "best host (the controller chooses)"),
      hosts.map((h) => el("option", { value: h.id, selected: h.id === form.to }, h.id)));
    vmSelect.addEventListener("change", () => { form.vm = vmSelect.value; form.message = null; checkPlacement(); });
    toSelect.addEventListener("change", () => { form.to = toSelect.value; form.message = null; checkPlacement(); });
    const go = el("button", { id: "mig-start", type: "submit", disabled: !form.vm }, "Start migration");
    const f = el("form", { class: "inline" }, el("label", {}, "VM ", vmSelect), el("label", {}, "to ", toSelect), go);
    f.addEventListener("submit", (e) => { e.preventDefault(); start(); });
    replace(formBox, el("h2", {}, "Start a migration"),
      guests.length ? f : el("p", { class: "muted" }, "No enrolled VM to move."),
      form.message, placementView());
  }

  function placementView() {
    if (form.placementError) return el("div", { id: "placement" }, errorBox(form.placementError));
    const p = form.placement;
    if (!p) return form.vm ? el("p", { id: "placement", class: "muted" }, "placement: checking…") : null;
    return el("div", { id: "placement", dataset: { vm: p.vm_uuid, to: form.to, destination: p.destination ?? "" } },
      el("p", {}, "Placement now: ", p.destination ? ["→ ", agentLink(p.destination)] : el("strong", {}, "no host qualifies"),
         el("span", { class: "muted" }, ` (from ${p.source}; candidates: ${p.candidates.join(", ") || "none"})`)),
      p.refusals.length ? el("table", { class: "refusals" },
        el("thead", {}, el("tr", {}, ["refused host", "rule", "why"].map((h) => el("th", {}, h)))),
        el("tbody", {}, p.refusals.map((r) => el("tr", { dataset: { host: r.host, code: r.code } },
          el("td", {}, r.host), el("td", {}, el("code", {}, r.code)), el("td", {}, r.reason))))) : null,
      el("p", { class: "muted small" }, p.explanation));
  }

  return { refresh, stop: () => { seq += 1; clearInterval(timer); } };
}

function total(m) {
  const done = m.steps.filter((s) => s.ms !== null);
  return done.length ? done.reduce((sum, s) => sum + s.ms, 0) : null;
}

function renderList(migrations) {
  if (migrations.length === 0) return el("p", { class: "muted" }, "No migration yet.");
  return migrations.map((m) => el("article", { class: "card migration", dataset: { migration: m.id, state: m.state } },
    el("div", { class: "host-head" },
      el("h2", {}, `vm:${m.vm_uuid}`), stateBadge(m.state),
      el("span", {}, agentLink(m.source), " → ", agentLink(m.destination)),
      el("span", { class: "muted" }, `${m.trigger} · ${age(m.created_at)} · total ${ms(total(m))}`)),
    m.error ? el("p", { class: "error" }, m.error) : null,
    el("ol", { class: "steps" }, m.steps.map((s) => el("li", { class: s.finished_at ? "step done" : "step open",
                                                             dataset: { step: s.name } },
      el("strong", {}, s.name), " ", el("span", { class: "step-ms" }, ms(s.ms)),
      el("div", { class: "muted small" }, time(s.started_at)), s.detail ? el("div", { class: "small" }, s.detail) : null))),
    el("p", { class: "muted small mono" }, `migration ${m.id}`)));
}
