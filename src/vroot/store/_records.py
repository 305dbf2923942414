"""The values repositories take and return: frozen dataclasses, never ORM rows.

Byte strings stay bytes (DER, TPM2B_PUBLIC, digests); hex and base64 belong to the API edge.
Certificate serial numbers are ints (they can exceed 64 bits; the store keeps them as hex text).
JSON-shaped fields (labels, payloads, findings, documents) hold plain JSON values; the caller
converts its domain objects (e.g. a `Finding`) to JSON before storing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from vroot.errors import InvalidInput

__all__ = [
    "AgentKind",
    "AgentRecord",
    "AgentState",
    "BaselineRecord",
    "EnrollmentRecord",
    "EventRecord",
    "ImaStateRecord",
    "NewResult",
    "NonceRecord",
    "Notification",
    "PolicyRecord",
    "RecordedResult",
    "ResultRecord",
    "RevocationRecord",
    "TaskRecord",
    "TaskState",
    "Verdict",
    "WebhookRecord",
]


class _Choice(StrEnum):
    """A closed set of names; an unknown one is InvalidInput (not a bare ValueError)."""

    @classmethod
    def _missing_(cls, value: object) -> None:
        raise InvalidInput(
            f"{value!r} is not a valid {cls.__name__} (one of {', '.join(m.value for m in cls)})"
        )


class AgentKind(_Choice):
    HOST = "host"
    GUEST = "guest"


class AgentState(_Choice):
    ENROLLING = "enrolling"
    ACTIVE = "active"
    REVOKED = "revoked"


class TaskState(_Choice):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


class Verdict(_Choice):
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    ERROR = "error"


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidInput(f"{name} must be timezone-aware")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    """An enrolled (or enrolling, or revoked) host agent or guest attester.

    `id` is "host:<host id>" or "vm:<uuid>" by convention. `host_id` is, for a guest, the agent id of
    the host agent it runs on now (it changes on migration); None for hosts. `ek_certificate` is the
    EK certificate (the vEK certificate for a guest), DER. `ek_public`, `ak_public` and
    `vtm_manager_public` are TPM2B_PUBLIC bytes; the vTM-manager key (hosts only) is certified by the
    host AK with TPM2_Certify: `vtm_manager_certify_info` (TPMS_ATTEST) and its
    `vtm_manager_certify_signature` (TPMT_SIGNATURE). The store keeps these bytes; it proves nothing
    about them (the PCA checks them before they are stored).
    """

    id: str
    kind: AgentKind
    ek_public: bytes
    created_at: datetime
    state: AgentState = AgentState.ENROLLING
    host_id: str | None = None
    vm_uuid: str | None = None
    group: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    zone: str | None = None
    capacity: int = 0
    ek_certificate: bytes | None = None
    ak_public: bytes | None = None
    ak_certificate: bytes | None = None
    client_serial: int | None = None
    vtm_manager_public: bytes | None = None
    vtm_manager_certify_info: bytes | None = None
    vtm_manager_certify_signature: bytes | None = None
    enrolled_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 255:
            raise InvalidInput(f"agent id must be 1..255 characters, got {self.id!r}")
        object.__setattr__(self, "kind", AgentKind(self.kind))
        object.__setattr__(self, "state", AgentState(self.state))
        if self.kind is AgentKind.HOST and self.host_id is not None:
            raise InvalidInput(f"agent {self.id}: a host agent has no host_id")
        if not isinstance(self.group, str) or not self.group or len(self.group) > 255:
            raise InvalidInput(f"agent {self.id}: policy group must be 1..255 characters, got {self.group!r}")
        if not isinstance(self.capacity, int) or self.capacity < 0:
            raise InvalidInput(f"agent {self.id}: capacity must be >= 0, got {self.capacity}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()):
            raise InvalidInput(f"agent {self.id}: labels must map str to str")
        for name in ("created_at", "enrolled_at", "revoked_at"):
            _aware(getattr(self, name), name)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRecord:
    """A credential-activation challenge in progress (RA-1).

    `ak_public` is the AK (TPM2B_PUBLIC) the challenge is bound to; it replaces the agent's AK only
    when `agents.activate` is called after a successful activation, so a pending re-enrollment never
    disturbs an active agent. `secret_digest` is the PCA's digest of the secret it wrapped;
    `credential_blob` and `encrypted_secret` are the MakeCredential outputs sent to the agent (kept
    so a retry can resend them).
    """

    agent_id: str
    ak_public: bytes
    secret_digest: bytes
    credential_blob: bytes
    encrypted_secret: bytes
    created_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        _aware(self.created_at, "created_at")
        _aware(self.expires_at, "expires_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class NonceRecord:
    value: bytes
    agent_id: str
    purpose: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """A unit of work for one agent. `key`, when set, is unique among the agent's open tasks."""

    id: int
    agent_id: str
    kind: str
    payload: Any
    state: TaskState
    created_at: datetime
    attempts: int = 0
    max_attempts: int = 5
    key: str | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewResult:
    """An attestation result to store (RA-6).

    `findings` are JSON objects (the appraisal's findings); `pcrs` maps bank name to PCR index to
    value; `evidence_digest` identifies the evidence appraised; `clock`, `reset_count` and
    `restart_count` come from the quote's TPMS_CLOCK_INFO; `signed` is the signed attestation result
    (JWT text). `host_result_id`, for a VM, is the host result of the same deep quote.
    """

    agent_id: str
    verdict: Verdict
    findings: tuple[Any, ...] = ()
    pcrs: Mapping[str, Mapping[int, bytes]] = field(default_factory=dict)
    evidence_digest: bytes | None = None
    clock: int | None = None
    reset_count: int | None = None
    restart_count: int | None = None
    signed: str | None = None
    host_result_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        object.__setattr__(self, "findings", tuple(self.findings))


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultRecord(NewResult):
    """A stored attestation result: a `NewResult` with its id and the time it was recorded."""

    id: int
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedResult:
    """What `results.record` did: the stored result, the verdict before it, and the event published
    in the same transaction when the verdict changed (None when it did not)."""

    result: ResultRecord
    previous_verdict: Verdict | None
    event_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImaStateRecord:
    """Incremental IMA appraisal state of one agent.

    `entries` log entries (ending at byte `byte_offset` of the log) are already appraised; `pcr10` is
    PCR 10 replayed over them, per bank; `reset_count` is the TPM reset count they belong to (a
    reboot restarts the log). `version` is 0 for a state not stored yet; `put` stores version + 1.
    """

    agent_id: str
    entries: int = 0
    byte_offset: int = 0
    pcr10: Mapping[str, bytes] = field(default_factory=dict)
    last_verdict: Verdict | None = None
    reset_count: int | None = None
    version: int = 0
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.entries < 0 or self.byte_offset < 0 or self.version < 0:
            raise InvalidInput(f"IMA state of {self.agent_id}: counts must be >= 0")
        if self.last_verdict is not None:
            object.__setattr__(self, "last_verdict", Verdict(self.last_verdict))


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineRecord:
    name: str
    version: int
    document: Any
    created_at: datetime
    group: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRecord:
    group: str
    document: Any
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    id: int
    kind: str
    body: Any
    created_at: datetime
    agent_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRecord:
    """A webhook subscription. `secret_ref` names where the signing secret lives (never the secret);
    `kinds` empty means every kind; `last_event_id` is the delivery cursor."""

    id: int
    url: str
    secret_ref: str | None
    kinds: tuple[str, ...]
    created_at: datetime
    last_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationRecord:
    serial: int
    revoked_at: datetime
    agent_id: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    channel: str
    payload: str
