"""JSON shapes of attestation, results, the baseline library, events and webhooks (pydantic,
`extra="forbid"` on requests). Hex for digests and PCR values; the EAR stays a JWS compact token."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from vroot.server._library import policy_manifest, policy_pin
from vroot.server._webhooks import check_url
from vroot.store import BaselineRecord, PolicyRecord, ResultRecord, TaskRecord, WebhookRecord

__all__ = [
    "GROUP_PATTERN",
    "NAME_PATTERN",
    "AgentPatch",
    "AttestationOut",
    "BaselineList",
    "BaselineOut",
    "FindingOut",
    "PolicyList",
    "PolicyOut",
    "ResultList",
    "ResultOut",
    "WebhookIn",
    "WebhookList",
    "WebhookOut",
    "ear_submodule",
]

# Baseline names and policy groups as they appear in URLs: the manifests' alphabet without "/".
NAME_PATTERN = r"^[A-Za-z0-9._:@+~-]{1,128}$"
GROUP_PATTERN = NAME_PATTERN
EVENT_KIND_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def ear_submodule(token: str | None) -> dict[str, Any]:
    """The (only) submodule of an EAR token this server signed, read WITHOUT checking the
    signature: for display only. Relying parties verify with `verify_ear` and /v1/result-key."""
    if not token or token.count(".") != 2:
        return {}
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        (submodule,) = claims["submods"].values()
        return submodule if isinstance(submodule, dict) else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


class AgentPatch(_In):
    """Placement attributes an operator may change."""

    group: str | None = Field(None, pattern=GROUP_PATTERN, description="policy group")
    labels: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=255)]] | None = Field(
        None, max_length=64
    )
    zone: str | None = Field(None, min_length=1, max_length=255, description="placement zone (hosts)")
    capacity: int | None = Field(None, ge=0, le=1_000_000, description="vTMs the host may run; 0: no limit")


class FindingOut(BaseModel):
    id: str
    severity: str
    pcr: int | None = None
    event_index: int | None = None
    expected: str | None = None
    seen: str | None = None
    message: str

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> FindingOut:
        """A stored finding (`Finding.to_json()` shape), shown even if a field is off."""

        def text(name: str) -> str | None:
            value = doc.get(name)
            return None if value is None else str(value)

        def number(name: str) -> int | None:
            value = doc.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(id=str(doc.get("id", "unknown")), severity=str(doc.get("severity", "error")), pcr=number("pcr"),
                   event_index=number("event_index"), expected=text("expected"), seen=text("seen"),
                   message=str(doc.get("message", "")))  # fmt: skip


class ResultOut(BaseModel):
    id: int
    agent_id: str
    verdict: str = Field(description="trusted, untrusted or error")
    created_at: datetime
    findings: list[FindingOut]
    pcrs: dict[str, dict[str, str]] = Field(description="bank -> PCR index -> value (hex), as quoted")
    evidence_digest: str | None = Field(description="SHA-256 of the quote and its signature (hex)")
    clock: int | None
    reset_count: int | None
    restart_count: int | None
    rebooted: bool | None = Field(description="the TM was reset since the previous result")
    policy_id: str | None = Field(description="group@version/baseline@version the evidence was appraised under")
    status: str | None = Field(description="EAR status: affirming, warning, contraindicated or none")
    trustworthiness_vector: dict[str, int]
    host_id: str | None = Field(None, description="for a VM: the host agent whose deep quote vouched for it")
    host_result_id: int | None = Field(None, description="for a VM: that host's result in the same deep quote")
    host_verdict: str | None = Field(None, description="for a VM: that host's verdict (the joint verdict is `verdict`)")
    ear: str | None = Field(description="the signed EAR (JWS compact, ES256); verify with /v1/result-key")

    @classmethod
    def of(cls, r: ResultRecord) -> ResultOut:
        sub = ear_submodule(r.signed)
        findings = [FindingOut.of(f) for f in r.findings if isinstance(f, Mapping)]
        vector = sub.get("ear.trustworthiness-vector")
        host = sub.get("vroot.host") if isinstance(sub.get("vroot.host"), Mapping) else {}
        return cls(id=r.id, agent_id=r.agent_id, verdict=r.verdict.value, created_at=r.created_at, findings=findings,
                   pcrs={bank: {str(i): v.hex() for i, v in sorted(vals.items())} for bank, vals in r.pcrs.items()},
                   evidence_digest=None if r.evidence_digest is None else r.evidence_digest.hex(), clock=r.clock,
                   reset_count=r.reset_count, restart_count=r.restart_count, rebooted=sub.get("vroot.rebooted"),
                   policy_id=sub.get("ear.appraisal-policy-id"), status=sub.get("ear.status"),
                   trustworthiness_vector=vector if isinstance(vector, dict) else {}, ear=r.signed,
                   host_id=host.get("agent_id"), host_result_id=r.host_result_id,
                   host_verdict=host.get("verdict"))  # fmt: skip


class ResultList(BaseModel):
    results: list[ResultOut] = Field(description="newest first")


class AttestationOut(BaseModel):
    agent_id: str
    task_id: int
    state: str = Field(description="queued, leased, done or failed")
    created_at: datetime
    nonce_expires_at: str | None
    result: ResultOut | None = Field(description="the result, once the agent has answered")

    @classmethod
    def of(cls, task: TaskRecord, result: ResultRecord | None = None) -> AttestationOut:
        payload = task.payload if isinstance(task.payload, Mapping) else {}
        return cls(agent_id=task.agent_id, task_id=task.id, state=task.state.value, created_at=task.created_at,
                   nonce_expires_at=payload.get("expires_at"),
                   result=None if result is None else ResultOut.of(result))  # fmt: skip


class BaselineOut(BaseModel):
    name: str
    version: int
    label: str = Field(description="the manifest's own version text")
    created_at: datetime
    manifest: dict[str, Any]

    @classmethod
    def of(cls, b: BaselineRecord) -> BaselineOut:
        doc = b.document if isinstance(b.document, dict) else {}
        return cls(name=b.name, version=b.version, label=str(doc.get("version", "")), created_at=b.created_at,
                   manifest=doc)  # fmt: skip


class BaselineList(BaseModel):
    baselines: list[BaselineOut]


class PolicyOut(BaseModel):
    group: str
    version: int = Field(description="send it back as If-Match to replace this policy")
    updated_at: datetime
    baseline: str | None
    baseline_version: int | None = Field(description="the pinned baseline version; null: the newest")
    manifest: dict[str, Any]

    @classmethod
    def of(cls, p: PolicyRecord) -> PolicyOut:
        manifest = policy_manifest(p)
        return cls(group=p.group, version=p.version, updated_at=p.updated_at, baseline=manifest.get("baseline"),
                   baseline_version=policy_pin(p), manifest=manifest)  # fmt: skip


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class WebhookIn(_In):
    url: str = Field(min_length=8, max_length=2048, description="http(s) URL events are POSTed to")
    kinds: list[Annotated[str, Field(pattern=EVENT_KIND_PATTERN)]] = Field(
        [], max_length=32, description="event kinds to deliver (e.g. verdict.changed); empty: all"
    )
    secret: str = Field(min_length=16, max_length=128, pattern=r"^[\x21-\x7e]+$",
                        description="HMAC-SHA256 key of X-Vroot-Signature (printable ASCII); never shown again")  # fmt: skip

    def __repr__(self) -> str:
        return f"WebhookIn(url={self.url!r}, kinds={self.kinds!r})"

    __str__ = __repr__

    def checked_url(self) -> str:
        return check_url(self.url)


class WebhookOut(BaseModel):
    id: int
    url: str
    kinds: list[str]
    created_at: datetime
    last_event_id: int = Field(description="the delivery cursor: events after it are pending")

    @classmethod
    def of(cls, w: WebhookRecord) -> WebhookOut:
        return cls(id=w.id, url=w.url, kinds=list(w.kinds), created_at=w.created_at, last_event_id=w.last_event_id)


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]
