"""The baseline library: reference values, appraisal policies, and appraisal (RA-5, DESIGN.md section 5).

    from vroot.baseline import appraise, appraisal_input_from_host_evidence, learn_baseline, load_policy

    baseline = learn_baseline(tcg_log=parse_tcg_log(boot), ima_log=parse_ima_log(ima), name="hosts", version="1")
    baseline = baseline.with_ima(ima_reference_from_lines(sha256sums), version="2")
    open("hosts.yaml", "wb").write(dump_manifest(baseline))          # load_manifest(...) reads it back
    policy = load_policy(open("hosts-policy.yaml", "rb").read())

    verified = verify_host_evidence(evidence, qualifying_data=nonce, ak=ak)   # vroot.attestation
    appraisal = appraise(evidence=appraisal_input_from_host_evidence(verified, time=issued),
                         baseline=baseline, policy=policy, now=now)
    appraisal.verdict        # "trusted" | "untrusted"
    appraisal.findings       # (Finding(id="baseline.event.unknown", severity="error", pcr=4, ...), ...)
    store(appraisal.to_json())                 # ima_state inside: pass it to the next appraise()

Pure code: no I/O, no clock (`now=`), no globals. `appraise` does not raise for evidence that
differs from the baseline; that is a normal result. IMA signatures fail closed: one that does not
verify is an error finding, never skipped. Documents (manifests, runtime policies, stored state)
come in through pydantic models with `extra="forbid"`; anything malformed raises `InvalidInput`.

Finding IDs (stable API; severity as given unless noted):

| ID | Severity | Meaning |
|---|---|---|
| `baseline.pcr.mismatch` | error | a verified PCR differs from the policy's golden value (`expected`/`seen`: hex) |
| `baseline.event.unknown` | error | an event of a PCR in `policy.event_pcrs` has no reference value with its PCR, event type and digest (in every verified bank both have); names the event |
| `baseline.event.missing` | error | a `required` reference value of a checked PCR matched no event |
| `evidence.pcr.missing` | error | the policy needs a PCR (golden, event or IMA PCR 10) that the verified evidence does not cover |
| `evidence.ima.missing` | error | the policy appraises IMA, but the evidence has no IMA list |
| `evidence.too_old` | error | evidence older than `policy.max_evidence_age` |
| `evidence.from_future` | error | evidence dated more than `MAX_CLOCK_SKEW` (60 s) after `now` |
| `ima.violation` | error; warning if `tolerate_violations` | an IMA violation (ToMToU, open writers): a file changed while measured |
| `ima.boot_aggregate.mismatch` | error | `boot_aggregate` is not the hash of the verified PCRs 0-7 (SHA-1) or 0-9 |
| `ima.entry.undecodable` | error; warning if neither allowlist nor signatures are required | an entry without path or file digest (a template vroot does not know) |
| `ima.signature.invalid` | error | a signature that is malformed, of an unsupported kind, or does not verify with the accepted key of its key id |
| `ima.signature.unknown_key` | error if signatures are required, else warning | a signature by a key id the policy does not accept (the allowlist then decides) |
| `ima.signature.missing` | error | no signature where the policy requires one |
| `ima.file.digest_mismatch` | error | a path in the allowlist measured with a digest it does not allow |
| `ima.file.unknown` | error | a path not in the allowlist, when the policy requires it |
| `ima.findings.truncated` | info | more IMA findings than an appraisal state keeps (500 errors, 500 others); `seen` says how many were left out |

Event appraisal: an event of a checked PCR is known if a reference value has its PCR and event
type and, in the strongest verified bank, its digest, with every other verified bank the reference
also has agreeing. IMA appraisal order: violation, undecodable, boot_aggregate, excludes (whole-path
regular expressions, validated and bounded: see `vroot.baseline._excludes`), signature, allowlist; a valid signature by an accepted key makes an entry acceptable without the allowlist.
"""

from vroot.baseline._appraise import (
    MAX_CLOCK_SKEW,
    AppraisalInput,
    appraisal_input_from_host_evidence,
    appraise,
)
from vroot.baseline._findings import FINDING_IDS, Appraisal, Finding, Severity, Verdict, verdict_of
from vroot.baseline._ima import IMA_PCR, ImaAppraisalState, appraise_ima_delta
from vroot.baseline._imalist import ima_reference_from_lines
from vroot.baseline._imasig import (
    ImaKeyUnknown,
    ImaSignatureInvalid,
    ImaSigningKey,
    ima_key_id,
    verify_ima_signature,
)
from vroot.baseline._learn import DEFAULT_LEARN_PCRS, learn_baseline
from vroot.baseline._manifest import dump_manifest, dump_policy, load_manifest, load_policy
from vroot.baseline._model import Baseline, ImaReference, ReferenceValue
from vroot.baseline._policy import ImaPolicy, Policy

__all__ = [
    "DEFAULT_LEARN_PCRS",
    "FINDING_IDS",
    "IMA_PCR",
    "MAX_CLOCK_SKEW",
    "Appraisal",
    "AppraisalInput",
    "Baseline",
    "Finding",
    "ImaAppraisalState",
    "ImaKeyUnknown",
    "ImaPolicy",
    "ImaReference",
    "ImaSignatureInvalid",
    "ImaSigningKey",
    "Policy",
    "ReferenceValue",
    "Severity",
    "Verdict",
    "appraisal_input_from_host_evidence",
    "appraise",
    "appraise_ima_delta",
    "dump_manifest",
    "dump_policy",
    "ima_key_id",
    "ima_reference_from_lines",
    "learn_baseline",
    "load_manifest",
    "load_policy",
    "verdict_of",
    "verify_ima_signature",
]
