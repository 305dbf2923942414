"""One negative test per check the server makes on a host's answer (RA-2, RA-5, HW-F2; DESIGN.md
section 5), with a real swtpm-backed host whose agent is played by hand: each failure is recorded
as an "untrusted" result naming the check, and the host's next honest answer is trusted again."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from attest_helpers import Host, enrolled_host, learnt_manifest, upload_library
from cryptography.hazmat.primitives.serialization import Encoding
from server_helpers import Server, launch_server, stop_server
from vtm_helpers import kill_recorded_swtpms, make_host

from vroot.eventlog import encode_tcg_log, parse_tcg_log
from vroot.pca import issue_ak_certificate
from vroot.pki import create_ca
from vroot.store import NewResult, Verdict
from vroot.tpm2 import parse_public

pytestmark = pytest.mark.tpm


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Host]]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))
    root.chmod(0o711)
    directory = make_host(root, "host-a")
    server = launch_server(tmp_path_factory.mktemp("checks") / "srv", manufacturer_cas=(root / "manufacturer-ca",),
                           scheduler_interval_seconds=0)  # fmt: skip
    host = None
    try:
        host = enrolled_host(server, directory, loop=False)
        upload_library(server.operator(), learnt_manifest(directory))
        yield server, host
    finally:
        if host is not None:
            host.close()
        stop_server(server)
        kill_recorded_swtpms(root)
        shutil.rmtree(root, ignore_errors=True)


Evidence = dict


def answer(server: Server, host: Host, change: Callable[[Evidence, bytes], Evidence | None] = lambda e, n: e,
           *, quote_over: Callable[[bytes], bytes] = lambda nonce: nonce) -> dict:  # fmt: skip
    """Challenge the host, have its TM quote over `quote_over(nonce)`, `change` the bundle, post it
    as the host's agent; the recorded result."""
    op, me = server.operator(), host.client()
    op.post(f"/v1/agents/{host.agent_id}/attestations")
    task = me.next_task(host.agent_id, wait=5)
    nonce = bytes.fromhex(task["payload"]["nonce"])
    evidence = host.local.call("POST", "/v1/deep-quote", {"qualifying_data": quote_over(nonce).hex()})
    me.post_result(host.agent_id, task["id"], ok=True, result={"evidence": change(evidence, nonce)})
    return op.get(f"/v1/agents/{host.agent_id}/attestations/{task['id']}")["result"]


def failed(result: dict) -> str:
    assert result["verdict"] == "untrusted" and result["status"] == "contraindicated", result
    [finding] = result["findings"]
    return finding["id"]


def _flip(evidence: Evidence, field: str, index: int = -1) -> Evidence:
    raw = bytearray(base64.b64decode(evidence[field]))
    raw[index] ^= 0x01
    return {**evidence, field: base64.b64encode(bytes(raw)).decode()}


def _tampered_boot_log(evidence: Evidence, nonce: bytes) -> Evidence:
    log = parse_tcg_log(base64.b64decode(evidence["boot_log"]))
    events = list(log.events)
    i = next(i for i, e in enumerate(events) if e.pcr == 4)
    events[i] = events[i].replace(digests={alg: bytes(len(d)) for alg, d in events[i].digests.items()})
    return {**evidence, "boot_log": base64.b64encode(encode_tcg_log(log.replace(events=tuple(events)))).decode()}


def test_honest_answer_is_trusted(world):
    assert answer(*world)["verdict"] == "trusted"


def test_nonce_never_issued_is_refused(world):
    assert failed(answer(*world, quote_over=lambda n: os.urandom(32))) == "attestation.nonce.unknown"
    assert answer(*world)["verdict"] == "trusted"


def test_nonce_issued_for_another_challenge_is_refused(world):
    """A second nonce of the same agent (issued, unused) does not answer this task's challenge."""
    server, host = world
    other = server.services.store.nonces.issue(agent_id=host.agent_id, purpose="attest", now=server.clock(),
                                               ttl=timedelta(minutes=2), rng=os.urandom)  # fmt: skip
    assert failed(answer(server, host, quote_over=lambda n: other)) == "attestation.nonce.mismatch"
    assert server.services.store.nonces.find(other).used_at is not None  # used up as well


def test_nonce_past_its_time_to_live_is_refused(world):
    server, host = world

    def late(evidence: Evidence, nonce: bytes) -> Evidence:
        server.clock.offset = timedelta(seconds=121)
        return evidence

    try:
        assert failed(answer(server, host, late)) == "attestation.nonce.expired"
    finally:
        server.clock.offset = timedelta(0)
    assert answer(server, host)["verdict"] == "trusted"


def test_flipped_quote_signature_is_refused(world):
    result = answer(*world, lambda e, n: _flip(e, "quote_signature"))
    assert failed(result) == "attestation.quote.signature_invalid"
    assert result["trustworthiness_vector"] == {"instance-identity": 2, "hardware": 96}


def test_flipped_quote_body_is_refused(world):
    """A changed TPMS_ATTEST (here a byte of its clock info) no longer matches its signature."""
    assert failed(answer(*world, lambda e, n: _flip(e, "quote_attest", 60))) == "attestation.quote.signature_invalid"


def test_boot_log_that_does_not_replay_is_refused(world):
    result = answer(*world, _tampered_boot_log)
    assert failed(result) == "attestation.log.replay_mismatch" and result["findings"][0]["pcr"] == 4


def test_evidence_that_does_not_decode_is_refused(world):
    assert failed(answer(*world, lambda e, n: {**e, "ima_log": "!!"})) == "attestation.evidence.malformed"
    assert failed(answer(*world, lambda e, n: {**e, "boot_log": "AAAA"})) == "attestation.evidence.malformed"


def test_ak_certificate_of_another_pca_is_refused(world):
    """The enrolled AK with a certificate the server's PCA did not issue."""
    server, host = world
    store = server.services.store
    agent = store.agents.get(host.agent_id)
    rogue = create_ca(common_name="vroot PCA", now=server.clock() - timedelta(days=1))
    forged = issue_ak_certificate(pca=rogue, ak_public=parse_public(agent.ak_public), agent_id=host.agent_id,
                                  ek_name=parse_public(agent.ek_public).name(), virtual=False,
                                  now=server.clock() - timedelta(minutes=1), serial=12345)  # fmt: skip
    store.agents.activate(host.agent_id, ak_public=agent.ak_public, ak_certificate=forged.public_bytes(Encoding.DER),
                          client_serial=agent.client_serial, now=server.clock())  # fmt: skip
    try:
        result = answer(server, host)
        assert failed(result) == "attestation.ak_certificate.invalid"
        assert result["trustworthiness_vector"] == {"instance-identity": 96}
    finally:
        store.agents.activate(host.agent_id, ak_public=agent.ak_public, ak_certificate=agent.ak_certificate,
                              client_serial=agent.client_serial, now=server.clock())  # fmt: skip
    assert answer(server, host)["verdict"] == "trusted"


def test_tpm_clock_going_back_without_a_reset_is_refused(world):
    """The previous result saw a later TPM clock with the same reset and restart counts."""
    server, host = world
    store = server.services.store
    latest = store.results.latest(host.agent_id)
    assert latest.reset_count is not None
    ahead = NewResult(agent_id=host.agent_id, verdict=Verdict.TRUSTED, clock=latest.clock + 10**9,
                      reset_count=latest.reset_count, restart_count=latest.restart_count)  # fmt: skip
    store.results.record(ahead, now=server.clock())
    assert failed(answer(server, host)) == "attestation.clock.regressed"
    store.results.record(NewResult(agent_id=host.agent_id, verdict=Verdict.TRUSTED, clock=0,
                                   reset_count=latest.reset_count, restart_count=latest.restart_count),
                         now=server.clock())  # fmt: skip
    assert answer(server, host)["verdict"] == "trusted"
