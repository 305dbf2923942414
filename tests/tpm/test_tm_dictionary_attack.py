"""Power cycles and PCR-policy failures must not lock a TM out (TmClient.shutdown).

A TM that loses power without TPM2_Shutdown counts one dictionary-attack failure at the next
start-up once DA-protected objects were used; swtpm locks out after three. A simulated host or a
vTM is power-cycled often, so vroot shuts it down in order first.
"""

from __future__ import annotations

import pytest
from tpm2_pytss import TPM2_CAP, TPM2_PT

from vroot.errors import TmPolicyFailed
from vroot.tm import TmClient
from vroot.tm._policy import PolicyPcr, policy_digest
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm


def _failed_tries(tm: TmClient) -> int:
    _, data = tm.esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.LOCKOUT_COUNTER, 1)
    return next(p.value for p in data.data.tpmProperties if p.property == TPM2_PT.LOCKOUT_COUNTER)


@pytest.mark.parametrize("orderly", [True, False])
def test_only_an_unorderly_power_cycle_counts_as_a_da_failure(swtpm_factory, orderly):
    proc = swtpm_factory()
    for _ in range(2):
        with TmClient.open(proc.tcti) as tm:
            with tm.create_srk() as srk:  # a DA-protected object in use
                tm.load(srk, tm.create_signing_key(srk)).close()
            if orderly:
                tm.shutdown()
        proc.stop()
        proc = swtpm_factory(state_dir=proc.state_dir)
    with TmClient.open(proc.tcti) as tm:
        assert _failed_tries(tm) == (0 if orderly else 2)


def test_failed_pcr_policy_unseals_do_not_count(tm):
    """A sealed vTM state key that fails its PolicyPCR (host changed) does not feed the DA counter."""
    sel = {HashAlg.SHA256: [16]}
    with tm.create_srk() as srk:
        digest = policy_digest([PolicyPcr.of(sel)], {HashAlg.SHA256: tm.pcr_read(sel)[HashAlg.SHA256]})
        blob = tm.seal(srk, b"state key", policy_digest=digest)
        tm.pcr_extend(16, {HashAlg.SHA256: bytes(32)})
        for _ in range(4):
            with pytest.raises(TmPolicyFailed):
                tm.unseal(srk, blob, pcrs=sel)
        assert _failed_tries(tm) == 0
