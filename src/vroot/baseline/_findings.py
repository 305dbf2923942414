"""Findings and appraisals: what appraisal returns (RA-5), and their JSON form for the store.

A `Finding` says one way in which verified evidence differs from what the baseline and policy
allow; its `id` is stable API (the table in the package docstring). An `Appraisal` is the list
of findings with the verdict they imply: "untrusted" iff any finding has severity "error".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from vroot.errors import InvalidInput

if TYPE_CHECKING:
    from vroot.baseline._ima import ImaAppraisalState

__all__ = ["FINDING_IDS", "Appraisal", "Finding", "Severity", "Verdict", "verdict_of"]

Severity = Literal["error", "warning", "info"]
Verdict = Literal["trusted", "untrusted"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
MAX_MESSAGE = 1024
MAX_VALUE = 1024

# The stable finding IDs, each with the severity it normally has (the package docstring explains them).
FINDING_IDS: Mapping[str, str] = MappingProxyType({
    "baseline.pcr.mismatch": "error",
    "baseline.event.unknown": "error",
    "baseline.event.missing": "error",
    "evidence.pcr.missing": "error",
    "evidence.ima.missing": "error",
    "evidence.too_old": "error",
    "evidence.from_future": "error",
    "ima.file.unknown": "error",
    "ima.file.digest_mismatch": "error",
    "ima.boot_aggregate.mismatch": "error",
    "ima.entry.undecodable": "error",
    "ima.signature.missing": "error",
    "ima.signature.invalid": "error",
    "ima.signature.unknown_key": "error",
    "ima.violation": "error",
    "ima.findings.truncated": "info",
})


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One difference between verified evidence and the baseline/policy.

    `pcr` and `event_index` locate it (the TCG event's index in its log, or the IMA entry's index
    in the whole IMA list, counted from 0); `expected`/`seen` are short texts (hex digests,
    ages); `message` says it for a person. Texts that came from evidence are shortened and made
    printable, since event data is not covered by its digest.
    """

    id: str
    severity: Severity
    pcr: int | None = None
    event_index: int | None = None
    expected: str | None = None
    seen: str | None = None
    message: str

    def __post_init__(self) -> None:
        if self.id not in FINDING_IDS:
            raise InvalidInput(f"unknown finding id {self.id!r}")
        if self.severity not in SEVERITIES:
            raise InvalidInput(f"finding severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        for name in ("pcr", "event_index"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise InvalidInput(f"finding {name} must be a non-negative integer, not {value!r}")
        for name, cap in (("expected", MAX_VALUE), ("seen", MAX_VALUE), ("message", MAX_MESSAGE)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"finding {name} must be text")
            if value is not None and len(value) > cap:
                object.__setattr__(self, name, value[: cap - 1] + "…")

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity,
            "pcr": self.pcr,
            "event_index": self.event_index,
            "expected": self.expected,
            "seen": self.seen,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, doc: object) -> Finding:
        """Decode `to_json()` output; `InvalidInput` for anything else."""
        if not isinstance(doc, dict):
            raise InvalidInput("a finding must be a JSON object")
        keys = {"id", "severity", "pcr", "event_index", "expected", "seen", "message"}
        if set(doc) != keys:
            raise InvalidInput(f"a finding has exactly the fields {sorted(keys)}")
        if not isinstance(doc["id"], str) or not isinstance(doc["message"], str):
            raise InvalidInput("finding id and message must be text")
        return cls(**doc)


def verdict_of(findings: Iterable[Finding]) -> Verdict:
    """"untrusted" iff any finding is an error."""
    return "untrusted" if any(f.severity == "error" for f in findings) else "trusted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Appraisal:
    """The result of appraising verified evidence against `baseline_name` `baseline_version` under
    the policy of `policy_group` (RA-5). `verdict` is "untrusted" iff a finding is an error.

    `ima_state` is the incremental IMA state after this appraisal (None when the policy does not
    appraise IMA): store it and pass it to the next appraisal of the same boot.
    """

    verdict: Verdict
    findings: tuple[Finding, ...]
    baseline_name: str
    baseline_version: str
    policy_group: str
    ima_state: ImaAppraisalState | None = None

    def __post_init__(self) -> None:
        if self.verdict != verdict_of(self.findings):
            raise InvalidInput(f"verdict {self.verdict!r} contradicts the findings")

    @property
    def trusted(self) -> bool:
        return self.verdict == "trusted"

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "baseline_name": self.baseline_name,
            "baseline_version": self.baseline_version,
            "policy_group": self.policy_group,
            "findings": [f.to_json() for f in self.findings],
            "ima_state": None if self.ima_state is None else self.ima_state.to_json(),
        }

    @classmethod
    def from_json(cls, doc: object) -> Appraisal:
        """Decode `to_json()` output; `InvalidInput` for anything else."""
        from vroot.baseline._ima import ImaAppraisalState

        keys = {"verdict", "baseline_name", "baseline_version", "policy_group", "findings", "ima_state"}
        if not isinstance(doc, dict) or set(doc) != keys:
            raise InvalidInput(f"an appraisal is a JSON object with exactly the fields {sorted(keys)}")
        if not isinstance(doc["findings"], list):
            raise InvalidInput("appraisal findings must be a list")
        for name in ("verdict", "baseline_name", "baseline_version", "policy_group"):
            if not isinstance(doc[name], str):
                raise InvalidInput(f"appraisal {name} must be text")
        state = doc["ima_state"]
        return cls(
            verdict=doc["verdict"],
            findings=tuple(Finding.from_json(f) for f in doc["findings"]),
            baseline_name=doc["baseline_name"],
            baseline_version=doc["baseline_version"],
            policy_group=doc["policy_group"],
            ima_state=None if state is None else ImaAppraisalState.from_json(state),
        )
