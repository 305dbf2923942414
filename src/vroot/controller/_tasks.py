"""The migration controller's signed instructions (MC-F2, MC-S1, VMM-S5; DESIGN.md section 6).

Every migration task the controller gives an engine carries a JWS (ES256) signed by the
controller's task-signing key, whose certificate the operations CA issued with the extended key
usage `VROOT_KP_MIGRATION_CONTROLLER`. An engine that holds only the operations CA certificate
can check who sent a task, to whom, for which migration, and until when:

    cert = issue_controller_certificate(ops_ca, key.public_key(), now=now, serial=s)
    token = sign_migration_task(kind="migrate-out", migration_id=m, agent_id="host:a", task_id=t,
                                args={...}, now=now, ttl=timedelta(seconds=60), key=key)
    # on the engine:
    controller = verify_controller_certificate(cert_pem, ops_ca=ops_ca_cert, now=now)
    task = verify_migration_task(token, controller=controller, agent_id="host:a", now=now)
    task.kind, task.migration_id, task.args                      # signed; the engine acts on these

`verify_migration_task` proves: the controller certified by the operations CA signed this task for
this agent, and it has not expired. The engine must still refuse a task id it has already carried
out (its journal) and check the arguments against the migration it is in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vroot.errors import CertificateInvalid, InvalidInput, VerificationError
from vroot.pca._issue import check_agent_id, leaf_builder, sign
from vroot.pki import CertificateAuthority, verify_certificate_chain
from vroot.pki._jws import sign_es256, verify_es256
from vroot.pki._oids import VROOT_KP_MIGRATION_CONTROLLER

__all__ = [
    "MIGRATION_TASK_KINDS",
    "TASK_TYP",
    "VerifiedController",
    "VerifiedMigrationTask",
    "issue_controller_certificate",
    "sign_migration_task",
    "verify_controller_certificate",
    "verify_migration_task",
]

TASK_TYP = "vroot-migration-task+jwt"
CONTROLLER_CN = "vroot migration controller"
MIGRATION_TASK_KINDS = frozenset({
    "prepare-migration-in",  # destination: make and certify a target key
    "migrate-out",  # source: lock, export, wrap to the target key
    "import",  # destination: import, start locked, prove life
    "finalize-in",  # destination: after commit, unlock
    "finalize-out",  # source: after commit, destroy its copy
    "abort-in",  # destination: before commit, discard
    "abort-out",  # source: before commit, unlock and resume
})
CLOCK_SKEW = 60  # seconds a task may be dated ahead of the engine's clock
MAX_TTL = timedelta(hours=1)
_TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedController:
    """A task-signing key the operations CA certified for the migration controller (MC-S1)."""

    public_key: ec.EllipticCurvePublicKey
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedMigrationTask:
    """A task the controller signed for this agent, not expired. Its task id must still be checked
    against the engine's journal (carried out once)."""

    kind: str
    migration_id: uuid.UUID
    agent_id: str
    task_id: str
    args: Mapping[str, Any]
    issued_at: int
    expires_at: int


def issue_controller_certificate(
    ops_ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    *,
    now: datetime,
    serial: int,
    validity_days: int = 397,
) -> x509.Certificate:
    """The controller's task-signing certificate: P-256, digitalSignature, EKU migration controller."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise InvalidInput("the controller's task-signing key must be an ECDSA P-256 key")
    builder = leaf_builder(ops_ca, common_name=CONTROLLER_CN, public_key=public_key, now=now, serial=serial,
                           validity_days=validity_days, what="controller key")  # fmt: skip
    builder = builder.add_extension(x509.ExtendedKeyUsage([VROOT_KP_MIGRATION_CONTROLLER]), critical=True)
    return sign(builder, ops_ca)


def verify_controller_certificate(
    cert: x509.Certificate | bytes, *, ops_ca: x509.Certificate, now: datetime
) -> VerifiedController:
    """The controller's key, if `cert` chains to the operations CA with the controller's EKU."""
    if isinstance(cert, bytes) and cert.lstrip().startswith(b"-----BEGIN"):
        try:
            cert = x509.load_pem_x509_certificate(cert)
        except ValueError:
            raise InvalidInput("controller certificate: not a PEM certificate") from None
    path = verify_certificate_chain(cert, trust_anchors=[ops_ca], now=now, required_eku=VROOT_KP_MIGRATION_CONTROLLER)
    leaf = path[0]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if VROOT_KP_MIGRATION_CONTROLLER not in eku:  # required_eku also accepts anyExtendedKeyUsage
        raise CertificateInvalid("controller certificate: not certified for the migration controller")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CertificateInvalid("controller certificate: the key is not ECDSA P-256")
    return VerifiedController(public_key=key, certificate=leaf)


def sign_migration_task(
    *,
    kind: str,
    migration_id: uuid.UUID,
    agent_id: str,
    task_id: str,
    args: Mapping[str, Any],
    now: datetime,
    ttl: timedelta,
    key: ec.EllipticCurvePrivateKey,
) -> str:
    """A signed task for `agent_id` (its audience), valid from `now` for `ttl`."""
    if kind not in MIGRATION_TASK_KINDS:
        raise InvalidInput(f"unknown migration task kind {kind!r}")
    if not timedelta(0) < ttl <= MAX_TTL:
        raise InvalidInput(f"a task's lifetime must be positive and at most {MAX_TTL}")
    if _TASK_ID.fullmatch(task_id) is None:
        raise InvalidInput("task id: 1-64 of A-Z a-z 0-9 . _ : -")
    iat = int(now.timestamp())
    claims = {"kind": kind, "mig": str(uuid.UUID(str(migration_id))), "aud": check_agent_id(agent_id),
              "tid": task_id, "iat": iat, "exp": iat + int(ttl.total_seconds()), "args": dict(args)}  # fmt: skip
    return sign_es256(claims, key=key, typ=TASK_TYP)


def verify_migration_task(
    token: object,
    *,
    controller: VerifiedController,
    agent_id: str,
    now: datetime,
    kinds: frozenset[str] = MIGRATION_TASK_KINDS,
) -> VerifiedMigrationTask:
    """Check a task's signature (by `controller`), its audience (`agent_id`: a task for another
    engine is refused), kind, and times. Fails closed: `SignatureInvalid`, `VerificationError`
    (misdirected, expired, from the future, a kind this engine does not take), `InvalidInput`."""
    claims = verify_es256(token, public_key=controller.public_key, what="migration task", typ=TASK_TYP)
    if claims.get("aud") != agent_id:
        raise VerificationError(f"migration task for {claims.get('aud')!r}, not for this agent ({agent_id})")
    kind = claims.get("kind")
    if kind not in kinds:
        raise VerificationError(f"migration task of kind {kind!r}: this engine takes {sorted(kinds)}")
    iat, exp, current = claims.get("iat"), claims.get("exp"), int(now.timestamp())
    if not isinstance(iat, int) or not isinstance(exp, int) or isinstance(iat, bool) or isinstance(exp, bool):
        raise VerificationError("migration task: no issue or expiry time")
    if iat > current + CLOCK_SKEW:
        raise VerificationError(f"migration task issued {iat - current} s in the future")
    if current >= exp:
        raise VerificationError(f"migration task expired {current - exp} s ago")
    task_id, args = claims.get("tid"), claims.get("args")
    if not isinstance(task_id, str) or _TASK_ID.fullmatch(task_id) is None or not isinstance(args, dict):
        raise VerificationError("migration task: malformed task id or arguments")
    try:
        migration_id = uuid.UUID(claims.get("mig"))
    except (TypeError, ValueError, AttributeError):
        raise VerificationError("migration task: malformed migration id") from None
    return VerifiedMigrationTask(kind=kind, migration_id=migration_id, agent_id=agent_id, task_id=task_id,
                                 args=args, issued_at=iat, expires_at=exp)  # fmt: skip
