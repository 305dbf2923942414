// #/agent/ID: one host or VM: its latest verdict with its findings, the boot chain as a timeline
// of measured stages, its result history, and "attest now".
import { ApiError, api, latestResult } from "./api.js";
import { buildChain, parsePolicyId } from "./chain.js";
import { age, agentLink, el, errorBox, replace, short, time, verdictBadge } from "./dom.js";

const ATTEST_DEADLINE_MS = 120000;
const enc = encodeURIComponent;

export function agentPage({ target, onAuthError }, agentId) {
  let seq = 0;
  let attestNote = null; // what the last "attest now" said, kept across refreshes
  let busy = false;

  async function load() {
    const agent = await api(`/v1/agents/${enc(agentId)}`);
    const [result, history] = await Promise.all([
      latestResult(agentId),
      api(`/v1/agents/${enc(agentId)}/results?limit=20`),
    ]);
    let manifest = null;
    let eventPcrs = null;
    let chainError = null;
    const policy = parsePolicyId(result?.policy_id);
    if (policy) {
      try {
        manifest = (await api(`/v1/baselines/${enc(policy.baseline)}/${policy.baselineVersion}`)).manifest;
        const current = await api(`/v1/policies/${enc(policy.group)}`).catch(() => null);
        if (current && current.version === policy.policyVersion) eventPcrs = current.manifest.event_pcrs ?? null;
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) throw err;
        chainError = err;
      }
    }
    return { agent, result, history: history.results, manifest, eventPcrs, policy, chainError };
  }

  async function refresh() {
    const mine = ++seq;
    let data;
    try {
      data = await load();
    } catch (err) {
      onAuthError(err);
      if (mine === seq) replace(target, el("h1", {}, agentId), errorBox(err));
      return;
    }
    if (mine !== seq) return;
    replace(target, render(data));
  }

  async function attestNow(button) {
    if (busy) return;
    busy = true;
    button.disabled = true;
    attestNote = el("span", { id: "attest-status", class: "muted" }, "challenging…");
    button.after(attestNote);
    try {
      let task = await api(`/v1/agents/${enc(agentId)}/attestations`, { method: "POST" });
      attestNote.textContent = `attestation task ${task.task_id} ${task.state}: waiting for the evidence…`;
      const deadline = Date.now() + ATTEST_DEADLINE_MS;
      while (!task.result && task.state !== "failed") {
        if (Date.now() > deadline) throw new Error(`no result for task ${task.task_id} yet; it goes on`);
        await new Promise((resolve) => setTimeout(resolve, 300));
        task = await api(`/v1/agents/${enc(agentId)}/attestations/${task.task_id}`);
      }
      const verdict = task.result?.verdict ?? "failed";
      attestNote = el("span", { id: "attest-status", dataset: { verdict } },
                      `attestation task ${task.task_id}: ${verdict}`);
    } catch (err) {
      onAuthError(err);
      attestNote = el("span", { id: "attest-status", class: "error" }, `attest now: ${err.message}`);
    } finally {
      busy = false;
    }
    await refresh();
  }

  function render({ agent, result, history, manifest, eventPcrs, policy, chainError }) {
    const guest = agent.kind === "guest";
    const button = el("button", { id: "attest-now", type: "button", disabled: busy }, "Attest now");
    button.addEventListener("click", () => attestNow(button));
    return [
      el("p", { class: "crumbs" }, el("a", { href: "#/fleet" }, "Fleet"), " / ", agentId),
      el("section", { class: "card", id: "agent-head", dataset: { agent: agent.id, verdict: result?.verdict ?? "none" } },
        el("div", { class: "host-head" },
          el("h1", {}, agent.id), verdictBadge(result?.verdict),
          el("span", { class: "age" }, result ? `attested ${age(result.created_at)} (${time(result.created_at)})` : ""),
          button, attestNote),
        el("dl", { class: "facts" },
          fact("kind", guest ? "VM (its vTM's guest attester)" : "host"), fact("state", agent.state),
          fact("group", agent.group), guest ? fact("runs on", agent.host_id ? agentLink(agent.host_id) : "—") : null,
          result?.host_id ? fact("vouched for by", [agentLink(result.host_id), " ", verdictBadge(result.host_verdict),
                                                    ` (result ${result.host_result_id})`]) : null,
          result ? fact("appraised under", result.policy_id ?? "— (not appraised)") : null,
          result ? fact("EAR status", result.status ?? "none") : null,
          result ? fact("trustworthiness", Object.entries(result.trustworthiness_vector)
                                             .map(([k, v]) => `${k} ${v}`).join(", ") || "—") : null,
          result?.rebooted ? fact("rebooted", "yes: the TM was reset since the previous result") : null)),
      findingsSection(result),
      chainSection({ agent, result, manifest, eventPcrs, policy, chainError }),
      historySection(history),
    ];
  }

  return { refresh, stop: () => { seq += 1; } };
}

const fact = (name, value) => [el("dt", {}, name), el("dd", {}, value)];

function findingsSection(result) {
  const findings = result?.findings ?? [];
  return el("section", { class: "card", id: "findings" },
    el("h2", {}, "Findings"),
    !result ? el("p", { class: "muted" }, "Not attested yet.")
    : findings.length === 0 ? el("p", { class: "muted" }, "None: the evidence matched the baseline and policy.")
    : el("table", {},
        el("thead", {}, el("tr", {}, ["finding", "severity", "PCR", "event", "expected", "seen", "message"].map((h) => el("th", {}, h)))),
        el("tbody", {}, findings.map((f) => el("tr", { dataset: { finding: f.id, pcr: f.pcr ?? "" } },
          el("td", {}, el("code", {}, f.id)), el("td", {}, f.severity), el("td", {}, f.pcr ?? ""),
          el("td", {}, f.event_index ?? ""), el("td", { class: "mono", title: f.expected ?? "" }, short(f.expected, 40)),
          el("td", { class: "mono", title: f.seen ?? "" }, short(f.seen, 28)), el("td", {}, f.message))))));
}

const STATUS_TEXT = {
  matched: "matched (no finding on its PCR)",
  replaced: "finding: another event was measured here",
  missing: "finding: not measured",
  "pcr-finding": "finding on its PCR",
  unchecked: "not checked by the policy",
};

function chainSection({ agent, result, manifest, eventPcrs, policy, chainError }) {
  const head = el("h2", {}, agent.kind === "guest" ? "Boot chain of the VM (in its vTM)" : "Boot chain");
  if (!result) return el("section", { class: "card", id: "chain" }, head, el("p", { class: "muted" }, "Not attested yet."));
  if (!policy) {
    return el("section", { class: "card", id: "chain" }, head,
      el("p", { class: "muted" }, "The latest result was not appraised against a baseline (see its findings)."));
  }
  if (chainError) return el("section", { class: "card", id: "chain" }, head, errorBox(chainError));
  const { items, general } = buildChain({ result, manifest, eventPcrs });
  return el("section", { class: "card", id: "chain" }, head,
    el("p", { class: "muted" }, `Stages: the reference values of baseline ${policy.baseline} ${policy.baselineVersion} `,
       "(the one this result was appraised under), in measurement order, each with the PCR value the quote covered. ",
       "vroot stores each attestation's verdict, findings and quoted PCRs, not its event log: a stage is matched when ",
       "the verified evidence raised no finding on its PCR; an event that matched no entry is shown where its finding puts it."),
    el("ol", { class: "timeline" }, items.map((item) => item.kind === "stage" ? stageItem(item) : unknownItem(item))),
    general.length ? el("p", {}, "Findings on no stage: ", general.map((f) => el("code", {}, f.id)).flatMap((c, i) => i ? [", ", c] : [c])) : null,
    agent.kind === "guest" && result.findings.some((f) => f.id.startsWith("host."))
      ? el("p", {}, "Findings of the host (", agentLink(result.host_id ?? agent.host_id ?? ""), ") are on its own timeline.") : null);
}

function stageItem(stage) {
  return el("li", { class: `stage stage-${stage.status}`, dataset: { pcr: stage.pcr, status: stage.status, component: stage.component } },
    el("div", { class: "stage-head" },
      el("span", { class: "pcr" }, `PCR ${stage.pcr}`),
      el("strong", {}, stage.label || "(unnamed)"),
      el("span", { class: "muted" }, stage.eventType),
      el("span", { class: "stage-status" }, STATUS_TEXT[stage.status] ?? stage.status)),
    el("div", { class: "mono small" }, `baseline ${stage.bank}: ${short(stage.digest, 40)}`,
       stage.quoted ? ` · quoted PCR ${stage.pcr}: ${short(stage.quoted, 24)}` : ""),
    stage.findings.map((f) => el("div", { class: "stage-finding" }, el("code", {}, f.id), " ", f.message)));
}

function unknownItem(u) {
  return el("li", { class: "stage stage-unknown", dataset: { pcr: u.pcr, status: "unknown", finding: u.finding.id } },
    el("div", { class: "stage-head" },
      el("span", { class: "pcr" }, `PCR ${u.pcr}`),
      el("strong", {}, `event ${u.eventIndex ?? "?"}: not in the baseline`),
      el("span", { class: "stage-status" }, el("code", {}, u.finding.id))),
    el("div", { class: "mono small" }, `seen ${short(u.seen, 48)}`, u.expected ? ` · expected ${u.expected}` : ""),
    el("div", { class: "stage-finding" }, u.message));
}

function historySection(history) {
  return el("section", { class: "card", id: "history" },
    el("h2", {}, "Result history"),
    history.length === 0 ? el("p", { class: "muted" }, "No result yet.")
    : el("table", {},
        el("thead", {}, el("tr", {}, ["result", "time", "verdict", "findings", "host", "policy", "EAR", "rebooted"].map((h) => el("th", {}, h)))),
        el("tbody", {}, history.map((r) => el("tr", { dataset: { result: r.id, verdict: r.verdict } },
          el("td", {}, String(r.id)), el("td", {}, time(r.created_at)), el("td", {}, verdictBadge(r.verdict)),
          el("td", {}, r.findings.length ? [...new Set(r.findings.map((f) => f.id))].join(", ") : "—"),
          el("td", {}, r.host_id ?? ""), el("td", {}, r.policy_id ?? "—"), el("td", {}, r.status ?? "none"),
          el("td", {}, r.rebooted ? "yes" : ""))))));
}
