"""Signed migration tasks (MC-F2, MC-S1, VMM-S5): an engine acts only on a task signed by the
controller key the operations CA certified for that purpose, addressed to it, not expired; every
other token fails closed with its reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from vroot.controller import (
    issue_controller_certificate,
    sign_migration_task,
    verify_controller_certificate,
    verify_migration_task,
)
from vroot.errors import CertificateInvalid, InvalidInput, SignatureInvalid, VerificationError
from vroot.pca import issue_client_certificate
from vroot.pki import create_ca
from vroot.pki._jws import sign_es256

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MIG = uuid.UUID("6f1c3a52-0c4e-4a57-9d55-0d1fd0f3b001")


@pytest.fixture(scope="module")
def world():
    ops = create_ca(common_name="ops", now=NOW - timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_controller_certificate(ops, key.public_key(), now=NOW - timedelta(hours=1), serial=11)
    return ops, key, cert


def task(key, **kw):  # noqa: ANN001, ANN201
    args = {"kind": "migrate-out", "migration_id": MIG, "agent_id": "host:a", "task_id": "t-1",
            "args": {"vm": "x", "target": "AAAA"}, "now": NOW, "ttl": timedelta(seconds=60), "key": key}  # fmt: skip
    args.update(kw)
    return sign_migration_task(**args)


def test_mc_s1_a_task_from_the_certified_controller_verifies(world):
    ops, key, cert = world
    controller = verify_controller_certificate(cert, ops_ca=ops.certificate, now=NOW)
    got = verify_migration_task(task(key), controller=controller, agent_id="host:a", now=NOW + timedelta(seconds=5))
    assert (got.kind, got.migration_id, got.task_id, dict(got.args)) == ("migrate-out", MIG, "t-1",
                                                                          {"vm": "x", "target": "AAAA"})  # fmt: skip
    assert got.expires_at - got.issued_at == 60


def test_mc_s1_a_certificate_without_the_controller_usage_is_refused(world):
    ops, key, _ = world
    client = issue_client_certificate(ops_ca=ops, agent_id="host:a", public_key=key.public_key(),
                                      now=NOW - timedelta(hours=1), serial=12)  # fmt: skip
    with pytest.raises(CertificateInvalid, match="extendedKeyUsage"):
        verify_controller_certificate(client, ops_ca=ops.certificate, now=NOW)
    other_ops = create_ca(common_name="other ops", now=NOW - timedelta(days=1))
    foreign = issue_controller_certificate(other_ops, key.public_key(), now=NOW - timedelta(hours=1), serial=13)
    with pytest.raises(CertificateInvalid):
        verify_controller_certificate(foreign, ops_ca=ops.certificate, now=NOW)


@pytest.mark.parametrize(
    ("make", "agent", "at", "error", "words"),
    [
        (lambda k, o: task(o), "host:a", NOW, SignatureInvalid, "another key"),  # signed by someone else
        (lambda k, o: task(k)[:-4] + "AAAA", "host:a", NOW, SignatureInvalid, "does not verify"),
        (lambda k, o: task(k), "host:b", NOW, VerificationError, "not for this agent"),  # misdirected
        (lambda k, o: task(k), "host:a", NOW + timedelta(seconds=60), VerificationError, "expired"),
        (lambda k, o: task(k, now=NOW + timedelta(seconds=300)), "host:a", NOW, VerificationError, "future"),
        (lambda k, o: sign_es256({"aud": "host:a"}, key=k), "host:a", NOW, SignatureInvalid, "type"),
        (lambda k, o: "not.a.task", "host:a", NOW, InvalidInput, "not JSON"),
        (lambda k, o: 42, "host:a", NOW, InvalidInput, "not a JWS"),
    ],
)
def test_mc_s1_vmm_s5_bad_tasks_fail_closed(world, make, agent, at, error, words):
    ops, key, cert = world
    controller = verify_controller_certificate(cert, ops_ca=ops.certificate, now=NOW)
    impostor = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(error, match=words):
        verify_migration_task(make(key, impostor), controller=controller, agent_id=agent, now=at)


def test_mc_f2_a_kind_the_engine_does_not_take_and_bad_arguments(world):
    ops, key, cert = world
    controller = verify_controller_certificate(cert, ops_ca=ops.certificate, now=NOW)
    with pytest.raises(VerificationError, match="this engine takes"):
        verify_migration_task(task(key), controller=controller, agent_id="host:a", now=NOW,
                              kinds=frozenset({"import"}))  # fmt: skip
    with pytest.raises(InvalidInput, match="unknown migration task kind"):
        task(key, kind="format-disk")
    with pytest.raises(InvalidInput, match="lifetime"):
        task(key, ttl=timedelta(days=2))
