"""Simulated hosts of the fleet benchmark: software TMs whose evidence is real to the server.

    machines = make_machine_types()                      # a few kinds of host (own logs, baseline)
    agent = SimAgent.create("fleet-00001", machines[0], manufacturer_ca, now=now)
    begin = {... agent.enrollment_claim() ...}           # POST /v1/enrollments
    secret = agent.activate(credential_blob, encrypted_secret)   # TPM2_ActivateCredential, in software
    body = agent.activation(enrollment_id, secret)       # POST /v1/enrollments/{id}/activation
    evidence = agent.evidence(nonce)                     # the `attest` task's {"evidence": ...}

Each simulated host is what `vroot host init` makes of a TM, with software keys instead of TM
objects:

- an ECC P-256 EK with the TCG default template (restricted decryption, AES-128-CFB, PolicySecret
  of the endorsement hierarchy) and an EK certificate from a test manufacturer CA that the server
  trusts (`vroot.pki.issue_ek_certificate`);
- an ECC P-256 AK (restricted signing, ECDSA-SHA256) under that EK;
- a vTM-manager key (unrestricted signing, fixedTPM, no userWithAuth, PolicyPCR over the trusted
  boot state) with the AK's long-lived TPM2_Certify of it over `manager_qualifying_data(host_id)`.

Enrollment answers the server's MakeCredential with the math of TPM2_ActivateCredential for an
ECC EK (TPM 2.0 part 1, 24 and C.6.4): ECDH of the EK key with the ephemeral point, KDFe
"IDENTITY" to the seed, the HMAC under KDFa "INTEGRITY" over the encrypted identity and the AK's
name checked, then AES-128-CFB under KDFa "STORAGE". A credential made for another EK or another
object name fails the HMAC, as on a TM.

Attestation evidence is the host agent's deep-quote bundle (`vroot.attestation.host`): a
TPMS_ATTEST quote of SHA-256 PCRs 0-10 and 14 (the host agent's DEEP_QUOTE_PCRS) over the server's
nonce, signed by the AK; the PCR values the boot log (a measured boot of `HOST_CHAIN` planned by
`vroot.measure.plan_boot`, SHA-1 and SHA-256 banks), the binary IMA list and the (empty) vTM launch
log replay to; and a fresh TPM2_Certify of the manager key over the same nonce. The TM clock runs
in milliseconds since the simulated host started; reset and restart counts stay fixed (no reboot).

Machine types differ in firmware and kernel builds (`write_images` flavours) and in the number
of runtime files IMA measured at boot. While a host runs, it measures `ima_growth` new files per
attestation (from an allowlisted pool), so the server's incremental IMA appraisal has new entries
to judge each time. Hosts of one type boot identically, so the logs of a type are built once and
their encodings cached per IMA length; what is per host is keys, nonce, clock and signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from vroot.baseline import dump_manifest, learn_baseline
from vroot.eventlog import (
    TcgLogBuilder,
    UnverifiedImaLog,
    encode_ima_binary,
    encode_tcg_log,
    ima_ng_entry,
    replay_tcg_log,
)
from vroot.host._config import DEFAULT_TRUSTED_PCRS
from vroot.host._provision import manager_qualifying_data, trusted_policy
from vroot.measure import HOST_CHAIN, LAUNCH_PCR, plan_boot, write_images
from vroot.pki import CertificateAuthority, issue_ek_certificate
from vroot.tpm2 import (
    AK_ATTRIBUTES,
    TPM_GENERATED_VALUE,
    AttestType,
    CertifyInfo,
    HashAlg,
    ObjectAttributes,
    PcrSelection,
    PublicArea,
    QuoteInfo,
    SigAlg,
    Signature,
    SymDef,
    TpmAlg,
    UnverifiedAttest,
    kdfa,
    kdfe,
    policy_secret,
    public_area_from_key,
    qualified_name,
)

__all__ = [
    "BANKS",
    "QUOTE_PCRS",
    "MachineType",
    "SimAgent",
    "activate_credential",
    "make_machine_types",
    "policy_manifest",
]

A = ObjectAttributes
BANKS = (HashAlg.SHA1, HashAlg.SHA256)
QUOTE_BANK = HashAlg.SHA256
QUOTE_PCRS = (*range(11), LAUNCH_PCR)  # vroot.host.agent.DEEP_QUOTE_PCRS
IMA_PCR = 10
EK_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.ADMINWITHPOLICY | A.RESTRICTED | A.DECRYPT
SRK_ATTRS = (A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.NODA | A.RESTRICTED
             | A.DECRYPT)  # fmt: skip
MANAGER_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT
AES128_CFB = SymDef(TpmAlg.AES, 128, TpmAlg.CFB)
RH_OWNER = b"\x40\x00\x00\x01"
RH_ENDORSEMENT = b"\x40\x00\x00\x0b"
FIRMWARE_VERSION = 0x0001_0002_0003_0004

POLICY = """kind: vroot.policy
group: {group}
baseline: {baseline}
event_pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ima: {{require_allowlist: true}}
"""

# (name = policy group = baseline name, images flavour, runtime files measured at boot)
MACHINE_TYPES = (("fleet-compute", "compute-2025.1", 40), ("fleet-storage", "storage-2025.1", 60),
                 ("fleet-edge", "edge-2024.4", 25))  # fmt: skip
GROWTH_POOL = 400


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """TPMT_SIGNATURE of an ECDSA-SHA256 signature over `message`, as TPM2_Sign/Quote/Certify make it."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return Signature(SigAlg.ECDSA, HashAlg.SHA256, r=r.to_bytes(32, "big"), s=s.to_bytes(32, "big")).encode()


def _file_digest(flavour: str, path: str) -> bytes:
    return hashlib.sha256(f"fleet-file|{flavour}|{path}".encode()).digest()


# -- machine types --------------------------------------------------------------------------------


@dataclass
class MachineType:
    """A kind of host: its boot log, the IMA entries it measures (boot ones, then its pool), and the
    baseline learnt from them. Encodings of IMA prefixes are cached by length."""

    name: str
    flavour: str
    boot_log: bytes
    boot_pcrs: dict[int, bytes]  # SHA-256 PCRs 0-23 the boot log replays to
    launch_log: bytes  # an empty vTM launch log (no VM started)
    ima_entries: tuple  # ImaEntry, boot measurements then the growth pool
    boot_entries: int  # how many of them a freshly booted host has
    _prefix_pcr10: list[bytes] = field(default_factory=list, repr=False)
    _encoded: list[bytes] = field(default_factory=list, repr=False)
    _cache: dict[int, tuple[str, bytes]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        pcr = bytes(32)
        self._prefix_pcr10 = [pcr]
        for entry in self.ima_entries:  # the kernel extends SHA-256 of the template data into the SHA-256 bank
            pcr = hashlib.sha256(pcr + hashlib.sha256(entry.template_data).digest()).digest()
            self._prefix_pcr10.append(pcr)
        self._encoded = [encode_ima_binary(UnverifiedImaLog(entries=(e,), format="binary")) for e in self.ima_entries]

    @property
    def max_entries(self) -> int:
        return len(self.ima_entries)

    def ima(self, count: int) -> tuple[str, bytes]:
        """(base64 of the binary IMA list of the first `count` entries, SHA-256 PCR 10 after them)."""
        got = self._cache.get(count)
        if got is None:
            got = self._cache[count] = (_b64(b"".join(self._encoded[:count])), self._prefix_pcr10[count])
        return got

    def quoted_pcrs(self, count: int) -> dict[int, bytes]:
        """The SHA-256 values of QUOTE_PCRS on a host of this type with `count` IMA entries."""
        values = {i: self.boot_pcrs[i] for i in range(10)}
        values[IMA_PCR] = self._prefix_pcr10[count]
        values[LAUNCH_PCR] = bytes(32)  # no vTM launched since the host TM started
        return values

    def baseline_manifest(self) -> bytes:
        """The baseline (JSON manifest) learnt from this type's boot log and every IMA entry it may
        measure, as `vroot baseline learn` makes it on a known-good host."""
        from vroot.eventlog import parse_tcg_log

        baseline = learn_baseline(tcg_log=parse_tcg_log(self.boot_log),
                                  ima_log=UnverifiedImaLog(entries=self.ima_entries, format="binary"),
                                  name=self.name, version="1")  # fmt: skip
        return dump_manifest(baseline, format="json")

    @cached_property
    def trusted_policy(self) -> bytes:
        """The manager key's PolicyPCR digest over this type's trusted boot state."""
        return trusted_policy(QUOTE_BANK, {i: self.boot_pcrs[i] for i in DEFAULT_TRUSTED_PCRS})


def policy_manifest(machine: MachineType) -> bytes:
    """The group policy of a machine type: every boot event of PCRs 0-9 in its baseline, and every
    IMA entry on its allowlist."""
    return POLICY.format(group=machine.name, baseline=machine.name).encode()


def _machine_type(name: str, flavour: str, runtime_files: int, workdir: Path) -> MachineType:
    images = write_images(workdir / flavour, HOST_CHAIN, flavour=flavour)
    plan = plan_boot(HOST_CHAIN, images.read, banks=BANKS)
    boot = replay_tcg_log(plan.tcg_log)[QUOTE_BANK]
    entries = list(plan.ima_log.entries)  # boot_aggregate and the chain's runtime files
    for i in range(runtime_files):
        path = f"/usr/lib64/{name}/lib{name.split('-')[-1]}-{i:03d}.so.1"
        entries.append(ima_ng_entry(path, _file_digest(flavour, path), alg=HashAlg.SHA256))
    boot_entries = len(entries)
    for i in range(GROWTH_POOL):
        path = f"/usr/libexec/{name}/job-{i:04d}"
        entries.append(ima_ng_entry(path, _file_digest(flavour, path), alg=HashAlg.SHA256))
    launch = encode_tcg_log(TcgLogBuilder(banks=BANKS).build())
    return MachineType(name=name, flavour=flavour, boot_log=encode_tcg_log(plan.tcg_log), boot_pcrs=dict(boot),
                       launch_log=launch, ima_entries=tuple(entries), boot_entries=boot_entries)  # fmt: skip


def make_machine_types(count: int = len(MACHINE_TYPES)) -> list[MachineType]:
    """The first `count` machine types (1-3)."""
    if not 1 <= count <= len(MACHINE_TYPES):
        raise ValueError(f"1-{len(MACHINE_TYPES)} machine types")
    with tempfile.TemporaryDirectory(prefix="vroot-fleet-images-") as tmp:
        return [_machine_type(n, f, r, Path(tmp)) for n, f, r in MACHINE_TYPES[:count]]


# -- TPM2_ActivateCredential in software ----------------------------------------------------------


def _u16(data: bytes, pos: int) -> tuple[bytes, int]:
    """The TPM2B at `pos`: (its bytes, the position after it); ValueError if truncated."""
    if pos + 2 > len(data):
        raise ValueError("truncated TPM2B size")
    size = int.from_bytes(data[pos : pos + 2], "big")
    end = pos + 2 + size
    if end > len(data):
        raise ValueError("truncated TPM2B")
    return data[pos + 2 : end], end


def _aes_cfb_decrypt(key: bytes, data: bytes) -> bytes:
    """AES in CFB-128 mode with a zero IV, decrypting (the keystream is E(previous ciphertext))."""
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out, feedback = bytearray(), bytes(16)
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        stream = block.update(feedback)
        out += bytes(a ^ b for a, b in zip(chunk, stream, strict=False))
        feedback = chunk
    return bytes(out)


def activate_credential(ek_key: ec.EllipticCurvePrivateKey, ek: PublicArea, object_name: bytes,
                        credential_blob: bytes, encrypted_secret: bytes) -> bytes:  # fmt: skip
    """TPM2_ActivateCredential for an ECC EK: the secret of a TPM2B_ID_OBJECT made by MakeCredential to
    `ek` for the object named `object_name`. ValueError (TPM_RC_INTEGRITY) for a credential made to
    another EK or for another name, as a TM refuses it."""
    alg = ek.name_alg
    point, end = _u16(encrypted_secret, 0)
    if end != len(encrypted_secret):
        raise ValueError("trailing bytes after TPM2B_ENCRYPTED_SECRET")
    qx, pos = _u16(point, 0)
    qy, pos = _u16(point, pos)
    if pos != len(point):
        raise ValueError("trailing bytes after TPMS_ECC_POINT")
    ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ek_key.curve, b"\x04" + qx + qy)
    z = ek_key.exchange(ec.ECDH(), ephemeral)
    seed = kdfe(alg, z, "IDENTITY", qx, ek.unique.x, alg.digest_size * 8)
    id_object, end = _u16(credential_blob, 0)
    if end != len(credential_blob):
        raise ValueError("trailing bytes after TPM2B_ID_OBJECT")
    integrity, pos = _u16(id_object, 0)
    enc_identity = id_object[pos:]
    hmac_key = kdfa(alg, seed, "INTEGRITY", b"", b"", alg.digest_size * 8)
    if not hmac.compare_digest(integrity, hmac.new(hmac_key, enc_identity + object_name, alg.new).digest()):
        raise ValueError("credential integrity check failed (TPM_RC_INTEGRITY)")
    sym_key = kdfa(alg, seed, "STORAGE", object_name, b"", ek.symmetric.key_bits)
    secret, _ = _u16(_aes_cfb_decrypt(sym_key, enc_identity), 0)
    return secret


# -- one simulated host ---------------------------------------------------------------------------


def _certify(signer_key: ec.EllipticCurvePrivateKey, signer_qn: bytes, obj: PublicArea, obj_qn: bytes,
             qualifying: bytes, *, clock: int, reset_count: int) -> tuple[bytes, bytes]:  # fmt: skip
    """TPM2_Certify of `obj` by the signing key: (TPMS_ATTEST, TPMT_SIGNATURE)."""
    attest = UnverifiedAttest(magic=TPM_GENERATED_VALUE, type=AttestType.CERTIFY, qualified_signer=signer_qn,
                              extra_data=qualifying, clock=clock, reset_count=reset_count, restart_count=0,
                              safe=True, firmware_version=FIRMWARE_VERSION,
                              attested=CertifyInfo(obj.name(), obj_qn)).encode()  # fmt: skip
    return attest, _sign(signer_key, attest)


@dataclass
class SimAgent:
    """One simulated host: its TM's keys (software), its EK certificate, its TLS key, and the state
    its TM would keep (clock, reset count, IMA entries measured so far)."""

    host_id: str
    machine: MachineType
    ek_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ek: PublicArea
    ek_certificate: bytes  # DER
    ak_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ak: PublicArea
    ak_qualified_name: bytes
    manager: PublicArea
    manager_qualified_name: bytes
    manager_certify_attest: bytes
    manager_certify_signature: bytes
    client_key: ec.EllipticCurvePrivateKey = field(repr=False)
    reset_count: int
    started: float  # time.monotonic() when the simulated host TM started
    clock_base: int  # TPM clock (ms) at that moment
    ima_count: int
    ima_growth: int = 2
    _static: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def agent_id(self) -> str:
        return f"host:{self.host_id}"

    @classmethod
    def create(cls, host_id: str, machine: MachineType, manufacturer: CertificateAuthority, *, now: datetime,
               serial: int, reset_count: int = 1, ima_growth: int = 2) -> SimAgent:  # fmt: skip
        """A freshly provisioned simulated host with new keys (as `vroot host init` provisions one)."""
        p256 = ec.SECP256R1()
        ek_key = ec.generate_private_key(p256)
        ek = public_area_from_key(ek_key.public_key(), object_attributes=EK_ATTRS, scheme=None, symmetric=AES128_CFB,
                                  auth_policy=policy_secret(None, RH_ENDORSEMENT, alg=HashAlg.SHA256))  # fmt: skip
        cert = issue_ek_certificate(manufacturer, ek, now=now - timedelta(days=1), serial=serial)
        ak_key = ec.generate_private_key(p256)
        ak = public_area_from_key(ak_key.public_key(), object_attributes=AK_ATTRIBUTES)
        ak_qn = qualified_name(qualified_name(RH_ENDORSEMENT, ek.name()), ak.name())
        srk = public_area_from_key(ec.generate_private_key(p256).public_key(), object_attributes=SRK_ATTRS,
                                   scheme=None, symmetric=AES128_CFB)  # fmt: skip
        manager_key = ec.generate_private_key(p256)
        manager = public_area_from_key(manager_key.public_key(), object_attributes=MANAGER_ATTRS,
                                       auth_policy=machine.trusted_policy)  # fmt: skip
        manager_qn = qualified_name(qualified_name(RH_OWNER, srk.name()), manager.name())
        clock_base = 3_600_000 + serial % 1_000_000
        attest, sig = _certify(ak_key, ak_qn, manager, manager_qn, manager_qualifying_data(host_id),
                               clock=clock_base, reset_count=reset_count)  # fmt: skip
        return cls(host_id=host_id, machine=machine, ek_key=ek_key, ek=ek,
                   ek_certificate=cert.public_bytes(serialization.Encoding.DER), ak_key=ak_key, ak=ak,
                   ak_qualified_name=ak_qn, manager=manager, manager_qualified_name=manager_qn,
                   manager_certify_attest=attest, manager_certify_signature=sig,
                   client_key=ec.generate_private_key(p256), reset_count=reset_count, started=time.monotonic(),
                   clock_base=clock_base + 1000, ima_count=machine.boot_entries, ima_growth=ima_growth)  # fmt: skip

    # -- enrollment (RA-1) ----------------------------------------------------------------------

    def enrollment_claim(self) -> dict[str, str]:
        """POST /v1/enrollments: the EK certificate, EK and AK, as `vroot.agent.enroll_host` sends them."""
        return {"host_id": self.host_id, "ek_certificate": _b64(self.ek_certificate),
                "ek_public": _b64(self.ek.encode(sized=True)), "ak_public": _b64(self.ak.encode(sized=True))}  # fmt: skip

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential(AK, EK) in this host's software TM."""
        return activate_credential(self.ek_key, self.ek, self.ak.name(), credential_blob, encrypted_secret)

    def csr_pem(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.agent_id)])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(self.client_key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def activation(self, enrollment_id: str, secret: bytes) -> dict[str, str]:
        """POST /v1/enrollments/{agent}/activation: the secret, a CSR for the TLS key, the manager key."""
        return {"enrollment_id": enrollment_id, "secret": _b64(secret), "client_key": self.csr_pem(),
                "vtm_manager_public": _b64(self.manager.encode(sized=True)),
                "vtm_manager_certify_info": _b64(self.manager_certify_attest),
                "vtm_manager_certify_signature": _b64(self.manager_certify_signature)}  # fmt: skip

    def client_key_pem(self) -> bytes:
        return self.client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())  # fmt: skip

    # -- attestation (RA-2, RA-5) -----------------------------------------------------------------

    def clock(self) -> int:
        return self.clock_base + int((time.monotonic() - self.started) * 1000)

    def _static_fields(self) -> dict[str, str]:
        if not self._static:
            m = self.machine
            self._static = {
                "host_id": self.host_id,
                "ak_public": _b64(self.ak.encode(sized=True)),
                "ek_certificate": _b64(self.ek_certificate),
                "boot_log": _b64(m.boot_log),
                "launch_log": _b64(m.launch_log),
                "manager_public": _b64(self.manager.encode(sized=True)),
                "manager_certify_attest": _b64(self.manager_certify_attest),
                "manager_certify_signature": _b64(self.manager_certify_signature),
            }
        return self._static

    def evidence(self, nonce: bytes, *, grow: bool = True) -> dict[str, Any]:
        """The host-evidence bundle (JSON form) of a deep quote over `nonce`, after the host measured
        its next `ima_growth` files (if `grow`)."""
        m = self.machine
        if grow:
            self.ima_count = min(self.ima_count + self.ima_growth, m.max_entries)
        ima_b64, _ = m.ima(self.ima_count)
        values = m.quoted_pcrs(self.ima_count)
        selection = PcrSelection.from_mapping({QUOTE_BANK: QUOTE_PCRS})
        digest = hashlib.sha256(b"".join(values[i] for i in QUOTE_PCRS)).digest()
        clock = self.clock()
        quote = UnverifiedAttest(magic=TPM_GENERATED_VALUE, type=AttestType.QUOTE,
                                 qualified_signer=self.ak_qualified_name, extra_data=nonce, clock=clock,
                                 reset_count=self.reset_count, restart_count=0, safe=True,
                                 firmware_version=FIRMWARE_VERSION,
                                 attested=QuoteInfo(selection, digest)).encode()  # fmt: skip
        fresh, fresh_sig = _certify(self.ak_key, self.ak_qualified_name, self.manager, self.manager_qualified_name,
                                    nonce, clock=clock, reset_count=self.reset_count)  # fmt: skip
        return {
            **self._static_fields(),
            "qualifying_data": _b64(nonce),
            "quote_attest": _b64(quote),
            "quote_signature": _b64(_sign(self.ak_key, quote)),
            "pcrs": {QUOTE_BANK.bank: {str(i): values[i].hex() for i in QUOTE_PCRS}},
            "ima_log": ima_b64,
            "manager_fresh_certify_attest": _b64(fresh),
            "manager_fresh_certify_signature": _b64(fresh_sig),
        }

    def result_body(self, nonce: bytes) -> bytes:
        """POST /v1/agents/{id}/tasks/{task}/result for an `attest` task, as JSON bytes."""
        return json.dumps({"status": "done", "result": {"evidence": self.evidence(nonce)}}).encode()
