"""Certificates of vroot's roots of trust: the test manufacturer CA, EK certificates, certificates
signed inside a TM, and virtual-marked vEK certificates (DESIGN.md section 3; VMM-F4, VMM-S3).

    from vroot.pki import create_ca, issue_ek_certificate, verify_ek_certificate
    from vroot.pki import issue_vek_certificate, verify_vek_certificate

    ca = create_ca(common_name="vroot test manufacturer CA", now=now)     # save_ca / load_ca
    ek_cert = issue_ek_certificate(ca, ek_area, now=now, serial=serial)   # TCG EK credential shape
    verify_ek_certificate(ek_cert, trust_anchors=[ca.certificate], ek_public=ek_area, now=now)

    # signed by the vTM-manager key inside the host TM (TPM2_Sign through the callback)
    vek_cert = issue_vek_certificate(
        vek_public=vek_area, manager_public=manager_area, host_id="host-1", vm_uuid=vm,
        now=now, serial=serial, sign_digest=lambda d: tm.sign_digest(manager_key, d, policy=steps))
    v = verify_vek_certificate(vek_cert, manager_public=manager_area, now=now, vm_uuid=vm)
    v.host_id, v.vm_uuid, v.manager_name        # trusted only as far as manager_area is
    is_virtual_tm_certificate(vek_cert)         # True: a classifier for routing, not a check

`verify_*` return `Verified*` values or raise `CertificateInvalid` (a `VerificationError`) with one
reason; bytes that are not a certificate, and bad arguments, raise `InvalidInput`. Pure code apart
from `save_ca`/`load_ca` (files) and the thin wrappers that draw keys (`create_ca` without `key`,
the throw-away key of `tm_signed_certificate`): time comes in as `now`, serials as `serial`.
"""

from vroot.pki._ca import CertificateAuthority, create_ca, load_ca, save_ca
from vroot.pki._chain import verify_certificate_chain
from vroot.pki._ek import (
    VROOT_MANUFACTURER,
    TpmInfo,
    VerifiedEkCertificate,
    ek_certificate_builder,
    issue_ek_certificate,
    tpm_info,
    verify_ek_certificate,
)
from vroot.pki._oids import (
    TCG_AT_TPM_MANUFACTURER,
    TCG_AT_TPM_MODEL,
    TCG_AT_TPM_SPECIFICATION,
    TCG_AT_TPM_VERSION,
    TCG_KP_EK_CERTIFICATE,
    VROOT_VIRTUAL_TPM_POLICY,
    VROOT_VTM_IDENTITY,
)
from vroot.pki._tm_sign import SignDigest, software_signer, tm_signed_certificate
from vroot.pki._vek import (
    VerifiedVekCertificate,
    is_virtual_tm_certificate,
    issue_vek_certificate,
    manager_issuer_name,
    vek_identity,
    verify_vek_certificate,
)
from vroot.pki._vek_ext import VekIdentity, decode_vtm_identity, encode_vtm_identity

__all__ = [
    "TCG_AT_TPM_MANUFACTURER",
    "TCG_AT_TPM_MODEL",
    "TCG_AT_TPM_SPECIFICATION",
    "TCG_AT_TPM_VERSION",
    "TCG_KP_EK_CERTIFICATE",
    "VROOT_MANUFACTURER",
    "VROOT_VIRTUAL_TPM_POLICY",
    "VROOT_VTM_IDENTITY",
    "CertificateAuthority",
    "SignDigest",
    "TpmInfo",
    "VekIdentity",
    "VerifiedEkCertificate",
    "VerifiedVekCertificate",
    "create_ca",
    "decode_vtm_identity",
    "ek_certificate_builder",
    "encode_vtm_identity",
    "is_virtual_tm_certificate",
    "issue_ek_certificate",
    "issue_vek_certificate",
    "load_ca",
    "manager_issuer_name",
    "save_ca",
    "software_signer",
    "tm_signed_certificate",
    "tpm_info",
    "vek_identity",
    "verify_certificate_chain",
    "verify_ek_certificate",
    "verify_vek_certificate",
]
