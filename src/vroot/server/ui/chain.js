// The boot-chain timeline of one result (pure: no fetch, no DOM).
//
// vroot keeps, for each attestation, its verdict, its findings and the PCR values the quote
// covered, not the measured event log. So the timeline's stages are the reference values of the
// baseline the result was appraised under (its policy_id names group@version/baseline@version),
// in measurement order, each with the quoted value of its PCR. A stage is "matched" when the
// verified evidence raised no finding on its PCR (every event measured there matched a baseline
// entry); a finding on its PCR marks it; an event that matched no entry (baseline.event.unknown)
// is inserted after the stage its finding names as expected, with the digest seen.

/** "default@1/hosts@2" -> {group, policyVersion, baseline, baselineVersion}, or null. */
export function parsePolicyId(policyId) {
  const m = /^(.+)@(\d+)\/(.+)@(\d+)$/.exec(policyId ?? "");
  if (!m) return null;
  return { group: m[1], policyVersion: Number(m[2]), baseline: m[3], baselineVersion: Number(m[4]) };
}

const label = (ref) => `${ref.component ?? ""} ${ref.version ?? ""}`.trim();

function preferredDigest(digests) {
  const banks = Object.keys(digests ?? {});
  const bank = ["sha256", "sha384", "sha512", "sm3_256", "sha1"].find((b) => banks.includes(b)) ?? banks[0];
  return bank ? { bank, hex: digests[bank] } : { bank: null, hex: null };
}

/**
 * {items, general}: `items` are stages ({kind: "stage", ...}) and unknown events ({kind:
 * "unknown", ...}) in order; `general` the findings that name no PCR (or a PCR with no stage).
 * `eventPcrs` (the policy's, when known) marks stages whose PCR the policy does not check.
 */
export function buildChain({ result, manifest, eventPcrs = null }) {
  const own = (result.findings ?? []).filter((f) => !f.id.startsWith("host."));
  const quoted = result.pcrs?.sha256 ?? Object.values(result.pcrs ?? {})[0] ?? {};
  const refs = (manifest?.reference_values ?? []).map((ref, position) => {
    const { bank, hex } = preferredDigest(ref.digests);
    const checked = eventPcrs === null ? null : eventPcrs.includes(ref.pcr);
    return { kind: "stage", position, component: ref.component, version: ref.version ?? "", label: label(ref),
             pcr: ref.pcr, eventType: String(ref.event_type), bank, digest: hex, quoted: quoted[String(ref.pcr)] ?? null,
             checked, status: checked === false ? "unchecked" : "matched", findings: [] };
  });
  const pcrsWithStages = new Set(refs.map((r) => r.pcr));
  const general = [];
  const inserts = new Map(); // stage position -> unknown events after it
  const tail = [];
  for (const finding of own) {
    if (finding.pcr === null || finding.pcr === undefined || !pcrsWithStages.has(finding.pcr)) {
      general.push(finding);
      continue;
    }
    const samePcr = refs.filter((r) => r.pcr === finding.pcr);
    if (finding.id === "baseline.event.unknown") {
      const named = samePcr.filter((r) => r.label && (finding.expected ?? "").split(", ").includes(r.label));
      for (const r of named) {
        r.status = "replaced";
        r.findings.push(finding);
      }
      const after = (named.length ? named : samePcr).at(-1);
      const unknown = { kind: "unknown", pcr: finding.pcr, eventIndex: finding.event_index, seen: finding.seen,
                        expected: finding.expected, message: finding.message, finding };
      if (after) inserts.set(after.position, [...(inserts.get(after.position) ?? []), unknown]);
      else tail.push(unknown);
      for (const r of samePcr) if (r.status === "matched") r.status = "pcr-finding";
      continue;
    }
    if (finding.id === "baseline.event.missing") {
      const hex = (finding.expected ?? "").split(":").at(-1);
      const missing = samePcr.find((r) => Object.values(manifest.reference_values[r.position].digests ?? {}).includes(hex));
      if (missing) {
        if (missing.status !== "replaced") missing.status = "missing"; // else: measured, but another event
        missing.findings.push(finding);
        continue;
      }
    }
    for (const r of samePcr) {
      if (r.status === "matched" || r.status === "pcr-finding") r.status = "pcr-finding";
      r.findings.push(finding);
    }
  }
  const items = [];
  for (const r of refs) {
    items.push(r);
    items.push(...(inserts.get(r.position) ?? []));
  }
  items.push(...tail);
  return { items, general };
}
