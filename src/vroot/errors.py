"""The one error tree of vroot.

    VrootError
    ├── InvalidInput                  bad bytes, files or arguments (CLI exit 2, HTTP 400)
    │   ├── TpmStructureError         a TPM 2.0 wire structure that does not decode (offset, what)
    │   └── EventLogError             a TCG or IMA log that does not decode (offset, what)
    ├── VerificationError             evidence that decodes but does not verify (CLI exit 1)
    │   ├── QuoteError                one reason per failed quote check
    │   │   ├── SignatureInvalid
    │   │   ├── AttestMagicInvalid, AttestTypeInvalid
    │   │   ├── NonceMismatch
    │   │   ├── PcrSelectionMismatch, PcrDigestMismatch
    │   │   └── HashAlgorithmNotAllowed
    │   ├── ReplayMismatch            a log that does not replay to the claimed PCRs (bank, pcrs)
    │   ├── ChainBroken               a measured-boot link that does not hold
    │   ├── CertificateInvalid        an X.509 certificate or chain that does not verify
    │   ├── MerkleProofInvalid        an inclusion proof that does not lead to the root
    │   ├── HostStateChanged          the host left the trusted state a key was sealed to (pcrs)
    │   ├── NonceInvalid              a challenge that is not fresh
    │   │   ├── NonceUnknown, NonceExpired, NonceReused
    │   ├── Revoked                   a certificate or agent revoked by the operator
    │   ├── ActivationFailed          a credential activation that returned the wrong secret
    │   └── MigrationRefused          a vTM migration step refused (MIG-4..7, VMM-S4); one reason each
    │       ├── MigrationTargetInvalid    the destination's target key is not a certified TM storage key
    │       ├── MigrationBlobExpired      the blob's (or the migration's) expiry has passed
    │       ├── MigrationBlobReplayed     this migration was already imported (or finished) here
    │       ├── MigrationBlobDuplicated   this host already holds a vTM for that VM
    │       ├── MigrationBlobMisdirected  the blob is for another destination or migration
    │       ├── MigrationBlobTampered     authenticated decryption or a header check failed
    │       └── MigrationStateMismatch    the imported vTM is not the one exported (vEK, vPCRs)
    ├── NotFound
    ├── Conflict
    ├── Unavailable                   a dependency (swtpm, TM, database) that cannot answer
    │   └── SwtpmError                a swtpm process that would not start or answer
    └── TmError                       a TPM command that returned an error code (rc)
        └── TmPolicyFailed            a policy session did not satisfy the object (e.g. PCRs changed)

Domain code raises these and never prints, exits or picks an HTTP status; the three edges
(`vroot.tm`, the HTTP API, `vroot.cli`) translate. Messages give got/want and name the PCR,
event or object; they never carry a secret.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `vroot eventlog replay` start-up is benchmarked
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

__all__ = [
    "ActivationFailed",
    "AttestMagicInvalid",
    "AttestTypeInvalid",
    "CertifiedNameMismatch",
    "CertificateInvalid",
    "ChainBroken",
    "Conflict",
    "MigrationBlobDuplicated",
    "MigrationBlobExpired",
    "MigrationBlobMisdirected",
    "MigrationBlobReplayed",
    "MigrationBlobTampered",
    "MigrationRefused",
    "MigrationStateMismatch",
    "MigrationTargetInvalid",
    "EventLogError",
    "HashAlgorithmNotAllowed",
    "HostStateChanged",
    "InvalidInput",
    "KeyAttributesInvalid",
    "MerkleProofInvalid",
    "NonceExpired",
    "NonceInvalid",
    "NonceMismatch",
    "NonceReused",
    "NonceUnknown",
    "NotFound",
    "PcrDigestMismatch",
    "PcrSelectionMismatch",
    "QuoteError",
    "ReplayMismatch",
    "Revoked",
    "SignatureInvalid",
    "SwtpmError",
    "TmError",
    "TmPolicyFailed",
    "TpmStructureError",
    "Unavailable",
    "VerificationError",
    "VrootError",
]


class VrootError(Exception):
    """Base of every error vroot raises on purpose."""

    def diagnostics(self) -> str:
        """One line for a person: what was wrong, where. Never holds a secret."""
        return str(self)


class InvalidInput(VrootError):
    """Input that cannot be read: malformed bytes, a bad file, a wrong argument."""


class _OffsetError(InvalidInput):
    """A decoding error at a byte offset of some input."""

    def __init__(self, what: str, *, offset: int | None = None, source: str | None = None) -> None:
        self.what = what
        self.offset = offset
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{': '.join([', '.join(where), self.what]) if where else self.what}"


class TpmStructureError(_OffsetError):
    """A TPM 2.0 structure is truncated, has trailing bytes, or holds a value it may not hold."""


class EventLogError(_OffsetError):
    """A TCG PC Client or IMA measurement log does not decode."""


class VerificationError(VrootError):
    """Evidence decoded but did not verify. Callers must treat the evidence as untrusted."""


class QuoteError(VerificationError):
    """A TPM2_Quote failed one check; the subclass names which."""


class SignatureInvalid(QuoteError):
    """The signature does not verify under the given key."""


class AttestMagicInvalid(QuoteError):
    """TPMS_ATTEST.magic is not TPM_GENERATED_VALUE: the TPM did not make this structure."""


class AttestTypeInvalid(QuoteError):
    """TPMS_ATTEST.type is not the expected TPM_ST_ATTEST_* tag."""


class NonceMismatch(QuoteError):
    """extraData is not the nonce the verifier issued."""


class PcrSelectionMismatch(QuoteError):
    """The quoted PCR selection is not the one required, or the claimed values do not cover it."""


class PcrDigestMismatch(QuoteError):
    """pcrDigest does not equal the hash of the claimed PCR values."""


class HashAlgorithmNotAllowed(QuoteError):
    """A hash algorithm outside the verifier's allowed set was used."""


class CertifiedNameMismatch(QuoteError):
    """TPMS_CERTIFY_INFO.name is not the name of the object the verifier expected."""


class KeyAttributesInvalid(QuoteError):
    """The signing key's attributes do not allow the claim (an AK must be a restricted signing key)."""


class ReplayMismatch(VerificationError):
    """A log replays to PCR values other than the ones claimed.

    `pcrs` lists the PCR indices that differ in `bank` (a hash algorithm name).
    """

    def __init__(self, message: str, *, bank: str, pcrs: Iterable[int]) -> None:
        self.bank = bank
        self.pcrs = tuple(sorted(pcrs))
        super().__init__(message)


class ChainBroken(VerificationError):
    """A link of a transitive-trust chain does not hold (a stage not measured before it ran)."""


class CertificateInvalid(VerificationError):
    """An X.509 certificate (EK, vEK, AK) or its chain does not verify, or says what it may not."""


class MerkleProofInvalid(VerificationError):
    """A Merkle inclusion proof does not lead from the leaf to the expected root."""


class HostStateChanged(VerificationError):
    """The host's measured state is not the trusted state a key was sealed to.

    `pcrs` lists the PCR indices whose values differ from those of the trusted state.
    """

    def __init__(self, message: str, *, pcrs: Iterable[int]) -> None:
        self.pcrs = tuple(sorted(pcrs))
        super().__init__(message)


class NonceInvalid(VerificationError):
    """A challenge nonce that the verifier cannot accept (RA-2: single use, not expired, its own)."""


class NonceUnknown(NonceInvalid):
    """The verifier never issued this nonce (or issued it to another agent or purpose)."""


class NonceExpired(NonceInvalid):
    """The nonce was issued, but its time to live has passed."""


class NonceReused(NonceInvalid):
    """The nonce was already used once: a replayed response."""


class Revoked(VerificationError):
    """The operator revoked this certificate or agent; it no longer counts."""


class ActivationFailed(VerificationError):
    """TPM2_ActivateCredential did not return the secret the PCA wrapped: wrong EK or AK (RA-1)."""


class MigrationRefused(VerificationError):
    """A vTM migration step was refused (DESIGN.md section 6); the subclass names the reason."""


class MigrationTargetInvalid(MigrationRefused):
    """The destination's migration target key is not a restricted TM storage key certified by its AK
    over this migration's qualifying data (MIG-4)."""


class MigrationBlobExpired(MigrationRefused):
    """The migration blob (or the migration itself) is past its expiry."""


class MigrationBlobReplayed(MigrationRefused):
    """The migration was already imported or finished on this host: a blob imports once."""


class MigrationBlobDuplicated(MigrationRefused):
    """This host already holds a vTM of that VM: importing would make a second copy."""


class MigrationBlobMisdirected(MigrationRefused):
    """The blob is for another destination (another target key) or a migration not prepared here."""


class MigrationBlobTampered(MigrationRefused):
    """The blob's header does not match the migration record, or authenticated decryption failed."""


class MigrationStateMismatch(MigrationRefused):
    """The imported vTM is not the exported one: another vEK, or vPCRs other than exported."""


class NotFound(VrootError):
    """A named object (VM, vTM, host, file) does not exist."""


class Conflict(VrootError):
    """The request conflicts with existing state (a duplicate, a lock held)."""


class Unavailable(VrootError):
    """A dependency that should answer does not (swtpm, TM device, database)."""


class SwtpmError(Unavailable):
    """A swtpm process would not start, answer, save or stop."""


class TmError(VrootError):
    """A TPM command failed with response code `rc` (TPM_RC / TSS2_RC)."""

    def __init__(self, message: str, *, rc: int | None = None) -> None:
        self.rc = rc
        super().__init__(message if rc is None else f"{message} (rc 0x{rc:x})")


class TmPolicyFailed(TmError):
    """A policy session did not satisfy the object's authPolicy (for PolicyPCR: PCRs changed)."""
