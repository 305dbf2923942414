"""The privacy CA (PCA) of the cloud-OS layer (DESIGN.md sections 3 and 5; RA-1, RA-7, VMM-F4, VMM-S3):
enrollment of hosts and vTMs by credential activation, AK and TLS certificates, revocation.

Pure code: no database, network or clock. Time comes in as `now`, randomness as `rng(n) -> bytes`,
serials as `serial`; the server stores the values returned here. Only `init_pca` draws keys and,
with `load_pca`, touches files.

    from vroot.pca import begin_enrollment, complete_enrollment, enrolled_host, begin_vtm_enrollment
    from vroot.pca import issue_ak_certificate, issue_client_certificate, build_crl, verify_ak_certificate

    keys = init_pca(server_dir, now=now)                              # later: load_pca(server_dir)

    # a host (RA-1): EK certificate against the manufacturer CAs, then credential activation
    challenge, pending = begin_enrollment(ek_certificate=ek_der, ek_public=ek_pub, ak_public=ak_pub,
        trust_anchors=manufacturer_cas, intermediates=(), now=now, rng=os.urandom, host_id="host-a")
    #   ... agent: secret = tm.activate_credential(ak, ek, challenge.credential_blob,
    #                                              challenge.encrypted_secret)
    enrollment = complete_enrollment(pending, activated_secret=secret, now=now)   # ActivationFailed
    host = enrolled_host(enrollment, manager_public=..., manager_certify_attest=...,
                         manager_certify_signature=...)                           # keep this record

    # a vTM on that host (RA-7): vEK certificate under the manager key the host AK certified
    challenge, pending = begin_vtm_enrollment(vek_certificate=vek_der, vek_public=vek_pub,
        vak_public=vak_pub, host=host, now=now, rng=os.urandom)
    venrollment = complete_enrollment(pending, activated_secret=vsecret, now=now)

    ak_cert = issue_ak_certificate(pca=keys.pca, ak_public=enrollment.ak, agent_id="host-a",
        ek_name=enrollment.ek_name, virtual=enrollment.virtual, now=now, serial=serial)
    tls_cert = issue_client_certificate(ops_ca=keys.ops, agent_id="host-a", public_key=agent_tls_key,
        now=now, serial=serial2)
    crl = build_crl(ca=keys.pca, revoked=[(serial, now, "key_compromise")], now=now,
        next_update=now + timedelta(hours=1))
    verify_ak_certificate(ak_cert, pca_certificate=keys.pca.certificate, ak_public=enrollment.ak,
        now=now, crl=crl)                                                         # Revoked

`verify_*`, `complete_enrollment` and `begin_*` raise a `VerificationError` subclass
(`CertificateInvalid`, `KeyAttributesInvalid`, `ActivationFailed`, `NonceExpired`, `Revoked`) or
`InvalidInput` for bytes that do not decode; they never return a bool.
"""

from vroot.pca._akcert import (
    TCG_KP_AIK_CERTIFICATE,
    VROOT_AK_IDENTITY,
    AkIdentity,
    VerifiedAkCertificate,
    VerifiedExternalAkCertificate,
    decode_ak_identity,
    encode_ak_identity,
    issue_ak_certificate,
    verify_ak_certificate,
    verify_external_ak_certificate,
)
from vroot.pca._attributes import check_ak_public
from vroot.pca._crl import RevokedEntry, VerifiedCrl, build_crl, check_not_revoked, verify_crl
from vroot.pca._enroll import (
    DEFAULT_ENROLLMENT_TTL,
    SECRET_SIZE,
    EnrollmentChallenge,
    EnrollmentKind,
    PendingEnrollment,
    VerifiedEnrollment,
    begin_enrollment,
    complete_enrollment,
)
from vroot.pca._files import PcaKeys, init_pca, load_pca
from vroot.pca._tls import (
    VerifiedClientCertificate,
    issue_client_certificate,
    issue_server_certificate,
    verify_client_certificate,
)
from vroot.pca._vtm import EnrolledHost, begin_vtm_enrollment, enrolled_host, verify_manager_key

__all__ = [
    "DEFAULT_ENROLLMENT_TTL",
    "SECRET_SIZE",
    "TCG_KP_AIK_CERTIFICATE",
    "VROOT_AK_IDENTITY",
    "AkIdentity",
    "EnrolledHost",
    "EnrollmentChallenge",
    "EnrollmentKind",
    "PcaKeys",
    "PendingEnrollment",
    "RevokedEntry",
    "VerifiedAkCertificate",
    "VerifiedClientCertificate",
    "VerifiedCrl",
    "VerifiedEnrollment",
    "VerifiedExternalAkCertificate",
    "begin_enrollment",
    "begin_vtm_enrollment",
    "build_crl",
    "check_ak_public",
    "check_not_revoked",
    "complete_enrollment",
    "decode_ak_identity",
    "encode_ak_identity",
    "enrolled_host",
    "init_pca",
    "issue_ak_certificate",
    "issue_client_certificate",
    "issue_server_certificate",
    "load_pca",
    "verify_ak_certificate",
    "verify_client_certificate",
    "verify_crl",
    "verify_external_ak_certificate",
    "verify_manager_key",
]
