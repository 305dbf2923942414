"""The migration controller as operators and attackers meet it (issue 5; MC-F1, MC-F3, MC-S4,
MIG-8, VMM-S4): `vroot migrate` and `vroot host drain` from the command line; a controller
restarted in the middle of a migration finishes it from the store; and nothing the controller
stores or sends (migration records, task payloads and results, signed tasks) holds the vTM's
state in the clear: a known plaintext written into the vTM's NV by guest software is in none of
them, at any layer of encoding."""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
import uuid
from typing import Any

import pytest
from attest_helpers import learnt_manifest, wait_for
from deep_helpers import attest_many, vm_world
from server_helpers import restart_server
from test_migration_controller import _vtms, _wait_done

from vroot.cli.main import run
from vroot.controller import MigrationRules
from vroot.tm import free_tcp_port

pytestmark = pytest.mark.tpm
MARKER = b"VROOT-CONTROLLER-SEES-NO-STATE-7"


@pytest.fixture
def world(tmp_path):  # noqa: ANN001, ANN201
    with vm_world(tmp_path / "server") as w:
        assert [r["verdict"] for r in attest_many(w.op, ["host:host-a", "host:host-b"])] == ["trusted", "trusted"]
        yield w


def _cli(world, *args: str) -> list[str]:  # noqa: ANN001
    return [*args, "--server", world.server.url, "--token", world.server.token, "--ca", str(world.server.ca)]


def test_mc_f1_migrate_and_drain_from_the_command_line(world, capsys):
    vm = world.vms_a[0]
    assert run(_cli(world, "migrate", vm, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert f"VM {vm} on host:host-a: destination host:host-b" in out
    assert run(_cli(world, "migrate", vm, "--to", "host-a")) == 1  # the host it is on: refused, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "host:host-a" in err[0]
    assert run(_cli(world, "migrate", f"vm:{vm}", "--to", "host-b", "--json")) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["state"] == "completed" and [s["name"] for s in done["steps"]] == ["prepare", "export", "import",
                                                                                  "finalize"]  # fmt: skip
    assert run(_cli(world, "migrate", "not-a-uuid")) == 2
    assert "VM must be a UUID" in capsys.readouterr().err

    assert run(_cli(world, "host", "drain", "host-b")) == 0  # both VMs now on host-b go back to host-a
    out = capsys.readouterr().out
    assert "host:host-b draining: 2 migrations started" in out
    for line in out.splitlines():
        if line.strip().startswith("migration "):
            assert _wait_done(world.op, line.split()[-1])["state"] == "completed"
    assert world.store.agents.get(f"vm:{vm}").host_id == "host:host-a"
    assert run(_cli(world, "host", "drain", "host-b", "--undo")) == 0
    assert "takes migrations again" in capsys.readouterr().out


def test_mig8_a_controller_restarted_mid_migration_finishes_it(world):
    vm = world.vms_a[1]
    world.b.stop_loop()  # the destination takes no task yet: the migration waits in "preparing"
    started = world.op.post("/v1/migrations", {"vm_uuid": vm})
    world.server = restart_server(world.server)  # the controller dies and comes back: only the store is left
    world.b.start_loop()
    done = _wait_done(world.op, started["id"])
    assert done["state"] == "completed"
    assert vm in _vtms(world.b) and vm not in _vtms(world.a)


def _layers(value: Any, depth: int = 0) -> list[bytes]:
    """Every byte string reachable from `value`: itself, JSON inside it, base64 and JWS inside it."""
    if depth > 6:
        return []
    out: list[bytes] = []
    if isinstance(value, dict):
        for v in value.values():
            out += _layers(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            out += _layers(v, depth + 1)
    elif isinstance(value, str):
        out.append(value.encode())
        if value.count(".") == 2 and len(value) > 32:  # a JWS: its payload
            out += _decoded(value.split(".")[1] + "==", urlsafe=True, depth=depth)
        elif len(value) >= 24:
            out += _decoded(value, urlsafe=False, depth=depth)
    return out


def _decoded(text: str, *, urlsafe: bool, depth: int) -> list[bytes]:
    try:
        raw = base64.urlsafe_b64decode(text) if urlsafe else base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return []
    out = [raw]
    try:
        out += _layers(json.loads(raw), depth + 1)
    except (ValueError, UnicodeDecodeError):
        pass
    return out


def test_vmm_s4_nothing_the_controller_keeps_or_sends_holds_vtm_state_in_the_clear(world, tmp_path):
    a, op = world.a, world.op
    vm, port = str(uuid.uuid4()), free_tcp_port()
    a.local.call("POST", "/v1/vtms", {"vm_uuid": vm, "tcp_port": port})
    a.local.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(world.images)})
    env = {**os.environ, "TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}", "TSS2_LOG": "all+NONE"}
    marker = tmp_path / "marker.bin"
    marker.write_bytes(MARKER)
    for args in (["tpm2_nvdefine", "0x1500017", "-C", "o", "-s", str(len(MARKER)), "-a", "ownerread|ownerwrite"],
                 ["tpm2_nvwrite", "0x1500017", "-C", "o", "-i", str(marker)]):  # fmt: skip
        done = subprocess.run([shutil.which(args[0]), *args[1:]], env=env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert f"vm:{vm}: enrolled" in a.sync_guests()

    done = _wait_done(op, op.post("/v1/migrations", {"vm_uuid": vm, "to": "host:host-b"})["id"])
    assert done["state"] == "completed"
    record = world.store.migrations.get(uuid.UUID(done["id"]))
    tasks = [t for t in world.store.tasks.list(limit=1000) if (t.key or "").startswith(f"mig:{done['id']}")]
    assert {t.kind for t in tasks} >= {"prepare-migration-in", "migrate-out", "import", "finalize-in", "finalize-out"}
    seen = _layers(record.body) + [x for t in tasks for x in _layers(t.payload) + _layers(t.result)]
    blobs = [base64.b64decode(record.body["blob"]["blob"])]
    assert len(blobs[0]) > 1000 and any(blobs[0] in layer for layer in seen)  # the search reached the blob
    for layer in seen:
        assert MARKER not in layer and MARKER.hex().encode() not in layer


def test_mc_s4_zone_labels_and_capacity_set_by_the_operator_decide_placement(world):
    op, vm = world.op, world.vms_a[0]
    got = op.request("PATCH", "/v1/agents/host:host-b", json={"zone": "z2", "capacity": 1, "labels": {"gpu": "no"}})
    assert (got["zone"], got["capacity"], got["labels"]) == ("z2", 1, {"gpu": "no"})
    full = op.get(f"/v1/placement/{vm}")  # host-b already runs one VM: no room
    assert full["destination"] is None and ("host:host-b", "full") in {(r["host"], r["code"]) for r in full["refusals"]}
    op.request("PATCH", "/v1/agents/host:host-b", json={"capacity": 0})
    assert op.get(f"/v1/placement/{vm}")["destination"] == "host:host-b"
    drained = op.post("/v1/agents/host:host-b/drain")  # a drain is not ended by replacing the labels
    got = op.request("PATCH", "/v1/agents/host:host-b", json={"labels": {"gpu": "yes"}})
    assert got["labels"] == {"gpu": "yes", "vroot.draining": "true"}
    assert op.get(f"/v1/placement/{vm}")["destination"] is None
    assert all(_wait_done(op, m)["state"] == "completed" for m in drained["migrations"])


def test_mc_f1_a_retired_baseline_evacuates_its_hosts_by_policy(world):
    op = world.op
    op.request("PUT", "/v1/baselines/hosts/2", content=learnt_manifest(world.a.directory),
               headers={"content-type": "application/json"})  # fmt: skip
    assert attest_many(op, ["host:host-b"])[0]["policy_id"].endswith("/hosts@2")  # host-a's latest is still under v1
    ctx = world.server.running.server.config.app.state.vroot
    ctx.migrations.rules = MigrationRules(retired_baselines=frozenset({("hosts", 1)}))
    moves = wait_for(lambda: len(m := world.store.migrations.list()) == 2 and m, timeout=30,
                     what="the policy's evacuation of host-a")  # fmt: skip
    assert {m.source for m in moves} == {"host:host-a"} and {m.destination for m in moves} == {"host:host-b"}
    assert all(m.trigger == "policy: appraised under baseline hosts v1, being retired" for m in moves)
    for m in moves:
        assert _wait_done(op, str(m.id))["state"] == "completed"
    assert set(world.vms_a) <= set(_vtms(world.b)) and not set(world.vms_a) & set(_vtms(world.a))
