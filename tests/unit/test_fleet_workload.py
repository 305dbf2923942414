"""The fleet benchmark's simulated hosts are real to the server (issue 4, Performance; RA-1, RA-2,
RA-5, RA-6, HW-F2): each has its own EK with an EK certificate from the test manufacturer CA, opens
the PCA's credential with the math of TPM2_ActivateCredential, and answers attestations with a
quote, logs and a vTM-manager certification that `verify_host_evidence` accepts and the group's
baseline and policy appraise as trusted; checks that must bite do. Then a small fleet runs the
benchmark's own load generator code against a real HTTPS server (mutual TLS, SQLite) for seconds:
enrolled through the endpoints, attested by the server's scheduler, every verdict trusted, and the
benchmark's window query and figures read them back."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import ssl
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _fleet_load as load  # noqa: E402
import _fleet_sim as sim  # noqa: E402
import fleet_bench as bench  # noqa: E402

from vroot.attestation import UnverifiedHostEvidence, verify_host_evidence  # noqa: E402
from vroot.baseline import appraisal_input_from_host_evidence, appraise, load_manifest, load_policy  # noqa: E402
from vroot.errors import ActivationFailed, NonceMismatch, ReplayMismatch, SignatureInvalid  # noqa: E402
from vroot.eventlog import parse_ima_log, parse_tcg_log, replay_ima_log, replay_tcg_log  # noqa: E402
from vroot.pca import EnrolledHost, begin_enrollment, check_ak_public, complete_enrollment, verify_manager_key  # noqa: E402
from vroot.pki import create_ca, save_ca, verify_ek_certificate  # noqa: E402
from vroot.server import Services, init_server, load_settings, start_server  # noqa: E402
from vroot.tpm2 import HashAlg, make_credential, parse_attest  # noqa: E402

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def machines() -> list[sim.MachineType]:
    return sim.make_machine_types()


@pytest.fixture(scope="module")
def maker():  # noqa: ANN201
    return create_ca(common_name="fleet test TPM manufacturer CA", now=NOW - timedelta(days=30))


@pytest.fixture(scope="module")
def agent(machines, maker) -> sim.SimAgent:  # noqa: ANN001
    return sim.SimAgent.create("fleet-t1", machines[0], maker, now=NOW, serial=0x77, reset_count=3)


def test_machine_types_differ_and_their_logs_replay_to_their_pcrs(machines):
    assert [m.name for m in machines] == ["fleet-compute", "fleet-storage", "fleet-edge"]
    assert len({m.boot_pcrs[0] for m in machines}) == 3  # other firmware builds
    for m in machines:
        log = parse_tcg_log(m.boot_log)
        assert log.algorithms == sim.BANKS
        assert dict(replay_tcg_log(log)[HashAlg.SHA256]) == m.boot_pcrs
        count = m.boot_entries + 5
        ima_b64, pcr10 = m.ima(count)
        ima = parse_ima_log(base64.b64decode(ima_b64))  # checks every template hash
        assert len(ima.entries) == count and ima.entries[0].path == "boot_aggregate"
        assert replay_ima_log(ima, banks=(HashAlg.SHA256,))[HashAlg.SHA256][10] == pcr10
        baseline = load_manifest(m.baseline_manifest())
        assert baseline.name == m.name and len(baseline.ima.digests) == m.max_entries  # boot_aggregate too
        assert load_policy(sim.policy_manifest(m)).group == m.name


def test_host_keys_are_what_enrollment_accepts(agent, maker):
    """HW-F2: the EK certificate chains to the manufacturer CA; the AK is an attestation key; the AK
    certified the vTM-manager key over the host's qualifying data."""
    verified = verify_ek_certificate(agent.ek_certificate, trust_anchors=[maker.certificate], ek_public=agent.ek,
                                     now=NOW)  # fmt: skip
    assert verified is not None
    check_ak_public(agent.ak)
    record = EnrolledHost(host_id=agent.host_id, ak_public=agent.ak.encode(sized=True),
                          manager_public=agent.manager.encode(sized=True),
                          manager_certify_attest=agent.manager_certify_attest,
                          manager_certify_signature=agent.manager_certify_signature)  # fmt: skip
    assert verify_manager_key(record).name() == agent.manager.name()
    other = sim.SimAgent.create("fleet-t2", agent.machine, maker, now=NOW, serial=0x78)
    with pytest.raises(Exception, match="not certified"):
        verify_manager_key(dataclasses.replace(record, ak_public=other.ak.encode(sized=True)))


def test_software_activation_answers_the_pca(agent, maker):
    """RA-1: the PCA's MakeCredential, opened with the EK's private key, completes enrollment."""
    challenge, pending = begin_enrollment(ek_certificate=agent.ek_certificate, ek_public=agent.ek.encode(sized=True),
                                          ak_public=agent.ak.encode(sized=True), trust_anchors=[maker.certificate],
                                          intermediates=(), now=NOW, rng=os.urandom, host_id=agent.host_id)  # fmt: skip
    secret = agent.activate(challenge.credential_blob, challenge.encrypted_secret)
    assert complete_enrollment(pending, activated_secret=secret, now=NOW).ak.name() == agent.ak.name()
    with pytest.raises(ActivationFailed):
        complete_enrollment(pending, activated_secret=bytes(len(secret)), now=NOW)


def test_software_activation_refuses_another_name_or_ek(agent, maker):
    blob, enc = make_credential(agent.ek, agent.ak.name(), b"s" * 32, rng=os.urandom)
    assert agent.activate(blob, enc) == b"s" * 32
    with pytest.raises(ValueError, match="TPM_RC_INTEGRITY"):
        sim.activate_credential(agent.ek_key, agent.ek, agent.manager.name(), blob, enc)
    other = sim.SimAgent.create("fleet-t3", agent.machine, maker, now=NOW, serial=0x79)
    blob, enc = make_credential(other.ek, agent.ak.name(), b"s" * 32, rng=os.urandom)
    with pytest.raises(ValueError, match="TPM_RC_INTEGRITY"):
        agent.activate(blob, enc)


def test_evidence_verifies_and_is_appraised_trusted(machines, maker):
    """RA-2, RA-5: the deep-quote bundle verifies with the enrolled AK over the nonce, its logs replay,
    and the group's baseline and policy find nothing; each attestation measures new IMA entries and
    the TM clock moves forward."""
    for m in machines:
        host = sim.SimAgent.create(f"fleet-{m.name}", m, maker, now=NOW, serial=0x80, ima_growth=3)
        baseline, policy = load_manifest(m.baseline_manifest()), load_policy(sim.policy_manifest(m))
        clocks = []
        for round_ in range(2):
            nonce = os.urandom(32)
            doc = host.evidence(nonce)
            v = verify_host_evidence(UnverifiedHostEvidence.from_json(doc), qualifying_data=nonce, ak=host.ak)
            assert set(v.pcrs[HashAlg.SHA256]) == set(sim.QUOTE_PCRS) and v.launches == ()
            assert len(v.ima_log.entries) == m.boot_entries + 3 * (round_ + 1)
            appraisal = appraise(evidence=appraisal_input_from_host_evidence(v, time=NOW), baseline=baseline,
                                 policy=policy, now=NOW)  # fmt: skip
            assert appraisal.verdict == "trusted" and appraisal.findings == ()
            clocks.append(parse_attest(UnverifiedHostEvidence.from_json(doc).quote_attest).clock)
            time.sleep(0.002)
        assert clocks[1] > clocks[0]


def test_evidence_checks_bite(agent):
    nonce = os.urandom(32)
    doc = agent.evidence(nonce, grow=False)
    with pytest.raises(NonceMismatch):
        verify_host_evidence(UnverifiedHostEvidence.from_json(doc), qualifying_data=os.urandom(32), ak=agent.ak)
    shorter = {**doc, "ima_log": agent.machine.ima(agent.ima_count - 1)[0]}
    with pytest.raises(ReplayMismatch):
        verify_host_evidence(UnverifiedHostEvidence.from_json(shorter), qualifying_data=nonce, ak=agent.ak)
    other = sim.SimAgent.create("fleet-t4", agent.machine, create_ca(common_name="x", now=NOW), now=NOW, serial=1)
    with pytest.raises(SignatureInvalid):
        verify_host_evidence(UnverifiedHostEvidence.from_json(doc), qualifying_data=nonce, ak=other.ak)


# -- a small fleet against a real server ---------------------------------------------------------


async def _run_fleet(agents, certificates, url, ca_pem, directory, seconds):  # noqa: ANN001, ANN202
    stats, records = load.Stats(), []
    clients = [load.client_for(a, certificates[a.agent_id], ca_pem, url, directory, 1.0) for a in agents]
    loops = [asyncio.create_task(load.task_loop(a, c, start=time.time(), wait=1.0, stats=stats, records=records))
             for a, c in zip(agents, clients, strict=True)]  # fmt: skip
    await asyncio.sleep(seconds)
    for t in loops:
        t.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    await asyncio.gather(*(c.aclose() for c in clients))
    return stats, records


def test_small_fleet_against_the_server(tmp_path, machines, maker):
    """RA-1, RA-6: three simulated hosts enroll through the endpoints, the scheduler attests each
    every second, every verdict is trusted and incremental IMA sees the new entries; the benchmark's
    database query and figures count them."""
    save_ca(maker, tmp_path / "maker")
    init = init_server(tmp_path / "server", now=NOW - timedelta(minutes=5), rng=os.urandom,
                       manufacturer_cas=[tmp_path / "maker"], listen="127.0.0.1:0",
                       options={**bench.server_options(_options()), "attestation_interval_seconds": 1,
                                "scheduler_interval_seconds": 0.2})  # fmt: skip
    settings = load_settings(tmp_path / "server", environ={})
    services = Services.open(settings)
    running = start_server(settings, services)
    try:
        ca_pem = (settings.directory / "tls" / "ca.pem").read_bytes()
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        with httpx.Client(base_url=running.url, verify=ctx, timeout=30,
                          headers={"Authorization": f"Bearer {init.operator_token}"}) as operator:  # fmt: skip
            for m in machines:
                operator.put(f"/v1/baselines/{m.name}/1", content=m.baseline_manifest(),
                             headers={"content-type": "application/json"}).raise_for_status()  # fmt: skip
            agents = [sim.SimAgent.create(f"fleet-{i}", m, maker, now=NOW, serial=100 + i)
                      for i, m in enumerate(machines)]  # fmt: skip
            certificates, failures = asyncio.run(load.enroll_all(agents, running.url, ca_pem, init.operator_token, 2))
            assert failures == [] and set(certificates) == {a.agent_id for a in agents}
            for a in agents:
                assert operator.get(f"/v1/agents/{a.agent_id}").json()["group"] == a.machine.name
            for m in machines:
                operator.put(f"/v1/policies/{m.name}", content=sim.policy_manifest(m),
                             headers={"content-type": "application/yaml"}).raise_for_status()  # fmt: skip
            t0 = time.time()
            stats, records = asyncio.run(_run_fleet(agents, certificates, running.url, ca_pem, tmp_path / "tls", 3.5))
            t1 = time.time()
            assert stats.errors == [] and records
            assert all(r["status"] == 200 and r["verdict"] == "trusted" for r in records)
            for a in agents:
                results = operator.get(f"/v1/agents/{a.agent_id}/results").json()["results"]
                assert len(results) >= 2, a.agent_id
                assert {r["verdict"] for r in results} == {"trusted"}
                assert all(r["findings"] == [] for r in results)
    finally:
        running.stop()
        services.close()
    tasks = bench.window_tasks(settings.database_url, t0 - 5, t1 + 1)
    assert {t["id"] for t in tasks} >= {r["task"] for r in records}
    done = [t for t in tasks if t["id"] in {r["task"] for r in records}]
    assert all(t["state"] == "done" and t["verdict"] == "trusted" and t["finished"] > t["created"] for t in done)
    cpu = {"server": 0.0, "postgresql": 0.0, "loadgen": 0.0, "other": 0.0, "machine": 0.0}
    summary = {"errors": [], "lag_p99": 0.001, "lag_max": 0.002}
    fig = bench.figures("sqlite", _options(agents=3), done, records, summary, cpu, t0 - 5, t1 + 1,
                        {"agents": 3, "seconds": 1.0, "failures": 0}, None)  # fmt: skip
    assert fig["errors"] == 0 and fig["done"] == len(done)
    assert 0 < fig["latency"][50] <= fig["latency"][99] < 10
    assert "SQLite, 3 hosts" in bench.render([fig], _options(agents=3))


def _options(**changes) -> bench.Options:  # noqa: ANN003
    base = bench.Options(agents=5000, minutes=5, warmup=180, ramp=60, grace=30, wait=25, poll_interval=30,
                         scheduler_interval=1, interval=60, machine_types=3, ima_growth=2, enroll_concurrency=8,
                         nice=10, profile=False, pg_admin="", keep=False)  # fmt: skip
    return dataclasses.replace(base, **changes)


def test_percentiles_count_unfinished_attestations_as_late():
    assert bench.pct([0.1, 0.2, 0.3, 0.4], 50) == 0.2
    assert bench.pct([0.1] * 99 + [float("inf")], 99) == 0.1
    assert bench.pct([0.1] * 98 + [float("inf")] * 2, 99) == float("inf")
    assert bench.pct([], 99) is None
