"""HW-F1 (storage root): each host TM holds a storage root key (the SRK, persistent at 0x81000001)
that is a restricted decryption key fixed to that TM, and what vroot seals under it — a vTM's state
key — is bound to it: it unseals in that TM in its trusted state and cannot even be loaded in
another host's TM."""

from __future__ import annotations

import os

import pytest
from vtm_helpers import make_host

from vroot.errors import TmError
from vroot.host import HostPaths, load_host_keys
from vroot.host._config import SRK_HANDLE, load_config
from vroot.host._hosttm import HostTm
from vroot.tpm2 import ObjectAttributes as A
from vroot.tpm2 import parse_public
from vroot.vtm._statekey import decode_sealed, seal_state_key, unseal_state_key

pytestmark = pytest.mark.tpm


def _open(directory):  # noqa: ANN001, ANN202
    paths = HostPaths(directory)
    return HostTm.open(load_config(paths), paths, detached=False)


def test_hw_f1_the_srk_is_a_storage_root_fixed_in_its_tm_and_binds_what_is_sealed_under_it(short_tmp):
    a_dir, b_dir = make_host(short_tmp, "host-a"), make_host(short_tmp, "host-b")
    key = os.urandom(32)
    a = _open(a_dir)
    try:
        public, _, _ = a.client.read_public(SRK_HANDLE)
        attrs = int(parse_public(public).object_attributes)
        for required in (A.FIXEDTPM, A.FIXEDPARENT, A.RESTRICTED, A.DECRYPT, A.SENSITIVEDATAORIGIN):
            assert attrs & required, required
        assert not attrs & A.SIGN_ENCRYPT
        trusted = load_host_keys(HostPaths(a_dir)).trusted
        sealed = seal_state_key(a.client, key, trusted)
        sealed_public = int(parse_public(decode_sealed(sealed).public).object_attributes)
        assert sealed_public & A.FIXEDTPM and sealed_public & A.FIXEDPARENT and not sealed_public & A.USERWITHAUTH
        assert unseal_state_key(a.client, sealed, trusted, vm_uuid="x") == key
    finally:
        a.close(stop_tm=True)
    b = _open(b_dir)
    try:
        with pytest.raises(TmError), b.client.persistent(SRK_HANDLE) as srk:
            b.client.load(srk, decode_sealed(sealed))  # another TM's SRK: the blob's integrity check fails
    finally:
        b.close(stop_tm=True)
