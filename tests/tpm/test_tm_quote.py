"""vroot's quotes pass tpm2_checkquote (tpm2-tools), and have tpm2_quote's byte format."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import pytest

from vroot.tm.client import TmClient, public_pem
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

SEL = {HashAlg.SHA256: range(17)}
PCR_LIST = "sha256:" + ",".join(str(i) for i in range(17))
NONCE = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")


def _tpm2b(buf: bytes, o: int) -> tuple[bytes, int]:
    n = int.from_bytes(buf[o : o + 2], "big")
    return buf[o + 2 : o + 2 + n], o + 2 + n


def parse_quote(attest: bytes) -> dict:
    magic, st = struct.unpack_from(">IH", attest)
    signer, o = _tpm2b(attest, 6)
    extra, o = _tpm2b(attest, o)
    o += 8 + 4 + 4 + 1 + 8
    (count,) = struct.unpack_from(">I", attest, o)
    o += 4
    sel = []
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", attest, o)
        bm = attest[o + 3 : o + 3 + size]
        o += 3 + size
        sel.append((alg, [i for i in range(8 * size) if bm[i // 8] >> (i % 8) & 1]))
    digest, o = _tpm2b(attest, o)
    assert o == len(attest)
    return {"magic": magic, "type": st, "signer": signer, "nonce": extra, "selection": sel, "digest": digest}


def make_quote(swtpm, kind: str = "ecc", *, persist: int | None = None):
    with TmClient.open(swtpm.tcti) as tm:
        tm.pcr_extend(16, {HashAlg.SHA256: hashlib.sha256(b"boot").digest(), HashAlg.SHA1: bytes(20)})
        with tm.create_primary_ek(kind) as ek:
            blob = tm.create_ak(ek, kind)
            with tm.load(ek, blob) as ak:
                attest, sig = tm.quote(ak, SEL, NONCE)
                _, _, qname = tm.read_public(ak)
                if persist is not None:
                    tm.persist(ak, persist).close()
        pcrs = tm.pcr_read(SEL)
        assert tm.transient_handles() == []
    return attest, sig, public_pem(blob.public), qname, pcrs


def checkquote(tmp: Path, env, pem: bytes, attest: bytes, sig: bytes, pcrs_file: Path, nonce: bytes):
    (tmp / "ak.pem").write_bytes(pem)
    (tmp / "q.msg").write_bytes(attest)
    (tmp / "q.sig").write_bytes(sig)
    return subprocess.run(
        [
            "tpm2_checkquote",
            "-u",
            tmp / "ak.pem",
            "-m",
            tmp / "q.msg",
            "-s",
            tmp / "q.sig",
            "-f",
            pcrs_file,
            "-g",
            "sha256",
            "-q",
            nonce.hex(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def pcrread_file(tmp: Path, env) -> Path:
    out = tmp / "pcrs.bin"
    subprocess.run(
        ["tpm2_pcrread", "-F", "serialized", "-o", out, PCR_LIST],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_vroot_quote_passes_tpm2_checkquote(swtpm, tools_env, tmp_path, kind, verify_signature):
    attest, sig, pem, qname, pcrs = make_quote(swtpm, kind)
    env = tools_env(swtpm)
    pcrs_file = pcrread_file(tmp_path, env)  # the TmClient is closed: the tool may connect
    ok = checkquote(tmp_path, env, pem, attest, sig, pcrs_file, NONCE)
    assert ok.returncode == 0, ok.stderr

    q = parse_quote(attest)
    assert (q["magic"], q["type"]) == (0xFF544347, 0x8018)
    assert q["nonce"] == NONCE and q["signer"] == qname
    assert q["selection"] == [(0x0B, list(range(17)))]
    assert q["digest"] == hashlib.sha256(b"".join(pcrs[HashAlg.SHA256][i] for i in range(17))).digest()
    verify_signature(pem, attest, sig)


def test_wrong_nonce_fails_tpm2_checkquote(swtpm, tools_env, tmp_path):
    attest, sig, pem, _, _ = make_quote(swtpm)
    env = tools_env(swtpm)
    pcrs_file = pcrread_file(tmp_path, env)
    assert checkquote(tmp_path, env, pem, attest, sig, pcrs_file, NONCE).returncode == 0
    bad = checkquote(tmp_path, env, pem, attest, sig, pcrs_file, b"\x00" + NONCE[1:])
    assert bad.returncode != 0


def test_changed_pcrs_or_bytes_fail_tpm2_checkquote(swtpm, tools_env, tmp_path):
    attest, sig, pem, _, _ = make_quote(swtpm)
    env = tools_env(swtpm)
    with TmClient.open(swtpm.tcti) as tm:
        tm.pcr_extend(16, {HashAlg.SHA256: bytes(32)})
    pcrs_file = pcrread_file(tmp_path, env)
    assert checkquote(tmp_path, env, pem, attest, sig, pcrs_file, NONCE).returncode != 0
    flipped = bytearray(attest)
    flipped[-1] ^= 1
    assert checkquote(tmp_path, env, pem, bytes(flipped), sig, pcrs_file, NONCE).returncode != 0


def test_same_format_as_tpm2_quote(swtpm, tools_env, tmp_path, verify_signature):
    handle = 0x81010002
    attest, sig, pem, qname, _ = make_quote(swtpm, persist=handle)
    env = tools_env(swtpm)
    subprocess.run(
        [
            "tpm2_quote",
            "-c",
            hex(handle),
            "-l",
            PCR_LIST,
            "-q",
            NONCE.hex(),
            "-m",
            tmp_path / "t.msg",
            "-s",
            tmp_path / "t.sig",
            "-g",
            "sha256",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    t_attest, t_sig = (tmp_path / "t.msg").read_bytes(), (tmp_path / "t.sig").read_bytes()
    ours, theirs = parse_quote(attest), parse_quote(t_attest)
    assert {k: ours[k] for k in ("magic", "type", "signer", "nonce", "selection", "digest")} == {
        k: theirs[k] for k in ("magic", "type", "signer", "nonce", "selection", "digest")
    }
    assert t_sig[:4] == sig[:4]  # TPMT_SIGNATURE: ECDSA, SHA-256
    verify_signature(pem, t_attest, t_sig)  # the same AK signed both
    with TmClient.open(swtpm.tcti) as tm:
        assert handle in tm.persistent_handles()
        tm.evict(handle)
        assert handle not in tm.persistent_handles()


def test_multi_bank_quote_digest(tm, verify_signature):
    sel = {HashAlg.SHA1: [0, 16], HashAlg.SHA256: [16, 23]}
    tm.pcr_extend(
        16, {HashAlg.SHA1: hashlib.sha1(b"x").digest(), HashAlg.SHA256: hashlib.sha256(b"x").digest()}
    )
    with tm.create_primary_ek() as ek, tm.load(ek, tm.create_ak(ek)) as ak:
        attest, sig = tm.quote(ak, sel, b"n")
        pem = public_pem(ak.public)
    values = tm.pcr_read(sel)
    q = parse_quote(attest)
    assert q["selection"] == [(0x04, [0, 16]), (0x0B, [16, 23])]
    concat = b"".join(values[alg][i] for alg in (HashAlg.SHA1, HashAlg.SHA256) for i in sorted(sel[alg]))
    assert q["digest"] == hashlib.sha256(concat).digest()  # H = the AK's scheme hash
    verify_signature(pem, attest, sig)
