"""The server's key material (`init_pca` / `load_pca`): the PCA, the operations CA and the
result-signing key, in their own files with private modes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_pca_fakes import NOW

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.pca import PcaKeys, init_pca, load_pca


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_then_load(tmp_path: Path):
    d = tmp_path / "server"
    keys = init_pca(d, now=NOW)
    assert mode(d) == 0o700
    for key in ("pca/ca-key.pem", "ops/ca-key.pem", "result-signing-key.pem"):
        assert mode(d / key) == 0o600, key
    assert mode(d / "result-signing-key.pub.pem") == 0o644
    assert keys.pca.certificate.subject.rfc4514_string() == "CN=vroot PCA,O=vroot"
    assert keys.ops.certificate.subject.rfc4514_string() == "CN=vroot operations CA,O=vroot"
    assert isinstance(keys.result_signing_key.curve, ec.SECP256R1)
    loaded = load_pca(d)
    assert loaded.pca.certificate == keys.pca.certificate and loaded.ops.certificate == keys.ops.certificate
    assert loaded.result_signing_key.private_numbers() == keys.result_signing_key.private_numbers()
    public = serialization.load_pem_public_key((d / "result-signing-key.pub.pem").read_bytes())
    assert public.public_numbers() == keys.result_signing_key.public_key().public_numbers()


def test_keys_are_not_in_the_repr(tmp_path: Path):
    keys = init_pca(tmp_path / "s", now=NOW)
    text = repr(keys)
    pem = keys.result_signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert "PRIVATE" not in text and pem.splitlines()[1] not in text
    assert "vroot PCA" in text


def test_second_init_is_a_conflict(tmp_path: Path):
    init_pca(tmp_path / "s", now=NOW)
    before = (tmp_path / "s" / "pca" / "ca-cert.pem").read_bytes()
    with pytest.raises(Conflict, match="already holds PCA key material"):
        init_pca(tmp_path / "s", now=NOW)
    assert (tmp_path / "s" / "pca" / "ca-cert.pem").read_bytes() == before


def test_load_refuses_a_key_file_others_can_read(tmp_path: Path):
    d = tmp_path / "s"
    init_pca(d, now=NOW)
    (d / "result-signing-key.pem").chmod(0o644)
    with pytest.raises(InvalidInput, match="accessible by group or others"):
        load_pca(d)
    (d / "result-signing-key.pem").chmod(0o600)
    (d / "ops" / "ca-key.pem").chmod(0o640)
    with pytest.raises(InvalidInput, match="ops/ca-key.pem"):
        load_pca(d)


def test_load_missing(tmp_path: Path):
    with pytest.raises(NotFound, match="does not exist"):
        load_pca(tmp_path / "nothing")
    init_pca(tmp_path / "s", now=NOW)
    (tmp_path / "s" / "result-signing-key.pem").unlink()
    with pytest.raises(NotFound, match="result-signing-key.pem"):
        load_pca(tmp_path / "s")


def test_load_refuses_a_result_key_that_is_not_p256(tmp_path: Path):
    d = tmp_path / "s"
    init_pca(d, now=NOW)
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (d / "result-signing-key.pem").write_bytes(other)
    with pytest.raises(InvalidInput, match="P-256"):
        load_pca(d)
    (d / "result-signing-key.pem").write_bytes(b"not a key")
    with pytest.raises(InvalidInput, match="not an unencrypted PEM private key"):
        load_pca(d)


def test_pca_and_ops_must_differ(tmp_path: Path):
    keys = init_pca(tmp_path / "s", now=NOW)
    with pytest.raises(InvalidInput, match="different CAs"):
        PcaKeys(pca=keys.pca, ops=keys.pca, result_signing_key=keys.result_signing_key)


def test_failed_init_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import vroot.pca._files as files

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "atomic_write", broken)
    with pytest.raises(OSError, match="No space"):
        init_pca(tmp_path / "s", now=NOW)
    assert list((tmp_path / "s").iterdir()) == []
