"""`TmClient`: the TM (TPM 2.0) client of vroot, over tpm2-pytss (ESAPI).

One `TmClient` owns one ESAPI context on one TPM (`device:/dev/tpmrm0`, or a swtpm TCTI from
`vroot.tm.swtpm`). The public API takes and returns plain Python values and marshalled TPM
structures, so the pure verifiers of `vroot.tpm2` can check what this module produces:

- PCR banks, read (any count; PCR_Read gives at most 8 digests per call) and extend;
- keys as `KeyBlob` (marshalled TPM2B_PRIVATE and TPM2B_PUBLIC); loaded objects as `TmObject`,
  a context manager that flushes the transient object on exit;
- EK from the TCG templates, SRK, AK under the EK, quote, certify, seal/unseal under PolicyPCR,
  sign, ActivateCredential, Duplicate/Import and a software wrap for Import.

Transient objects and sessions are always flushed in `finally` (libtpms has 3 object slots and no
resource manager): every method leaves the TPM as it found it, except for the objects it returns.
Every tpm2-pytss error becomes `TmError` (rc = the TSS2/TPM response code), and a policy that is
not satisfied (TPM_RC_POLICY_FAIL, TPM_RC_PCR_CHANGED) becomes `TmPolicyFailed`.

Sessions are unsalted and unencrypted (no parameter encryption): unsealed data crosses the TCTI in
the clear, which is fine for swtpm on a local socket or /dev/tpmrm0, not for an untrusted bus.

Only `vroot.tm` imports tpm2_pytss. TSS2_LOG defaults to `all+NONE` (set before the first import),
so expected failures do not print ESYS noise.
"""

from __future__ import annotations

import os

os.environ.setdefault("TSS2_LOG", "all+NONE")

import struct  # noqa: E402
from collections.abc import Iterator, Mapping, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Literal, TypeVar  # noqa: E402

from tpm2_pytss import (  # noqa: E402
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_SE,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_NV_PUBLIC,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPMA_NV,
    TPMA_OBJECT,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_SYM_DEF_OBJECT,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)
from tpm2_pytss.TSS2_Exception import TSS2_Exception  # noqa: E402
from tpm2_pytss.utils import NoSuchIndex, create_ek_template, wrap  # noqa: E402

from vroot.errors import InvalidInput, TmError, TmPolicyFailed  # noqa: E402
from vroot.tm._policy import (  # noqa: E402
    DUPLICATE_POLICY,
    EK_POLICY_SHA256,
    PCR_COUNT,
    PolicyCommandCode,
    PolicyPcr,
    PolicyStep,
    SelectionLike,
    normalize_selection,
    policy_digest,
)
from vroot.tpm2 import HashAlg, PcrSelection, parse_pcr_selection  # noqa: E402

__all__ = [
    "DuplicationBlob",
    "EK_CERT_INDEX",
    "KeyBlob",
    "KeyKind",
    "TmClient",
    "TmObject",
    "public_pem",
    "wrap_sealed",
]

KeyKind = Literal["ecc", "rsa"]
A = TPMA_OBJECT
EK_CERT_INDEX = {"ecc": 0x01C0000A, "rsa": 0x01C00002}
_EK_TEMPLATE = {"ecc": "EK-ECC256", "rsa": "EK-RSA2048"}
_SRK_ALG = {"ecc": "ecc256:aes128cfb", "rsa": "rsa2048:aes128cfb"}
_SIGN_ALG = {"ecc": "ecc256:ecdsa-sha256:null", "rsa": "rsa2048:rsassa-sha256:null"}
_AK_ATTRS = (
    A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.RESTRICTED | A.SIGN_ENCRYPT
)
_SIGNING_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT
_SEAL_ATTRS = A.FIXEDTPM | A.FIXEDPARENT
MAX_SEALED_DATA = 128  # MAX_SYM_DATA
_NV_CHUNK = 512
_AES128CFB = TPMT_SYM_DEF_OBJECT(
    algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128), mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)
)
_SYM_NULL = TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL)
_TPM_RC_POLICY_FAIL = 0x09D  # RC_FMT1 + 0x01D, before handle/parameter/session bits
_TPM_RC_PCR_CHANGED = 0x128
_TPM_RC_HANDLE = 0x08B  # RC_FMT1 + 0x00B

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# values


@dataclass(frozen=True)
class KeyBlob:
    """A TPM object outside the TPM: marshalled TPM2B_PRIVATE (encrypted by its parent) and TPM2B_PUBLIC."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"KeyBlob(private=<{len(self.private)} bytes>, public=<{len(self.public)} bytes>)"


@dataclass(frozen=True)
class DuplicationBlob:
    """TPM2_Duplicate's output, marshalled: TPM2B_DATA (inner wrapper key, empty if none),
    TPM2B_PRIVATE (the duplicate) and TPM2B_ENCRYPTED_SECRET (the seed for the new parent)."""

    encryption_key: bytes
    duplicate: bytes
    seed: bytes

    def __repr__(self) -> str:
        return f"DuplicationBlob(duplicate=<{len(self.duplicate)} bytes>, seed=<{len(self.seed)} bytes>)"


class TmObject:
    """An object loaded in the TPM through a `TmClient`.

    `public` is the marshalled TPM2B_PUBLIC, `name` the object's name (nameAlg || digest), `handle`
    the TPM handle (0x80xxxxxx transient, 0x81xxxxxx persistent). Used as a context manager, a
    transient object is flushed on exit; a persistent one is only forgotten by ESAPI (it stays in
    the TPM until `TmClient.evict`).
    """

    def __init__(
        self, client: TmClient, tr: Any, public: bytes, name: bytes, handle: int, *, persistent: bool
    ) -> None:
        self._client = client
        self._tr = tr
        self.public = public
        self.name = name
        self.handle = handle
        self.persistent = persistent
        # The TCG low-range EKs: no userWithAuth, authPolicy = PolicySecret(endorsement).
        pub = _unmarshal(TPM2B_PUBLIC, public, "public area").publicArea
        self.needs_endorsement_policy = (
            not (int(pub.objectAttributes) & A.USERWITHAUTH) and bytes(pub.authPolicy) == EK_POLICY_SHA256
        )
        self.closed = False

    def __repr__(self) -> str:
        kind = "persistent" if self.persistent else "transient"
        state = ", closed" if self.closed else ""
        return f"TmObject(0x{self.handle:08x} {kind}{state})"

    def close(self) -> None:
        """Flush (transient) or forget (persistent) this object; idempotent."""
        if not self.closed:
            self._client._release(self)

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except TmError:
                pass  # keep the original exception

    @property
    def tr(self) -> Any:
        if self.closed:
            raise TmError(f"{self!r} is closed")
        return self._tr


# --------------------------------------------------------------------------------------------
# errors and marshalling helpers


def _is_policy_failure(rc: int) -> bool:
    if rc >> 16:  # not from the TPM itself (a TSS layer)
        return False
    if rc & 0x80:  # format one: strip handle/parameter/session number
        return (rc & 0xBF) == _TPM_RC_POLICY_FAIL
    return (rc & 0xFFF) == _TPM_RC_PCR_CHANGED


def _tm_error(what: str, exc: TSS2_Exception) -> TmError:
    rc = int(exc.rc)
    if _is_policy_failure(rc):
        return TmPolicyFailed(f"{what}: policy not satisfied: {exc}", rc=rc)
    return TmError(f"{what}: {exc}", rc=rc)


@contextmanager
def _tss(what: str) -> Iterator[None]:
    try:
        yield
    except TSS2_Exception as exc:
        raise _tm_error(what, exc) from exc


def _unmarshal(cls: type[T], data: bytes, what: str) -> T:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        obj, used = cls.unmarshal(data)  # type: ignore[attr-defined]
    except (TSS2_Exception, ValueError, TypeError) as exc:
        raise InvalidInput(f"{what}: not a {cls.__name__}: {exc}") from exc
    if used != len(data):
        raise InvalidInput(f"{what}: {len(data) - used} trailing bytes after {cls.__name__}")
    return obj  # type: ignore[no-any-return]


def _tpml_selection(selection: SelectionLike) -> Any:
    return _unmarshal(TPML_PCR_SELECTION, normalize_selection(selection).encode(), "PCR selection")


def _read_selection(tpml: Any, what: str) -> PcrSelection:
    """A TPML_PCR_SELECTION the TPM returned, decoded by `vroot.tpm2`."""
    try:
        return parse_pcr_selection(tpml.marshal())
    except InvalidInput as exc:
        raise TmError(f"{what} returned a bad TPML_PCR_SELECTION: {exc}") from exc


def _kind(kind: str) -> KeyKind:
    if kind not in ("ecc", "rsa"):
        raise InvalidInput(f"key kind must be 'ecc' or 'rsa', got {kind!r}")
    return kind  # type: ignore[return-value]


def public_pem(public: bytes) -> bytes:
    """The SubjectPublicKeyInfo PEM of a marshalled TPM2B_PUBLIC (ECC or RSA)."""
    pub = _unmarshal(TPM2B_PUBLIC, public, "public area")
    try:
        return bytes(pub.to_pem())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"public area has no PEM form: {exc}") from exc


def wrap_sealed(
    new_parent_public: bytes,
    data: bytes,
    *,
    policy_digest: bytes | None = None,
    inner_wrap: bool = True,
) -> tuple[bytes, DuplicationBlob]:
    """Wrap `data` as a sealed data object for `new_parent_public`, in software (no source TPM).

    Returns the object's marshalled TPM2B_PUBLIC and the blob for `TmClient.import_`. Without
    `policy_digest` the object is unsealed with an empty password (userWithAuth); with one, only
    through that policy. Imported objects cannot be fixedTPM/fixedParent.
    """
    if not 0 < len(data) <= MAX_SEALED_DATA:
        raise InvalidInput(f"sealed data must be 1..{MAX_SEALED_DATA} bytes, got {len(data)}")
    if policy_digest is not None and len(policy_digest) != 32:
        raise InvalidInput(f"policy digest must be 32 bytes (SHA-256), got {len(policy_digest)}")
    parent = _unmarshal(TPM2B_PUBLIC, new_parent_public, "new parent public area")
    attrs = A.USERWITHAUTH if policy_digest is None else 0
    try:
        sens, pub = TPM2B_SENSITIVE.keyedhash_from_secret(data, objectAttributes=attrs)
        if policy_digest is not None:
            pub.publicArea.authPolicy = TPM2B_DIGEST(policy_digest)
        enc_key, dup, seed = wrap(parent.publicArea, pub, sens, None, _AES128CFB if inner_wrap else None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot wrap for this parent: {exc}") from exc
    return pub.marshal(), DuplicationBlob(enc_key.marshal(), dup.marshal(), seed.marshal())


# --------------------------------------------------------------------------------------------
# the client


class TmClient:
    """A TPM 2.0 through one ESAPI context. Use `TmClient.open(tcti)` as a context manager."""

    def __init__(self, esapi: Any, tcti: str | None = None) -> None:
        self._e = esapi
        self.tcti = tcti
        self._objects: set[TmObject] = set()
        self._sessions: set[Any] = set()

    @classmethod
    def open(cls, tcti: str | Any) -> TmClient:
        """Connect to the TPM behind `tcti`: a TCTI string (`device:/dev/tpmrm0`,
        `swtpm:host=...,port=...`, `swtpm:path=...`) or a tpm2-pytss TCTI object (for example a
        Python TCTI over a data channel attached to a swtpm's control socket)."""
        try:
            esapi = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise _tm_error(f"cannot open TPM {tcti!r}", exc) from exc
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"bad TCTI {tcti!r}: {exc}") from exc
        return cls(esapi, tcti if isinstance(tcti, str) else repr(tcti))

    def __enter__(self) -> TmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush what this client still holds (objects, sessions) and close the ESAPI context."""
        if self._e is None:
            return
        try:
            for obj in list(self._objects):
                try:
                    self._release(obj)
                except TmError:
                    pass
            for s in list(self._sessions):
                self._flush_quiet(s)
                self._sessions.discard(s)
        finally:
            self._e.close()
            self._e = None

    @property
    def esapi(self) -> Any:
        if self._e is None:
            raise TmError("TmClient is closed")
        return self._e

    # -- handles and flushing ------------------------------------------------------------------

    def _adopt(self, tr: Any, public: Any = None, *, persistent: bool = False) -> TmObject:
        e = self.esapi
        try:
            with _tss("read public area"):
                if public is None:
                    public = e.read_public(tr)[0]
                name = bytes(public.get_name())
                handle = int(e.tr_get_tpm_handle(tr))
            obj = TmObject(self, tr, public.marshal(), name, handle, persistent=persistent)
        except BaseException:
            if persistent:
                self._close_tr_quiet(tr)
            else:
                self._flush_quiet(tr)
            raise
        self._objects.add(obj)
        return obj

    def _release(self, obj: TmObject) -> None:
        if obj.closed:
            return
        obj.closed = True
        self._objects.discard(obj)
        if obj.persistent:
            self._close_tr_quiet(obj._tr)
        else:
            with _tss(f"flush 0x{obj.handle:08x}"):
                self.esapi.flush_context(obj._tr)

    def _flush_quiet(self, tr: Any) -> None:
        try:
            self.esapi.flush_context(tr)
        except TSS2_Exception:
            self._close_tr_quiet(tr)

    def _close_tr_quiet(self, tr: Any) -> None:
        try:
            self.esapi.tr_close(tr)
        except TSS2_Exception:
            pass

    @contextmanager
    def _session(self, kind: Any = TPM2_SE.POLICY) -> Iterator[Any]:
        """A policy (or trial) session with SHA-256, flushed on exit whatever happens."""
        with _tss("start policy session"):
            s = self.esapi.start_auth_session(
                ESYS_TR.NONE, ESYS_TR.NONE, kind, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
            )
        self._sessions.add(s)
        try:
            yield s
        except BaseException:
            self._sessions.discard(s)
            self._flush_quiet(s)
            raise
        self._sessions.discard(s)
        with _tss("flush policy session"):
            self.esapi.flush_context(s)

    @contextmanager
    def _policy(self, steps: Sequence[PolicyStep]) -> Iterator[Any]:
        with self._session() as s:
            self._apply(s, steps)
            yield s

    def _apply(self, s: Any, steps: Sequence[PolicyStep]) -> None:
        for step in steps:
            if isinstance(step, PolicyPcr):
                with _tss("PolicyPCR"):
                    self.esapi.policy_pcr(s, TPM2B_DIGEST(), _tpml_selection(step.selection))
            elif isinstance(step, PolicyCommandCode):
                with _tss("PolicyCommandCode"):
                    self.esapi.policy_command_code(s, step.code)
            else:
                raise InvalidInput(f"unknown policy step {step!r}")

    @contextmanager
    def _auth(self, obj: TmObject) -> Iterator[Any]:
        """The authorisation for using `obj`: the EK policy session, or the (empty) password."""
        if obj.needs_endorsement_policy:
            with self._session() as s:
                with _tss("PolicySecret(endorsement)"):
                    self.esapi.policy_secret(ESYS_TR.ENDORSEMENT, s, b"", b"", b"", 0)
                yield s
        else:
            yield ESYS_TR.PASSWORD

    # -- capabilities --------------------------------------------------------------------------

    def _handles(self, first: int, kinds: tuple[int, ...]) -> list[int]:
        """GetCapability(HANDLES) from `first`, keeping handles whose type byte is in `kinds`."""
        out: set[int] = set()
        prop = first
        with _tss("GetCapability(HANDLES)"):
            while True:
                more, data = self.esapi.get_capability(TPM2_CAP.HANDLES, prop, 64)
                got = [int(h) for h in data.data.handles]
                out.update(h for h in got if h >> 24 in kinds)
                if not more or not got or max(got) + 1 <= prop:
                    return sorted(out)
                prop = max(got) + 1

    def transient_handles(self) -> list[int]:
        """Transient objects loaded in the TPM (by anyone)."""
        return self._handles(0x80000000, (0x80,))

    def session_handles(self) -> list[int]:
        """HMAC and policy sessions in the TPM (by anyone), loaded or context-saved."""
        # TPM_HT_LOADED_SESSION lists loaded HMAC (0x02) and policy (0x03) sessions alike;
        # TPM_HT_SAVED_SESSION lists the context-saved ones.
        return sorted(set(self._handles(0x02000000, (0x02, 0x03)) + self._handles(0x03000000, (0x02, 0x03))))

    def persistent_handles(self) -> list[int]:
        """Persistent objects in the TPM."""
        return self._handles(0x81000000, (0x81,))

    def shutdown(self) -> None:
        """TPM2_Shutdown(CLEAR): an orderly shutdown before the TPM is powered off (its process stops).

        Without it the next TPM2_Startup counts a dictionary-attack failure (an unorderly shutdown
        may hide an attack), and a few restarts lock every DA-protected object out.
        """
        from tpm2_pytss import TPM2_SU

        with _tss("Shutdown(CLEAR)"):
            self.esapi.shutdown(TPM2_SU.CLEAR)

    def get_random(self, n: int) -> bytes:
        out = b""
        with _tss("GetRandom"):
            while len(out) < n:
                out += bytes(self.esapi.get_random(min(32, n - len(out))))
        return out

    # -- PCRs ----------------------------------------------------------------------------------

    def pcr_banks(self) -> tuple[HashAlg, ...]:
        """The active PCR banks (GetCapability PCRS: banks with at least one PCR allocated)."""
        with _tss("GetCapability(PCRS)"):
            _, data = self.esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
        assigned = _read_selection(data.data.assignedPCR, "GetCapability(PCRS)")
        return tuple(alg for alg, indices in assigned.banks if indices)

    def pcr_read(self, selection: SelectionLike | None = None) -> dict[HashAlg, dict[int, bytes]]:
        """PCR values by bank and index; by default every active bank, PCRs 0-23.

        PCR_Read returns at most 8 digests per call: the returned selection says which; the rest is
        asked again until everything is read.
        """
        if selection is None:
            selection = {alg: range(PCR_COUNT) for alg in self.pcr_banks()}
        norm = normalize_selection(selection)
        for _attempt in range(8):
            values, counters = self._pcr_read_once(norm)
            if len(set(counters)) <= 1:
                return values
            # an extend came between two PCR_Read calls: the values may be of two moments
        raise TmError("PCRs kept changing while being read (pcrUpdateCounter moved 8 times)")

    def _pcr_read_once(self, norm: PcrSelection) -> tuple[dict[HashAlg, dict[int, bytes]], list[int]]:
        out: dict[HashAlg, dict[int, bytes]] = {alg: {} for alg, _ in norm.banks}
        remaining = {alg: set(idx) for alg, idx in norm.banks}
        counters = []
        while any(remaining.values()):
            ask = {alg: idx for alg, idx in remaining.items() if idx}
            with _tss("PCR_Read"):
                counter, sel_out, digests = self.esapi.pcr_read(_tpml_selection(ask))
            counters.append(int(counter))
            values = [bytes(d) for d in digests]
            got = _read_selection(sel_out, "PCR_Read")
            n = progress = 0
            for alg, i in got:  # digest order: banks as returned, indices ascending
                if n >= len(values):
                    raise TmError("PCR_Read returned fewer digests than its selection says")
                if alg in remaining and i in remaining[alg]:
                    out[alg][i] = values[n]
                    remaining[alg].discard(i)
                    progress += 1
                n += 1
            if progress == 0:
                missing = ", ".join(f"{a.bank}:{sorted(i)}" for a, i in remaining.items() if i)
                raise TmError(f"PCRs not readable (bank not active?): {missing}")
        return {alg: dict(sorted(vals.items())) for alg, vals in out.items()}, counters

    def pcr_extend(self, pcr: int, digests: Mapping[HashAlg, bytes]) -> None:
        """Extend PCR `pcr` with one digest per bank (banks not named are not extended)."""
        if not 0 <= pcr < PCR_COUNT:
            raise InvalidInput(f"PCR index {pcr} out of range 0..{PCR_COUNT - 1}")
        if not digests:
            raise InvalidInput("pcr_extend needs at least one digest")
        wire = bytearray(struct.pack(">I", len(digests)))
        for alg, d in digests.items():
            alg = HashAlg(alg)
            if len(d) != alg.digest_size:
                raise InvalidInput(
                    f"{alg.bank} digest for PCR {pcr} is {len(d)} bytes, want {alg.digest_size}"
                )
            wire += struct.pack(">H", alg) + bytes(d)
        values = _unmarshal(TPML_DIGEST_VALUES, bytes(wire), "digests")
        with _tss(f"PCR_Extend({pcr})"):
            self.esapi.pcr_extend(ESYS_TR(int(ESYS_TR.PCR0) + pcr), values)

    def pcr_policy_digest(self, selection: SelectionLike) -> bytes:
        """The PolicyPCR digest (SHA-256 session) of the PCRs' current values, computed in software."""
        step = PolicyPcr.of(selection)
        return policy_digest([step], self.pcr_read(step.selection))

    def trial_policy(self, steps: Sequence[PolicyStep]) -> bytes:
        """The policy digest of `steps` as the TPM computes it (trial session, current PCR values)."""
        with self._session(TPM2_SE.TRIAL) as s:
            self._apply(s, steps)
            with _tss("PolicyGetDigest"):
                return bytes(self.esapi.policy_get_digest(s))

    # -- keys ----------------------------------------------------------------------------------

    def create_primary_ek(self, kind: KeyKind = "ecc") -> TmObject:
        """The EK from the TCG EK Credential Profile template (EK-ECC256 or EK-RSA2048), as a transient."""
        kind = _kind(kind)
        e = self.esapi
        try:
            _, template = create_ek_template(_EK_TEMPLATE[kind], self._nv_read_for_template)
        except ValueError as exc:
            raise TmError(f"EK template {_EK_TEMPLATE[kind]}: {exc}") from exc
        with _tss(f"CreatePrimary(EK {kind})"):
            tr, pub = e.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
        return self._adopt(tr, pub)

    def create_srk(self, kind: KeyKind = "ecc") -> TmObject:
        """The storage root key in the owner hierarchy, as `tpm2_createprimary -C o -G ecc|rsa` makes it."""
        kind = _kind(kind)
        template = TPM2B_PUBLIC.parse(
            _SRK_ALG[kind], objectAttributes=A.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS
        )
        with _tss(f"CreatePrimary(SRK {kind})"):
            tr, pub = self.esapi.create_primary(None, template, ESYS_TR.OWNER)[:2]
        return self._adopt(tr, pub)

    def _create(self, parent: TmObject, template: Any, sensitive: Any, what: str) -> KeyBlob:
        with self._auth(parent) as s, _tss(f"Create({what})"):
            priv, pub = self.esapi.create(parent.tr, sensitive, template, session1=s)[:2]
        return KeyBlob(priv.marshal(), pub.marshal())

    def create_ak(self, ek: TmObject, kind: KeyKind = "ecc") -> KeyBlob:
        """An attestation key under the EK: restricted signing, ECDSA-SHA256 (P-256) or RSASSA-SHA256 (2048)."""
        kind = _kind(kind)
        template = TPM2B_PUBLIC.parse(_SIGN_ALG[kind], nameAlg="sha256", objectAttributes=_AK_ATTRS)
        return self._create(ek, template, None, f"AK {kind}")

    def create_signing_key(
        self, parent: TmObject, kind: KeyKind = "ecc", *, policy_digest: bytes | None = None
    ) -> KeyBlob:
        """An unrestricted signing key (ECDSA-SHA256 or RSASSA-SHA256) for `sign_digest`.

        Without `policy_digest` it is used with the empty password; with one, only through that
        policy (e.g. PolicyPCR: the key signs only while the PCRs hold given values).
        """
        kind = _kind(kind)
        attrs = _SIGNING_ATTRS | (A.USERWITHAUTH if policy_digest is None else 0)
        template = TPM2B_PUBLIC.parse(
            _SIGN_ALG[kind], nameAlg="sha256", objectAttributes=attrs, authPolicy=policy_digest
        )
        return self._create(parent, template, None, f"signing key {kind}")

    def load(self, parent: TmObject, blob: KeyBlob) -> TmObject:
        """Load `blob` under `parent`; the returned object flushes on `with` exit."""
        priv = _unmarshal(TPM2B_PRIVATE, blob.private, "private part")
        pub = _unmarshal(TPM2B_PUBLIC, blob.public, "public part")
        with self._auth(parent) as s, _tss("Load"):
            tr = self.esapi.load(parent.tr, priv, pub, session1=s)
        return self._adopt(tr, pub)

    def read_public(self, obj: TmObject | int) -> tuple[bytes, bytes, bytes]:
        """(TPM2B_PUBLIC marshalled, name, qualified name) of a loaded object or a persistent handle.

        Names are the TPM2B_NAME payloads: nameAlg (u16) || digest.
        """
        e = self.esapi
        if isinstance(obj, TmObject):
            with _tss("ReadPublic"):
                pub, name, qname = e.read_public(obj.tr)
            return pub.marshal(), bytes(name), bytes(qname)
        with _tss(f"ReadPublic(0x{obj:08x})"):
            tr = e.tr_from_tpmpublic(obj)
        try:
            with _tss(f"ReadPublic(0x{obj:08x})"):
                pub, name, qname = e.read_public(tr)
        finally:
            self._close_tr_quiet(tr)
        return pub.marshal(), bytes(name), bytes(qname)

    def persist(self, key: TmObject, handle: int) -> TmObject:
        """Make a persistent copy of `key` at `handle` (0x81xxxxxx, owner authorisation).

        The transient `key` stays loaded (flush it as usual); the returned object refers to the
        persistent copy (closing it only forgets it; `evict` removes it).
        """
        with _tss(f"EvictControl(persist 0x{handle:08x})"):
            tr = self.esapi.evict_control(ESYS_TR.OWNER, key.tr, handle)
        return self._adopt(tr, persistent=True)

    def persistent(self, handle: int) -> TmObject:
        """A persistent object already in the TPM."""
        with _tss(f"open persistent 0x{handle:08x}"):
            tr = self.esapi.tr_from_tpmpublic(handle)
        return self._adopt(tr, persistent=True)

    def evict(self, handle: int) -> None:
        """Remove the persistent object at `handle` (owner authorisation)."""
        e = self.esapi
        with _tss(f"evict 0x{handle:08x}"):
            tr = e.tr_from_tpmpublic(handle)
        try:
            with _tss(f"EvictControl(evict 0x{handle:08x})"):
                e.evict_control(ESYS_TR.OWNER, tr, handle)
        except BaseException:
            self._close_tr_quiet(tr)
            raise
        # A successful evict invalidates tr inside ESAPI; forgetting it again is harmless.
        for obj in list(self._objects):
            if obj.persistent and obj.handle == handle:
                obj.closed = True
                self._objects.discard(obj)
                self._close_tr_quiet(obj._tr)

    # -- EK certificates -------------------------------------------------------------------------

    def ek_certificate(self, kind: KeyKind = "ecc") -> bytes | None:
        """The DER EK certificate at its TCG NV index (0x01C0000A ECC, 0x01C00002 RSA), or None."""
        return self.nv_read(EK_CERT_INDEX[_kind(kind)])

    def nv_read(self, index: int) -> bytes | None:
        """The whole content of the NV index (read with its own, empty, authorisation), or None if undefined."""
        e = self.esapi
        try:
            tr = e.tr_from_tpmpublic(index)
        except TSS2_Exception as exc:
            if (int(exc.rc) & 0xBF) == _TPM_RC_HANDLE and not int(exc.rc) >> 16:
                return None
            raise _tm_error(f"NV index 0x{index:08x}", exc) from exc
        try:
            with _tss(f"NV_Read(0x{index:08x})"):
                nvpub, _ = e.nv_read_public(tr)
                size = nvpub.nvPublic.dataSize
                out = b""
                while len(out) < size:
                    out += bytes(e.nv_read(tr, min(_NV_CHUNK, size - len(out)), len(out), auth_handle=tr))
            return out
        finally:
            self._close_tr_quiet(tr)

    def _nv_read_for_template(self, index: int) -> bytes:
        # The callback `create_ek_template` wants: NoSuchIndex for an undefined index.
        data = self.nv_read(int(index))
        if data is None:
            raise NoSuchIndex(index)
        return data

    def write_ek_certificate(self, der: bytes, kind: KeyKind = "ecc", *, lock: bool = True) -> None:
        """Define the EK certificate NV index with platform authorisation, write `der`, write-lock it."""
        index = EK_CERT_INDEX[_kind(kind)]
        der = bytes(der)
        if not der:
            raise InvalidInput("empty EK certificate")
        attrs = (
            TPMA_NV.PPWRITE
            | TPMA_NV.PPREAD
            | TPMA_NV.OWNERREAD
            | TPMA_NV.AUTHREAD
            | TPMA_NV.NO_DA
            | TPMA_NV.PLATFORMCREATE
            | TPMA_NV.WRITEDEFINE
        )
        nvpub = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=len(der)
            )
        )
        e = self.esapi
        with _tss(f"NV_DefineSpace(0x{index:08x})"):
            tr = e.nv_define_space(None, nvpub, ESYS_TR.PLATFORM)
        try:
            with _tss(f"NV_Write(0x{index:08x})"):
                for off in range(0, len(der), _NV_CHUNK):
                    e.nv_write(tr, der[off : off + _NV_CHUNK], off, ESYS_TR.PLATFORM)
                if lock:
                    e.nv_write_lock(tr, ESYS_TR.PLATFORM)
        finally:
            self._close_tr_quiet(tr)

    # -- attestation -----------------------------------------------------------------------------

    def quote(self, ak: TmObject, selection: SelectionLike, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote with the AK's scheme: (TPMS_ATTEST, TPMT_SIGNATURE), as `tpm2_quote -m` / `-s` write them."""
        sel = _tpml_selection(selection)
        with self._auth(ak) as s, _tss("Quote"):
            attest, sig = self.esapi.quote(
                ak.tr, sel, TPM2B_DATA(bytes(nonce)), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), session1=s
            )
        return bytes(attest), sig.marshal()

    def certify(self, obj: TmObject, signer: TmObject, *, qualifying_data: bytes) -> tuple[bytes, bytes]:
        """TPM2_Certify `obj` with `signer` (its scheme): (TPMS_ATTEST, TPMT_SIGNATURE) marshalled."""
        with self._auth(obj) as s1, self._auth(signer) as s2, _tss("Certify"):
            attest, sig = self.esapi.certify(
                obj.tr,
                signer.tr,
                TPM2B_DATA(bytes(qualifying_data)),
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                session1=s1,
                session2=s2,
            )
        return bytes(attest), sig.marshal()

    def sign_digest(
        self, key: TmObject, digest: bytes, *, policy: Sequence[PolicyStep] | None = None
    ) -> bytes:
        """TPM2_Sign a digest with an unrestricted key (its scheme, NULL ticket): TPMT_SIGNATURE marshalled.

        `policy` gives the steps (e.g. `[PolicyPcr.of({HashAlg.SHA256: [16]})]`) for a key that
        needs a policy session.
        """
        with self._maybe_policy(key, policy) as s, _tss("Sign"):
            sig = self.esapi.sign(
                key.tr, TPM2B_DIGEST(bytes(digest)), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), session1=s
            )
        return sig.marshal()

    @contextmanager
    def _maybe_policy(self, obj: TmObject, policy: Sequence[PolicyStep] | None) -> Iterator[Any]:
        if policy is None:
            with self._auth(obj) as s:
                yield s
        else:
            with self._policy(policy) as s:
                yield s

    def activate_credential(
        self, ak: TmObject, ek: TmObject, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """TPM2_ActivateCredential: the secret of a MakeCredential for `ak`'s name under `ek`.

        `credential_blob` is a marshalled TPM2B_ID_OBJECT, `encrypted_secret` a TPM2B_ENCRYPTED_SECRET.
        """
        blob = _unmarshal(TPM2B_ID_OBJECT, credential_blob, "credential blob")
        secret = _unmarshal(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encrypted secret")
        with self._auth(ak) as s1, self._auth(ek) as s2, _tss("ActivateCredential"):
            out = self.esapi.activate_credential(ak.tr, ek.tr, blob, secret, session1=s1, session2=s2)
        return bytes(out)

    # -- sealing -----------------------------------------------------------------------------------

    def seal(self, parent: TmObject, data: bytes, *, policy_digest: bytes) -> KeyBlob:
        """Seal `data` (1..128 bytes) under `parent`: a keyedhash data object, fixedTPM|fixedParent,
        no userWithAuth, so only a session satisfying `policy_digest` (SHA-256) unseals it."""
        if not 0 < len(data) <= MAX_SEALED_DATA:
            raise InvalidInput(f"sealed data must be 1..{MAX_SEALED_DATA} bytes, got {len(data)}")
        if len(policy_digest) != 32:
            raise InvalidInput(f"policy digest must be 32 bytes (SHA-256), got {len(policy_digest)}")
        template = TPM2B_PUBLIC.parse(
            "keyedhash", nameAlg="sha256", objectAttributes=_SEAL_ATTRS, authPolicy=bytes(policy_digest)
        )
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=bytes(data)))
        return self._create(parent, template, sensitive, "sealed data")

    def seal_for_duplication(self, parent: TmObject, data: bytes) -> KeyBlob:
        """Seal `data` in an object that may be duplicated to another TPM.

        Not fixedTPM/fixedParent; authPolicy = PolicyCommandCode(Duplicate) (what `duplicate` with
        `DUPLICATE_POLICY` satisfies); userWithAuth with an empty password, so whoever can load it
        (under this parent, or the new one) can unseal it.
        """
        if not 0 < len(data) <= MAX_SEALED_DATA:
            raise InvalidInput(f"sealed data must be 1..{MAX_SEALED_DATA} bytes, got {len(data)}")
        template = TPM2B_PUBLIC.parse(
            "keyedhash",
            nameAlg="sha256",
            objectAttributes=A.USERWITHAUTH,
            authPolicy=policy_digest(DUPLICATE_POLICY),
        )
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=bytes(data)))
        return self._create(parent, template, sensitive, "duplicable sealed data")

    def unseal(self, parent: TmObject, blob: KeyBlob, *, pcrs: SelectionLike | None = None) -> bytes:
        """Load `blob` under `parent` and unseal it, through PolicyPCR(`pcrs`) when given (else the
        empty password); `TmPolicyFailed` when the PCRs no longer hold the sealed-to values."""
        policy = None if pcrs is None else [PolicyPcr.of(pcrs)]
        with self.load(parent, blob) as obj, self._maybe_policy(obj, policy) as s, _tss("Unseal"):
            return bytes(self.esapi.unseal(obj.tr, session1=s))

    # -- duplication -------------------------------------------------------------------------------

    def duplicate(
        self,
        obj: TmObject,
        new_parent_public: bytes,
        *,
        policy: Sequence[PolicyStep] = DUPLICATE_POLICY,
        inner_wrap: bool = True,
    ) -> DuplicationBlob:
        """TPM2_Duplicate `obj` (loaded, not fixedParent) to the parent whose TPM2B_PUBLIC is given.

        `policy` are the steps that satisfy the object's authPolicy for Duplicate (the DUP role
        always needs a policy session). The new parent is loaded as a public-only object for the
        call (a transient slot: at most two other objects may be loaded meanwhile).
        """
        parent_pub = _unmarshal(TPM2B_PUBLIC, new_parent_public, "new parent public area")
        e = self.esapi
        with _tss("LoadExternal(new parent)"):
            parent_tr = e.load_external(parent_pub, None, ESYS_TR.NULL)
        parent = self._adopt(parent_tr, parent_pub)
        with parent, self._policy(policy) as s, _tss("Duplicate"):
            enc_key, dup, seed = e.duplicate(
                obj.tr, parent.tr, TPM2B_DATA(), _AES128CFB if inner_wrap else _SYM_NULL, session1=s
            )
        return DuplicationBlob(enc_key.marshal(), dup.marshal(), seed.marshal())

    def import_(self, parent: TmObject, public: bytes, blob: DuplicationBlob) -> KeyBlob:
        """TPM2_Import a duplicate (from `duplicate` or `wrap_sealed`) under `parent`; load the result with `load`."""
        pub = _unmarshal(TPM2B_PUBLIC, public, "object public area")
        enc_key = _unmarshal(TPM2B_DATA, blob.encryption_key, "encryption key")
        dup = _unmarshal(TPM2B_PRIVATE, blob.duplicate, "duplicate")
        seed = _unmarshal(TPM2B_ENCRYPTED_SECRET, blob.seed, "seed")
        sym = _AES128CFB if len(bytes(enc_key)) else _SYM_NULL
        with self._auth(parent) as s, _tss("Import"):
            priv = self.esapi.import_(parent.tr, enc_key, pub, dup, seed, sym, session1=s)
        return KeyBlob(priv.marshal(), pub.marshal())

    # -- decryption keys (data protection, DP-1) ---------------------------------------------------

    def create_decryption_primary(self) -> TmObject:
        """An unrestricted ECC P-256 decryption key (scheme ECDH-SHA256, no symmetric, no KDF) as a
        primary of the owner hierarchy, for `ecdh_zgen`.

        fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|decrypt, nameAlg SHA-256, empty
        unique: a primary is derived from the owner seed and the template, so the same key (same
        name) comes back each time until the owner hierarchy is cleared (TPM2_Clear). noDA: its
        authValue is empty, so dictionary-attack protection guards nothing, and without noDA each
        unorderly TM shutdown after a use counts as a failure until the TM locks the key out.
        """
        template = TPM2B_PUBLIC.parse(
            "ecc256:ecdh-sha256",
            nameAlg="sha256",
            objectAttributes=A.FIXEDTPM
            | A.FIXEDPARENT
            | A.SENSITIVEDATAORIGIN
            | A.USERWITHAUTH
            | A.NODA
            | A.DECRYPT,
        )
        with _tss("CreatePrimary(ECDH decryption key)"):
            tr, pub = self.esapi.create_primary(None, template, ESYS_TR.OWNER)[:2]
        return self._adopt(tr, pub)

    def ecdh_zgen(self, key: TmObject, point: bytes) -> bytes:
        """TPM2_ECDH_ZGen with an ECC decryption key: Z, the x-coordinate of d·`point` (SP800-56A).

        `point` is an uncompressed SEC1 point (0x04 ‖ x ‖ y) on the key's curve. The TPM refuses a
        point that is not on the curve (TmError, TPM_RC_ECC_POINT).
        """
        from tpm2_pytss import TPM2B_ECC_POINT, TPMS_ECC_POINT

        point = bytes(point)
        if len(point) < 3 or point[0] != 4 or len(point) % 2 != 1:
            raise InvalidInput(f"ECDH point must be uncompressed SEC1 (0x04 ‖ x ‖ y), got {len(point)} bytes")
        size = (len(point) - 1) // 2
        inpoint = TPM2B_ECC_POINT(TPMS_ECC_POINT(x=point[1 : 1 + size], y=point[1 + size :]))
        with self._auth(key) as s, _tss("ECDH_ZGen"):
            out = self.esapi.ecdh_zgen(key.tr, inpoint, session1=s)
        return bytes(out.point.x)
