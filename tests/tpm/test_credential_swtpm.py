"""Software MakeCredential (vroot.tpm2.make_credential) against TPM2_ActivateCredential on a real swtpm.

tpm2-pytss drives the TPM directly here (TPM-NOTES sections 3-4), independent of `vroot.tm`. The same
swtpm also checks that the codec computes names, qualified names and the EK policy as a TPM does, and
that `verify_quote` / `verify_certify` accept what the TPM signs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

os.environ.setdefault("TSS2_LOG", "all+NONE")

pytestmark = pytest.mark.tpm

tpm2_pytss = pytest.importorskip("tpm2_pytss")
from tpm2_pytss import (  # noqa: E402
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPML_PCR_SELECTION,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TSS2_Exception,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template  # noqa: E402

from vroot.attestation import CertifiedNameMismatch, verify_certify, verify_quote  # noqa: E402
from vroot.errors import NonceMismatch  # noqa: E402
from vroot.tpm2 import (  # noqa: E402
    Handle,
    HashAlg,
    make_credential,
    parse_public,
    policy_secret,
    qualified_name,
)

A = TPMA_OBJECT
AK_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.RESTRICTED | A.SIGN_ENCRYPT
GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as s1, socket.socket() as s2:
            try:
                s1.bind(("127.0.0.1", port))
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(GET_RANDOM_8)
            reply = s.recv(64)
    except OSError:
        return False
    return len(reply) >= 10 and reply[6:10] == b"\0\0\0\0"


@pytest.fixture(scope="module")
def swtpm_port(tmp_path_factory):
    """A fresh swtpm on a free TCP port pair; ready when a real GetRandom answers; stopped by PID."""
    if shutil.which("swtpm") is None:
        pytest.fail("swtpm is not installed (make setup installs it)")
    state = tmp_path_factory.mktemp("swtpm-credential")
    port = _free_port_pair()
    proc = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--flags",
            "not-need-init,startup-clear",
            "--server",
            f"type=tcp,port={port}",
            "--ctrl",
            f"type=tcp,port={port + 1}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not _ready(port):
            if proc.poll() is not None:
                pytest.fail(f"swtpm exited: {proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail("swtpm did not answer GetRandom within 10 s")
            time.sleep(0.005)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.fixture
def esapi(swtpm_port):
    with ESAPI(f"swtpm:host=127.0.0.1,port={swtpm_port}") as e:
        yield e


def _policy_session(e, kind=TPM2_SE.POLICY):
    return e.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, kind, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )


def _ek_session(e):
    s = _policy_session(e)
    e.policy_secret(ESYS_TR.ENDORSEMENT, s, b"", b"", b"", 0)
    return s


class _Objects:
    """Transient objects of one test, flushed at the end: libtpms has three slots."""

    def __init__(self, e):
        self.e = e
        self.handles = []

    def add(self, h):
        self.handles.append(h)
        return h

    def flush(self):
        for h in reversed(self.handles):
            self.e.flush_context(h)
        self.handles.clear()


@pytest.fixture
def objects(esapi):
    objs = _Objects(esapi)
    try:
        yield objs
    finally:
        objs.flush()


def _ek(e, objs, kind):
    _, template = create_ek_template(kind, NVReadEK(e))
    ek, ek_pub = e.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
    objs.add(ek)
    return ek, ek_pub


def _ak(e, objs, ek, spec="ecc256:ecdsa-sha256:null"):
    template = TPM2B_PUBLIC.parse(spec, nameAlg="sha256", objectAttributes=AK_ATTRS)
    s = _ek_session(e)
    try:
        priv, pub = e.create(ek, None, template, session1=s)[:2]
    finally:
        e.flush_context(s)
    s = _ek_session(e)
    try:
        ak = e.load(ek, priv, pub, session1=s)
    finally:
        e.flush_context(s)
    objs.add(ak)
    return ak, pub


def _activate(e, ak, ek, blob: bytes, enc: bytes) -> bytes:
    s = _ek_session(e)
    try:
        got = e.activate_credential(
            ak,
            ek,
            TPM2B_ID_OBJECT.unmarshal(blob)[0],
            TPM2B_ENCRYPTED_SECRET.unmarshal(enc)[0],
            session1=ESYS_TR.PASSWORD,
            session2=s,
        )
    finally:
        e.flush_context(s)
    return bytes(got)


@pytest.mark.parametrize("ek_kind", ["EK-ECC256", "EK-RSA2048"])
def test_activate_credential_returns_the_secret(esapi, objects, ek_kind):
    ek, ek_pub = _ek(esapi, objects, ek_kind)
    ak, ak_pub = _ak(esapi, objects, ek)
    ek_area = parse_public(ek_pub.marshal())
    ak_name = parse_public(ak_pub.marshal()).name()
    assert ak_name == bytes(ak_pub.get_name())
    secret = os.urandom(32)
    blob, enc = make_credential(ek_area, ak_name, secret, rng=os.urandom)
    assert _activate(esapi, ak, ek, blob, enc) == secret


@pytest.mark.parametrize("ek_kind", ["EK-ECC256", "EK-RSA2048"])
def test_credential_for_another_name_does_not_activate(esapi, objects, ek_kind):
    ek, ek_pub = _ek(esapi, objects, ek_kind)
    ak, _ = _ak(esapi, objects, ek)
    other_name = parse_public(ek_pub.marshal()).name()  # a real name, but not the AK's
    blob, enc = make_credential(parse_public(ek_pub.marshal()), other_name, b"s" * 32, rng=os.urandom)
    with pytest.raises(TSS2_Exception) as info:
        _activate(esapi, ak, ek, blob, enc)
    assert info.value.rc & 0xFF == 0xDF  # TPM_RC_INTEGRITY (0x9F) with parameter bits: 0x1df


def test_names_qualified_names_and_ek_policy_match_the_tpm(esapi, objects):
    ek, ek_pub = _ek(esapi, objects, "EK-ECC256")
    ak, ak_pub = _ak(esapi, objects, ek)
    ek_area = parse_public(ek_pub.marshal())
    ak_area = parse_public(ak_pub.marshal())
    assert ak_area.encode(sized=True) == ak_pub.marshal()
    # The TCG EK templates' authPolicy is PolicySecret(TPM_RH_ENDORSEMENT).
    endorsement = Handle.ENDORSEMENT.to_bytes(4, "big")
    assert ek_area.auth_policy == policy_secret(None, endorsement, alg=HashAlg.SHA256)
    _, name, qn = esapi.read_public(ak)
    ek_qn = qualified_name(endorsement, ek_area.name())
    assert ak_area.name() == bytes(name)
    assert qualified_name(ek_qn, ak_area.name()) == bytes(qn)


def test_quote_and_certify_from_the_tpm_verify(esapi, objects):
    ek, ek_pub = _ek(esapi, objects, "EK-ECC256")
    ak, ak_pub = _ak(esapi, objects, ek)
    ak_area = parse_public(ak_pub.marshal())
    nonce = os.urandom(16)
    attest, sig = esapi.quote(ak, TPML_PCR_SELECTION.parse("sha256:0,1,2,16"), nonce)
    vq = verify_quote(bytes(attest), sig.marshal(), ak_area, nonce=nonce, pcrs=None)
    assert [i for _, i in vq.selection] == [0, 1, 2, 16]
    _, _, qn = esapi.read_public(ak)
    assert vq.qualified_signer == bytes(qn)

    # TPM2_Certify: the AK certifies itself (the object and the signer may be the same).
    certify_attest, certify_sig = esapi.certify(ak, ak, nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    vc = verify_certify(
        bytes(certify_attest),
        certify_sig.marshal(),
        ak_area,
        qualifying_data=nonce,
        certified_name=ak_area.name(),
    )
    assert vc.name == ak_area.name()
    with pytest.raises(CertifiedNameMismatch, match="certified name"):
        verify_certify(
            bytes(certify_attest),
            certify_sig.marshal(),
            ak_area,
            qualifying_data=nonce,
            certified_name=parse_public(ek_pub.marshal()).name(),
        )
    with pytest.raises(NonceMismatch):
        verify_certify(
            bytes(certify_attest), certify_sig.marshal(), ak_area, qualifying_data=b"", certified_name=None
        )
