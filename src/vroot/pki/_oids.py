"""Object identifiers of the TCG EK Credential Profile and of vroot's own certificate marks.

TCG (EK Credential Profile for TPM Family 2.0, section 3; TCG OID registry 2.23.133):
tpmManufacturer / tpmModel / tpmVersion in the subjectAltName directoryName, tpmSpecification in
subjectDirectoryAttributes, and the extended key usage tcg-kp-EKCertificate.

vroot: OIDs under the UUID arc `2.25.<uuid as integer>` (ITU-T X.667), which needs no registration.
The UUID e1136149-bc56-4809-9b9f-3b581c9f75a5 was generated once with `uuid.uuid4()` for this
project; its integer is 299176925927593140536147376359339947429. Never change these: certificates
already issued carry them.
"""

from __future__ import annotations

from cryptography.x509.oid import ObjectIdentifier

# -- TCG ------------------------------------------------------------------------------------------
TCG_AT_TPM_MANUFACTURER = ObjectIdentifier("2.23.133.2.1")
TCG_AT_TPM_MODEL = ObjectIdentifier("2.23.133.2.2")
TCG_AT_TPM_VERSION = ObjectIdentifier("2.23.133.2.3")
TCG_AT_TPM_SPECIFICATION = ObjectIdentifier("2.23.133.2.16")
TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")

# -- X.509 (RFC 5280) -------------------------------------------------------------------------------
SUBJECT_DIRECTORY_ATTRIBUTES = ObjectIdentifier("2.5.29.9")

# -- vroot ----------------------------------------------------------------------------------------
VROOT_ARC = "2.25.299176925927593140536147376359339947429"
# certificatePolicies entry of every vEK certificate: "the TPM certified here is a vroot vTM, a
# virtual TPM served by a vTM manager, not a hardware TM" (VMM-S3).
VROOT_VIRTUAL_TPM_POLICY = ObjectIdentifier(VROOT_ARC + ".1")
# Non-critical extension of every vEK certificate: SEQUENCE { hostId UTF8String, vmUuid OCTET
# STRING (16), managerKeyName OCTET STRING } (see vroot.pki._vek_ext).
VROOT_VTM_IDENTITY = ObjectIdentifier(VROOT_ARC + ".2")
# extendedKeyUsage of the migration controller's task-signing certificate (MC-S1): engines accept
# a migration task only when it is signed by a key certified for this purpose by the operations CA.
VROOT_KP_MIGRATION_CONTROLLER = ObjectIdentifier(VROOT_ARC + ".3")
