"""Enrollment by credential activation (RA-1; DESIGN.md section 3): the PCA's side of
TPM2_MakeCredential / TPM2_ActivateCredential, for hosts (EK + AK) and, in `_vtm`, for vTMs (vEK + vAK).

    challenge, pending = begin_enrollment(ek_certificate=..., ek_public=..., ak_public=...,
                                          trust_anchors=[manufacturer_ca], now=now, rng=os.urandom)
    # the server stores `pending`, sends `challenge` to the agent, whose TM answers with
    # TPM2_ActivateCredential(ak, ek, challenge.credential_blob, challenge.encrypted_secret)
    verified = complete_enrollment(pending, activated_secret=answer, now=later)

Why it works (TCG TPM 2.0 Library part 1, 24 "Credential Protection"): the secret is encrypted
under a seed that only the TM holding the EK's private key can recover, and bound by an HMAC to the
AK's *name*, the digest of its public area with its attributes. The TM releases the secret only if
an object of exactly that name is loaded beside the EK. So a correct answer proves that the TM
whose EK the manufacturer certified holds a key with the AK's public area: restricted, fixedTPM...

What the server keeps: never the secret. `PendingEnrollment.secret_digest` is SHA-256 over a
label, the enrollment id, the EK and AK names and the secret. The secret is 256 random bits, so
the digest cannot be inverted; someone who reads the store (a backup, a replica, an SQL injection)
learns nothing that would let them answer the challenge without the TM, and editing a pending
record's AK or EK name breaks the digest it was stored with. Only the agent's TM and the returned
answer ever hold the secret; this module does not log it or put it in an exception.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import ActivationFailed, CertificateInvalid, InvalidInput, NonceExpired
from vroot.pca._attributes import check_ak_public, check_ek_area, public_area
from vroot.pki import is_virtual_tm_certificate, verify_ek_certificate
from vroot.pki._vek_ext import check_host_id
from vroot.pki._x509 import check_now
from vroot.tpm2 import PublicArea, make_credential

__all__ = [
    "DEFAULT_ENROLLMENT_TTL",
    "SECRET_SIZE",
    "EnrollmentChallenge",
    "EnrollmentKind",
    "PendingEnrollment",
    "VerifiedEnrollment",
    "begin_enrollment",
    "complete_enrollment",
    "make_challenge",
]

SECRET_SIZE = 32
ENROLLMENT_ID_SIZE = 16
DEFAULT_ENROLLMENT_TTL = timedelta(minutes=5)
MAX_ENROLLMENT_TTL = timedelta(hours=24)
_DIGEST_LABEL = b"vroot pca activation secret\0"

Rng = Callable[[int], bytes]


class EnrollmentKind(enum.StrEnum):
    """Whose TM is enrolling: a host's hardware (or simulated) TM, or a VM's vTM."""

    HOST = "host"
    VTM = "vtm"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentChallenge:
    """What goes to the agent: the MakeCredential output, for TPM2_ActivateCredential(ak, ek, ...).

    `credential_blob` is a marshalled TPM2B_ID_OBJECT, `encrypted_secret` a TPM2B_ENCRYPTED_SECRET
    (the forms `vroot.tm.TmClient.activate_credential` and tpm2-tools take). Not secret: only the
    TM holding the EK can open it, and only for the AK named when it was made.
    """

    enrollment_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: datetime


def _digest(enrollment_id: str, ek_name: bytes, ak_name: bytes, secret: bytes) -> bytes:
    h = hashlib.sha256(_DIGEST_LABEL)
    for part in (enrollment_id.encode(), ek_name, ak_name, secret):
        h.update(len(part).to_bytes(2, "big") + part)
    return h.digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingEnrollment:
    """What the server keeps between the challenge and the answer (all of it safe to store).

    `ak_public`/`ek_public` are TPM2B_PUBLIC or TPMT_PUBLIC bytes and must have the names
    `ak_name`/`ek_name` (checked here); `ek_certificate` is the DER of the (v)EK certificate that
    was verified. `host_id` names the host (as the server calls it: a label, not proven by the
    TM; required for vTMs, where the vEK certificate names it); `vm_uuid` the VM of a vTM.
    Caller must: use a pending enrollment once (delete it after any answer, right or wrong), and
    look it up by `enrollment_id` for the agent that began it.
    """

    enrollment_id: str
    kind: EnrollmentKind
    ak_public: bytes
    ak_name: bytes
    ek_public: bytes
    ek_name: bytes
    ek_certificate: bytes
    secret_digest: bytes = field(repr=False)
    issued_at: datetime
    expires_at: datetime
    host_id: str | None = None
    vm_uuid: uuid.UUID | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EnrollmentKind(self.kind))
        if public_area(self.ak_public, "pending AK").name() != self.ak_name:
            raise InvalidInput("pending enrollment: ak_name is not the name of ak_public")
        if public_area(self.ek_public, "pending EK").name() != self.ek_name:
            raise InvalidInput("pending enrollment: ek_name is not the name of ek_public")
        if len(self.secret_digest) != hashlib.sha256().digest_size:
            raise InvalidInput("pending enrollment: secret_digest must be a SHA-256 digest")
        if check_now(self.expires_at) <= check_now(self.issued_at):
            raise InvalidInput("pending enrollment: expires_at must come after issued_at")
        if self.host_id is not None:
            check_host_id(self.host_id)
        if (self.kind is EnrollmentKind.VTM) != (self.vm_uuid is not None):
            raise InvalidInput("pending enrollment: vm_uuid is given for vTMs, and only for them")
        if self.kind is EnrollmentKind.VTM and self.host_id is None:
            raise InvalidInput("pending enrollment: a vTM enrollment names its host")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEnrollment:
    """An enrollment whose credential activation succeeded (RA-1).

    Proves: the TM holding the private part of `ek` (certified by a manufacturer CA, or for a vTM
    by the vTM-manager key of host `host_id`) had an object with the public area `ak` loaded when
    it answered, and `ak` is a restricted, fixedTPM, TM-generated signing key: quotes it signs
    come from that (v)TM.
    Does not prove: that the (v)TM's platform is in a good state (attest it), that it is not revoked
    since (the server's revocation list), or, for a vTM, that its host is still trusted.
    """

    enrollment_id: str
    kind: EnrollmentKind
    ak: PublicArea
    ak_name: bytes
    ek: PublicArea
    ek_name: bytes
    ek_certificate: bytes
    enrolled_at: datetime
    host_id: str | None = None
    vm_uuid: uuid.UUID | None = None

    @property
    def virtual(self) -> bool:
        return self.kind is EnrollmentKind.VTM


def _draw(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if not isinstance(out, bytes | bytearray) or len(out) != n:
        raise InvalidInput(f"rng({n}) must return {n} bytes")
    return bytes(out)


def make_challenge(
    *,
    kind: EnrollmentKind,
    ek: PublicArea,
    ak: PublicArea,
    ek_certificate: bytes,
    now: datetime,
    rng: Rng,
    ttl: timedelta = DEFAULT_ENROLLMENT_TTL,
    host_id: str | None = None,
    vm_uuid: uuid.UUID | None = None,
) -> tuple[EnrollmentChallenge, PendingEnrollment]:
    """MakeCredential of a fresh secret to `ek` for `ak`'s name. Checks the key attributes only:
    callers (`begin_enrollment`, `begin_vtm_enrollment`) verify the (v)EK certificate first."""
    check_now(now)
    if not timedelta(0) < ttl <= MAX_ENROLLMENT_TTL:
        raise InvalidInput(f"enrollment ttl must be positive and at most {MAX_ENROLLMENT_TTL}")
    check_ek_area(ek, what="vEK" if kind is EnrollmentKind.VTM else "EK")
    check_ak_public(ak, what="vAK" if kind is EnrollmentKind.VTM else "AK")
    secret = _draw(rng, SECRET_SIZE)
    enrollment_id = _draw(rng, ENROLLMENT_ID_SIZE).hex()
    ak_name, ek_name = ak.name(), ek.name()
    blob, encrypted = make_credential(ek, ak_name, secret, rng=rng)
    expires_at = now + ttl
    challenge = EnrollmentChallenge(
        enrollment_id=enrollment_id, credential_blob=blob, encrypted_secret=encrypted, expires_at=expires_at
    )
    pending = PendingEnrollment(
        enrollment_id=enrollment_id,
        kind=kind,
        ak_public=ak.encode(sized=True),
        ak_name=ak_name,
        ek_public=ek.encode(sized=True),
        ek_name=ek_name,
        ek_certificate=ek_certificate,
        secret_digest=_digest(enrollment_id, ek_name, ak_name, secret),
        issued_at=now,
        expires_at=expires_at,
        host_id=host_id,
        vm_uuid=vm_uuid,
    )
    return challenge, pending


def begin_enrollment(
    *,
    ek_certificate: bytes | x509.Certificate,
    ek_public: bytes | PublicArea,
    ak_public: bytes | PublicArea,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    now: datetime,
    rng: Rng,
    ttl: timedelta = DEFAULT_ENROLLMENT_TTL,
    host_id: str | None = None,
) -> tuple[EnrollmentChallenge, PendingEnrollment]:
    """Start a host's enrollment (RA-1, HW-F2): check its EK certificate and AK, and challenge it.

    Checks, in order: the EK certificate chains to one of `trust_anchors` (the manufacturer CAs)
    through `intermediates`, valid at `now`, with tcg-kp-EKCertificate (`CertificateInvalid`); it is
    not a vTM's certificate (`CertificateInvalid`, VMM-S3); it certifies `ek_public`
    (`CertificateInvalid`); `ek_public` is an EK (`KeyAttributesInvalid`); `ak_public` is a
    restricted fixedTPM/fixedParent/sensitiveDataOrigin signing key with an allowed scheme
    (`KeyAttributesInvalid`). Then MakeCredential of a fresh 32-byte secret drawn from `rng`.
    Bytes that do not decode raise `InvalidInput`. `host_id` (optional) is recorded as the
    server's name for the host; `enrolled_host` needs it later.
    Caller must: store the `PendingEnrollment`, send the `EnrollmentChallenge`, and finish with
    `complete_enrollment`; nothing here proves the AK is in that TM yet.
    """
    check_now(now)
    ek = public_area(ek_public, "EK public area")
    ak = public_area(ak_public, "AK public area")
    verified = verify_ek_certificate(
        ek_certificate, trust_anchors=trust_anchors, intermediates=intermediates, ek_public=ek, now=now
    )
    if is_virtual_tm_certificate(verified.certificate):
        raise CertificateInvalid("EK certificate: marked as a vroot vTM's; a vTM enrolls with its host's record")
    return make_challenge(
        kind=EnrollmentKind.HOST,
        ek=ek,
        ak=ak,
        ek_certificate=verified.certificate.public_bytes(Encoding.DER),
        now=now,
        rng=rng,
        ttl=ttl,
        host_id=None if host_id is None else check_host_id(host_id),
    )


def complete_enrollment(
    pending: PendingEnrollment, *, activated_secret: bytes, now: datetime
) -> VerifiedEnrollment:
    """Finish an enrollment with the secret the agent's TM returned from TPM2_ActivateCredential.

    Raises `NonceExpired` after `pending.expires_at` (checked first: a late answer is not even
    compared) and `ActivationFailed` when the answer is not the secret (compared in constant time,
    as digests). Caller must: delete `pending` whatever the outcome (single use), and issue the AK
    certificate only from the returned value.
    """
    if not isinstance(pending, PendingEnrollment):
        raise InvalidInput(f"pending: expected a PendingEnrollment, got {type(pending).__name__}")
    check_now(now)
    if now > pending.expires_at:
        raise NonceExpired(
            f"enrollment {pending.enrollment_id} expired at {pending.expires_at.isoformat()} "
            f"(answered at {now.isoformat()})"
        )
    if not isinstance(activated_secret, bytes | bytearray | memoryview):
        raise InvalidInput(f"activated_secret must be bytes, got {type(activated_secret).__name__}")
    answer = bytes(activated_secret)
    got = _digest(pending.enrollment_id, pending.ek_name, pending.ak_name, answer)
    if not hmac.compare_digest(got, pending.secret_digest) or len(answer) != SECRET_SIZE:
        raise ActivationFailed(
            f"enrollment {pending.enrollment_id}: the activated secret is not the one wrapped to EK "
            f"{pending.ek_name.hex()} for AK {pending.ak_name.hex()}"
        )
    return VerifiedEnrollment(
        enrollment_id=pending.enrollment_id,
        kind=pending.kind,
        ak=public_area(pending.ak_public, "pending AK"),
        ak_name=pending.ak_name,
        ek=public_area(pending.ek_public, "pending EK"),
        ek_name=pending.ek_name,
        ek_certificate=pending.ek_certificate,
        enrolled_at=now,
        host_id=pending.host_id,
        vm_uuid=pending.vm_uuid,
    )
