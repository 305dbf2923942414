"""The guest attester's view of its vTM (RA-1, RA-3, VMM-F4) through the host agent's local API, as
the simulated guests use it: the vAK made once and kept persistent in the vTM, credential
activation that opens only for that vAK, and a vTM quote with the guest's logs; bad requests are
refused."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from attest_helpers import start_agent
from vtm_helpers import kill_recorded_swtpms, make_host

from vroot.agent import VAK_HANDLE, SimulatedGuestTm
from vroot.attestation import verify_quote
from vroot.errors import InvalidInput, NotFound, TmError
from vroot.measure import VM_CHAIN, write_images
from vroot.pki import vek_identity, verify_vek_certificate
from vroot.tpm2 import HashAlg, make_credential, parse_public

pytestmark = pytest.mark.tpm


@pytest.fixture(scope="module")
def agent() -> Iterator:
    root = Path(tempfile.mkdtemp(prefix="vt", dir="/tmp"))
    root.chmod(0o711)
    running = None
    try:
        running = start_agent(make_host(root, "host-a"))
        running.images = write_images(root / "vm-images", VM_CHAIN).path
        yield running
    finally:
        if running is not None:
            running.stop()
        kill_recorded_swtpms(root)
        shutil.rmtree(root, ignore_errors=True)


def _vm(agent, *, boot: bool = True) -> str:  # noqa: ANN001
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    if boot:
        agent.client.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(agent.images)})
    return vm


def test_ra1_vak_is_made_once_in_the_vtm_and_replaced_only_on_request(agent):
    vm = _vm(agent, boot=False)
    guest = SimulatedGuestTm(agent.client, vm)
    first = guest.identity()
    assert guest.identity() == first  # kept, persistent in the vTM
    with agent.agent.manager.open_vtm(vm) as vtm:
        assert VAK_HANDLE in vtm.persistent_handles()
        assert vtm.read_public(VAK_HANDLE)[0] == first.vak_public
    manager = parse_public(agent.agent.manager.keys.manager_public)
    verified = verify_vek_certificate(first.vek_certificate, manager_public=manager, now=datetime.now(UTC),
                                      vek_public=parse_public(first.vek_public), vm_uuid=uuid.UUID(vm))  # fmt: skip
    assert verified.host_id == "host-a" and vek_identity(first.vek_certificate).vm_uuid == uuid.UUID(vm)
    new = guest.identity(new_vak=True)
    assert new.vak_public != first.vak_public and new.vek_public == first.vek_public
    assert guest.identity() == new


def test_ra1_credential_opens_only_for_the_vak_it_names(agent):
    vm = _vm(agent, boot=False)
    guest = SimulatedGuestTm(agent.client, vm)
    ident = guest.identity()
    secret = os.urandom(32)
    blob, encrypted = make_credential(parse_public(ident.vek_public), parse_public(ident.vak_public).name(), secret,
                                      rng=os.urandom)  # fmt: skip
    assert guest.activate(blob, encrypted) == secret
    guest.identity(new_vak=True)  # another vAK at the handle now: the same credential does not open
    with pytest.raises(TmError, match="ActivateCredential"):
        guest.activate(blob, encrypted)


def test_ra3_guest_quote_covers_the_vpcrs_with_the_logs_of_the_vms_boot(agent):
    vm = _vm(agent)
    guest = SimulatedGuestTm(agent.client, vm)
    vak = parse_public(guest.identity().vak_public)
    nonce = os.urandom(32)
    doc = guest.evidence(nonce, {HashAlg.SHA256: range(11)})
    pcrs = {HashAlg.from_bank(b): {int(i): bytes.fromhex(v) for i, v in vals.items()} for b, vals in doc["pcrs"].items()}
    quote = verify_quote(base64.b64decode(doc["quote_attest"]), base64.b64decode(doc["quote_signature"]), vak,
                         nonce=nonce, pcrs=pcrs)  # fmt: skip
    assert sorted(quote.pcrs[HashAlg.SHA256]) == list(range(11))
    logs = agent.agent.manager.vtm_paths(vm).guest
    assert base64.b64decode(doc["boot_log"]) == (logs / "boot.tcg").read_bytes()
    assert base64.b64decode(doc["ima_log"]) == (logs / "ima.bin").read_bytes()


@pytest.mark.parametrize(("body", "match"), [
    ({"nonce": "zz", "pcrs": [0]}, "hex"),
    ({"nonce": "00" * 65, "pcrs": [0]}, "1-64 byte"),
    ({"nonce": "00" * 32, "pcrs": []}, "PCR indices"),
    ({"nonce": "00" * 32, "pcrs": [24]}, "PCR indices"),
    ({"nonce": "00" * 32, "pcrs": ["1"]}, "PCR indices"),
    ({"nonce": "00" * 32, "pcrs": [0], "bank": "md5"}, "md5"),
])  # fmt: skip
def test_bad_guest_quote_requests_are_refused(agent, body, match):
    vm = _vm(agent, boot=False)
    SimulatedGuestTm(agent.client, vm).identity()
    with pytest.raises(InvalidInput, match=match):
        agent.client.call("POST", f"/v1/vtms/{vm}/guest-quote", body)


def test_guest_endpoints_of_an_unknown_vm_are_not_found(agent):
    with pytest.raises(NotFound):
        agent.client.call("POST", f"/v1/vtms/{uuid.uuid4()}/attestation-key", {})
