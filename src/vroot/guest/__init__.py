"""vroot.guest: data protection for guests of a (v)TM — sealing to (v)PCRs (DP-2) and binding to a
TM-resident decryption key (DP-1), over any TPM 2.0 reachable through `vroot.tm.TmClient`.

    import os
    from vroot.guest import bind, binding_public_key, seal, unbind, unseal
    from vroot.tm import TmClient
    from vroot.tpm2 import HashAlg

    with TmClient.open(tcti) as tm:                       # in production: a VM's vTM
        blob = seal(tm, secret, pcrs={HashAlg.SHA256: [0, 7, 16]})
        open("secret.sealed", "wb").write(blob.encode())
        secret = unseal(tm, open("secret.sealed", "rb").read())  # TmPolicyFailed names changed PCRs
        pem = binding_public_key(tm)

    bound = bind(pem, data, rng=os.urandom)              # pure: anywhere, no TM needed
    with TmClient.open(tcti) as tm:
        data = unbind(tm, bound)                         # only the TM holding the key

Keys (persistent, owner hierarchy, made on first use): the ECC P-256 SRK at 0x81000001 (the key
`tpm2_createprimary -C o -G ecc` makes) and the ECC P-256 ECDH binding key at 0x81000002. Both
survive TM restarts; blobs made before a restart open after it (sealed ones while the PCRs hold
the sealed-to values again).

Blobs (`SealedBlob`, `BoundBlob`, `parse_blob`): one versioned binary format, magic "VRDP".
Errors: `BlobFormatError` (an `InvalidInput`, with the offset) for bytes that are not a blob;
`VerificationError` for a blob that was altered or made for another TM; `TmPolicyFailed` for a
sealed blob whose PCRs have changed; `Conflict` when a handle holds a key of another kind.
Nothing here returns plaintext that the TM or AES-GCM did not authenticate.
"""

from vroot.guest._bind import bind, binding_public_key, unbind
from vroot.guest._blob import (
    MAX_DATA,
    BlobFormatError,
    BoundBlob,
    SealedBlob,
    parse_blob,
    parse_bound_blob,
    parse_sealed_blob,
)
from vroot.guest._keys import BINDING_KEY_HANDLE, SRK_HANDLE
from vroot.guest._seal import seal, unseal, verify_sealed_object

__all__ = [
    "BINDING_KEY_HANDLE",
    "MAX_DATA",
    "SRK_HANDLE",
    "BlobFormatError",
    "BoundBlob",
    "SealedBlob",
    "bind",
    "binding_public_key",
    "parse_blob",
    "parse_bound_blob",
    "parse_sealed_blob",
    "seal",
    "unbind",
    "unseal",
    "verify_sealed_object",
]
