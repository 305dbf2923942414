"""Every real TPM 2.0 quote in ../shared/corpora verifies, and fails when any one byte changes.

Cases (see each folder's MANIFEST.md and expected.json):
- go-attestation/windows_gcp_shielded_vm.*: GCP Shielded VM vTPM, RSASSA/SHA-1, empty nonce, SHA-1
  PCRs 0-23 from expected.json (SHA-1 allowed explicitly, as it must be for this quote);
- go-tpm-tools/gce-cos-85-{no-nonce,nonce9009}/: GCE vTPM, three quotes each over the SHA-1, SHA-256
  and SHA-384 banks, RSASSA/SHA-256, nonce empty / 0x9009;
- keylime/tpm-emulator-quote/: a software TPM's tpm2_quote output, PCR values from the tpm2-tools PCR
  file quotepcr.out (also checked against expected.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from vroot.attestation import DEFAULT_ALLOWED_HASHES, verify_quote
from vroot.cli.main import run
from vroot.errors import InvalidInput, VerificationError
from vroot.tpm2 import HashAlg, PcrSelection, parse_attest, parse_public, parse_tpm2_tools_pcrs

pytestmark = pytest.mark.corpora

WITH_SHA1 = DEFAULT_ALLOWED_HASHES | {HashAlg.SHA1}


@dataclass(frozen=True)
class Case:
    id: str
    attest: Path
    signature: Path
    ak: Path
    nonce: bytes
    pcrs: dict
    expected: dict  # this quote's expectations: pcrDigest_hex, clock, ...
    ak_name_hex: str
    pcrs_file: Path  # what the CLI gets as --pcrs

    def load(self):
        return self.attest.read_bytes(), self.signature.read_bytes(), parse_public(self.ak.read_bytes())


def _pcrs(doc: dict) -> dict[HashAlg, dict[int, bytes]]:
    return {
        HashAlg.from_bank(b): {int(i): bytes.fromhex(v) for i, v in m.items()} for b, m in doc["pcrs"].items()
    }


def _cases(root: Path) -> list[Case]:
    cases = []
    d = root / "go-attestation"
    exp = json.loads((d / "windows_gcp_shielded_vm.expected.json").read_text())
    q = exp["quote"]
    cases.append(
        Case(
            "windows_gcp_shielded_vm",
            d / "windows_gcp_shielded_vm.quote.tpms_attest.bin",
            d / "windows_gcp_shielded_vm.quote.tpmt_signature.bin",
            d / "windows_gcp_shielded_vm.ak_public.tpmt_public.bin",
            bytes.fromhex(q["nonce_hex"]),
            _pcrs(exp),
            q | {"pcr_selection": q["pcr_selection"]["sha1"], "bank": "sha1"},
            q["ak_name_hex"],
            d / "windows_gcp_shielded_vm.expected.json",
        )
    )
    for name in ("gce-cos-85-no-nonce", "gce-cos-85-nonce9009"):
        d = root / "go-tpm-tools" / name
        exp = json.loads((d / "expected.json").read_text())
        for bank, q in exp["quotes"].items():
            cases.append(
                Case(
                    f"{name}-{bank}",
                    d / q["attest_file"],
                    d / q["signature_file"],
                    d / "ak_public.tpmt_public.bin",
                    bytes.fromhex(exp["nonce_hex"]),
                    _pcrs(exp),
                    q | {"bank": bank},
                    exp["ak_name_hex"],
                    d / "expected.json",
                )
            )
    d = root / "keylime" / "tpm-emulator-quote"
    exp = json.loads((d / "expected.json").read_text())
    pcrs = parse_tpm2_tools_pcrs((d / "quotepcr.out").read_bytes())
    assert pcrs == _pcrs(exp), "quotepcr.out and expected.json disagree"
    q = exp["quote"]
    cases.append(
        Case(
            "keylime-tpm-emulator",
            d / "quote.out",
            d / "quotesig.out",
            d / "ak.pub",
            bytes.fromhex(q["extraData_hex"]),
            pcrs,
            q | {"pcr_selection": q["pcr_selection"]["sha256"], "bank": "sha256"},
            exp["ak_name_hex"],
            d / "quotepcr.out",
        )
    )
    return cases


CASE_IDS = [
    "windows_gcp_shielded_vm",
    *(
        f"{n}-{b}"
        for n in ("gce-cos-85-no-nonce", "gce-cos-85-nonce9009")
        for b in ("sha1", "sha256", "sha384")
    ),
    "keylime-tpm-emulator",
]


@pytest.fixture(scope="module")
def cases(corpora) -> dict[str, Case]:
    return {c.id: c for c in _cases(corpora)}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_real_quote_verifies(cases, case_id):
    case = cases[case_id]
    attest, sig, ak = case.load()
    assert ak.name().hex() == case.ak_name_hex
    bank = HashAlg.from_bank(case.expected["bank"])
    selection = PcrSelection.from_mapping({bank: case.expected["pcr_selection"]})
    vq = verify_quote(
        attest, sig, ak, nonce=case.nonce, pcrs=case.pcrs, selection=selection, allowed_hashes=WITH_SHA1
    )
    assert vq.pcrs_verified
    assert vq.pcr_digest.hex() == case.expected["pcrDigest_hex"]
    assert vq.pcrs == {bank: {i: case.pcrs[bank][i] for i in case.expected["pcr_selection"]}}
    if "clock" in case.expected:
        assert vq.clock == case.expected["clock"]
    if "resetCount" in case.expected:
        assert (vq.reset_count, vq.restart_count) == (
            case.expected["resetCount"],
            case.expected["restartCount"],
        )
    if "qualifiedSigner_hex" in case.expected:
        assert vq.qualified_signer.hex() == case.expected["qualifiedSigner_hex"]
    # The same AK as a cryptography key (as a PEM would give) verifies too.
    assert verify_quote(
        attest, sig, ak.public_key(), nonce=case.nonce, pcrs=case.pcrs, allowed_hashes=WITH_SHA1
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_real_quote_fails_when_any_byte_changes(cases, case_id):
    case = cases[case_id]
    attest, sig, ak = case.load()
    for which, data in (("attest", attest), ("signature", sig)):
        for offset in range(len(data)):  # every offset: a few hundred bytes, microseconds each
            for mask in (0x01, 0x80, 0xFF):
                changed = bytearray(data)
                changed[offset] ^= mask
                a, s = (bytes(changed), sig) if which == "attest" else (attest, bytes(changed))
                with pytest.raises((VerificationError, InvalidInput)):
                    verify_quote(a, s, ak, nonce=case.nonce, pcrs=case.pcrs, allowed_hashes=WITH_SHA1)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_real_quote_fails_with_another_nonce_or_pcr_value(cases, case_id):
    case = cases[case_id]
    attest, sig, ak = case.load()
    with pytest.raises(VerificationError):
        verify_quote(attest, sig, ak, nonce=case.nonce + b"\0", pcrs=case.pcrs, allowed_hashes=WITH_SHA1)
    quoted = parse_attest(attest).attested.pcr_select
    bank, index = next(iter(quoted))
    bent = {b: dict(v) for b, v in case.pcrs.items()}
    bent[bank][index] = bytes(len(bent[bank][index]))[:-1] + b"\x01"
    with pytest.raises(VerificationError):
        verify_quote(attest, sig, ak, nonce=case.nonce, pcrs=bent, allowed_hashes=WITH_SHA1)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_cli_verifies_the_real_quote(cases, case_id, capsys):
    case = cases[case_id]
    argv = [
        "quote",
        "verify",
        "--ak",
        str(case.ak),
        "--attest",
        str(case.attest),
        "--signature",
        str(case.signature),
    ]
    argv += ["--nonce", case.nonce.hex(), "--pcrs", str(case.pcrs_file), "--allow-hash", "sha1", "--json"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] and doc["pcrs_verified"] and doc["pcr_digest"] == case.expected["pcrDigest_hex"]
