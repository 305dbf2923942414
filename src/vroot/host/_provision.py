"""Provision a host TM for vroot (DESIGN.md section 3): EK and its certificate, SRK, AK, and the
vTM-manager key that signs vEK certificates only while the host is in its trusted state.

    EK (0x81010002)       TCG template; certificate from the manufacturer CA (simulated hosts) or
                          read from the TM's NV (real hosts)
    SRK (0x81000001)      storage root, parent of the sealed vTM state keys and the manager key
    AK (0x81018000)       restricted signing key under the EK: signs quotes and certifications
    manager (0x81000100)  unrestricted ECDSA P-256 signing key, fixedTPM, no userWithAuth, usable only
                          through PolicyPCR over the trusted-state PCRs; certified by the AK (TPM2_Certify)

The trusted state is the host's measured state when provisioning runs: the operator declares it
good by running `vroot host init` on a host in a known-good state (and the RA server checks that
claim against the baseline).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vroot._fs import atomic_write, make_private_dir
from vroot.errors import InvalidInput, NotFound
from vroot.host._config import AK_HANDLE, EK_HANDLE, MANAGER_HANDLE, SRK_HANDLE, HostConfig, HostPaths
from vroot.tpm2 import HashAlg, PcrSelection, parse_public, pcr_values_digest, policy_pcr

__all__ = [
    "HostKeys",
    "TrustedState",
    "check_provisioned",
    "load_host_keys",
    "manager_qualifying_data",
    "provision_host_tm",
    "trusted_policy",
]


def manager_qualifying_data(host_id: str) -> bytes:
    """Qualifying data of the vTM-manager key's long-lived certification: binds it to the host id."""
    return hashlib.sha256(b"vroot vTM-manager key\0" + host_id.encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustedState:
    """The PCR values the host's trusted-state policy was computed over (not secret)."""

    bank: HashAlg
    pcrs: dict[int, bytes]
    policy_digest: bytes

    def to_json(self) -> dict:
        return {
            "bank": self.bank.bank,
            "pcrs": {str(i): v.hex() for i, v in sorted(self.pcrs.items())},
            "policy_digest": self.policy_digest.hex(),
        }

    @classmethod
    def from_json(cls, doc: dict) -> TrustedState:
        try:
            return cls(
                bank=HashAlg.from_bank(doc["bank"]),
                pcrs={int(i): bytes.fromhex(v) for i, v in doc["pcrs"].items()},
                policy_digest=bytes.fromhex(doc["policy_digest"]),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"trusted state: {exc}") from None

    def differing(self, current: dict[int, bytes]) -> list[int]:
        """The PCRs whose `current` value is not the trusted one."""
        return [i for i, v in sorted(self.pcrs.items()) if current.get(i) != v]


def trusted_policy(bank: HashAlg, values: dict[int, bytes]) -> bytes:
    """PolicyPCR digest (SHA-256 session) over `values` of `bank`: the host's trusted-state policy."""
    selection = PcrSelection.from_mapping({bank: sorted(values)})
    digest = pcr_values_digest({bank: values}, selection, HashAlg.SHA256)
    return policy_pcr(None, selection, digest, alg=HashAlg.SHA256)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostKeys:
    """The public side of a provisioned host TM, as stored under `keys/` (all safe to publish)."""

    ek_public: bytes  # TPM2B_PUBLIC
    ek_certificate: bytes  # DER
    ak_public: bytes
    manager_public: bytes
    manager_certify_attest: bytes
    manager_certify_signature: bytes
    trusted: TrustedState


def _write_keys(paths: HostPaths, keys: HostKeys) -> None:
    make_private_dir(paths.keys)
    for name, data in (
        ("ek.pub", keys.ek_public),
        ("ek.crt", keys.ek_certificate),
        ("ak.pub", keys.ak_public),
        ("manager.pub", keys.manager_public),
        ("manager.certify.attest", keys.manager_certify_attest),
        ("manager.certify.sig", keys.manager_certify_signature),
    ):
        atomic_write(paths.key(name), data, mode=0o644)
    atomic_write(
        paths.key("trusted-state.json"), json.dumps(keys.trusted.to_json(), indent=2).encode(), mode=0o644
    )


def load_host_keys(paths: HostPaths) -> HostKeys:
    """Read the host's public key material; `NotFound` if the host was never provisioned."""
    try:
        return HostKeys(
            ek_public=paths.key("ek.pub").read_bytes(),
            ek_certificate=paths.key("ek.crt").read_bytes(),
            ak_public=paths.key("ak.pub").read_bytes(),
            manager_public=paths.key("manager.pub").read_bytes(),
            manager_certify_attest=paths.key("manager.certify.attest").read_bytes(),
            manager_certify_signature=paths.key("manager.certify.sig").read_bytes(),
            trusted=TrustedState.from_json(json.loads(paths.key("trusted-state.json").read_text())),
        )
    except FileNotFoundError as exc:
        raise NotFound(f"host {paths.root} is not provisioned ({Path(exc.filename).name} missing)") from None
    except ValueError as exc:
        raise InvalidInput(f"{paths.keys}: {exc}") from None


def _evict_if_present(tm, handle: int) -> None:  # noqa: ANN001
    if handle in tm.persistent_handles():
        tm.evict(handle)


def provision_host_tm(
    tm,  # noqa: ANN001 - vroot.tm.TmClient (not imported here: keeps this module importable without the TSS)
    config: HostConfig,
    paths: HostPaths,
    *,
    manufacturer_ca,  # noqa: ANN001 - vroot.pki.CertificateAuthority, for simulated hosts
    now: datetime,
    serial: int,
) -> HostKeys:
    """Create (or re-create) the host's keys in `tm` and write their public parts under `keys/`.

    The TM must be in the state the operator declares trusted. Existing objects at vroot's
    persistent handles are replaced. Raises `NotFound` when a real TM has no EK certificate.
    """
    for handle in (MANAGER_HANDLE, AK_HANDLE, EK_HANDLE, SRK_HANDLE):
        _evict_if_present(tm, handle)

    with tm.create_primary_ek(config.ek_kind) as ek_transient:
        ek = tm.persist(ek_transient, EK_HANDLE)
    ek_public = ek.public
    if config.mode == "simulate":
        if manufacturer_ca is None:
            raise InvalidInput("a simulated host needs a manufacturer CA for its EK certificate")
        from vroot.pki import issue_ek_certificate

        cert = issue_ek_certificate(manufacturer_ca, parse_public(ek_public), now=now, serial=serial)
        from cryptography.hazmat.primitives.serialization import Encoding

        ek_der = cert.public_bytes(Encoding.DER)
        tm.write_ek_certificate(ek_der, config.ek_kind)
    else:
        ek_der = tm.ek_certificate(config.ek_kind)
        if ek_der is None:
            raise NotFound(f"the TM has no {config.ek_kind.upper()} EK certificate in NV")

    with tm.create_srk("ecc") as srk_transient:
        srk = tm.persist(srk_transient, SRK_HANDLE)
    with tm.load(ek, tm.create_ak(ek, "ecc")) as ak_transient:
        ak = tm.persist(ak_transient, AK_HANDLE)

    bank = config.trusted_bank
    values = tm.pcr_read({bank: config.trusted_pcrs})[bank]
    values = {i: values[i] for i in sorted(config.trusted_pcrs)}
    policy = trusted_policy(bank, values)
    blob = tm.create_signing_key(srk, "ecc", policy_digest=policy)
    with tm.load(srk, blob) as manager_transient:
        manager = tm.persist(manager_transient, MANAGER_HANDLE)
    attest, signature = tm.certify(manager, ak, qualifying_data=manager_qualifying_data(config.host_id))
    keys = HostKeys(
        ek_public=ek_public,
        ek_certificate=ek_der,
        ak_public=ak.public,
        manager_public=manager.public,
        manager_certify_attest=attest,
        manager_certify_signature=signature,
        trusted=TrustedState(bank=bank, pcrs=values, policy_digest=policy),
    )
    for obj in (ek, srk, ak, manager):
        obj.close()
    _write_keys(paths, keys)
    return keys


def check_provisioned(tm) -> None:  # noqa: ANN001
    """Raise `NotFound` unless every vroot key is at its persistent handle in `tm`."""
    present = set(tm.persistent_handles())
    missing = [f"0x{h:08x}" for h in (SRK_HANDLE, EK_HANDLE, AK_HANDLE, MANAGER_HANDLE) if h not in present]
    if missing:
        raise NotFound(f"host TM lacks vroot keys at {', '.join(missing)}: run `vroot host init`")
