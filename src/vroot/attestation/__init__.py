"""Verification of TPM attestation evidence: quotes and certifications.

    from vroot.attestation import verify_quote
    from vroot.tpm2 import HashAlg, load_ak

    vq = verify_quote(attest_bytes, sig_bytes, load_ak(ak_bytes), nonce=nonce,
                      pcrs={HashAlg.SHA256: {0: pcr0, 7: pcr7}})
    vq.pcrs          # PCR values the AK signed (only the quoted ones)

`verify_*` raise a `QuoteError` subclass (a `VerificationError`) for evidence that does not verify,
and `InvalidInput` for bytes that do not decode; they return `Verified*` values only on success.
"""

from vroot.attestation._checks import DEFAULT_ALLOWED_HASHES
from vroot.attestation.certify import CertifiedNameMismatch, VerifiedCertify, verify_certify
from vroot.attestation.deep import JointVerdict, VerifiedVmBinding, joint_verdict, verify_vm_binding
from vroot.attestation.host import UnverifiedHostEvidence, VerifiedHostEvidence, verify_host_evidence
from vroot.attestation.merkle import deep_quote_leaf, inclusion_proof, merkle_root, verify_inclusion
from vroot.attestation.quote import VerifiedQuote, verify_quote

__all__ = [
    "DEFAULT_ALLOWED_HASHES",
    "CertifiedNameMismatch",
    "JointVerdict",
    "UnverifiedHostEvidence",
    "VerifiedCertify",
    "VerifiedHostEvidence",
    "VerifiedQuote",
    "VerifiedVmBinding",
    "deep_quote_leaf",
    "inclusion_proof",
    "joint_verdict",
    "merkle_root",
    "verify_certify",
    "verify_host_evidence",
    "verify_inclusion",
    "verify_quote",
    "verify_vm_binding",
]
