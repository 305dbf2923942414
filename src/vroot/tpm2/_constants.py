"""TPM 2.0 constants a verifier needs (TCG TPM 2.0 Library part 2, section 6; Algorithm Registry).

Values, not behaviour. Hash algorithms live in `HashAlg` (`_alg.py`); everything else is here.
"""

from __future__ import annotations

import enum

# TPM_GENERATED_VALUE (part 2, 6.2): every TPMS_ATTEST a TPM makes starts with it.
TPM_GENERATED_VALUE = 0xFF544347


class TpmAlg(enum.IntEnum):
    """TPM_ALG_ID values other than the hashes (part 2, 6.3; TCG Algorithm Registry)."""

    RSA = 0x0001
    TDES = 0x0003
    HMAC = 0x0005
    AES = 0x0006
    MGF1 = 0x0007
    KEYEDHASH = 0x0008
    XOR = 0x000A
    NULL = 0x0010
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class ObjectType(enum.IntEnum):
    """TPMI_ALG_PUBLIC: the type of a TPMT_PUBLIC."""

    RSA = 0x0001
    KEYEDHASH = 0x0008
    ECC = 0x0023
    SYMCIPHER = 0x0025


class SigAlg(enum.IntEnum):
    """TPMI_ALG_SIG_SCHEME values a TPMT_SIGNATURE can carry."""

    HMAC = 0x0005
    RSASSA = 0x0014
    RSAPSS = 0x0016
    ECDSA = 0x0018
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C


class EccCurve(enum.IntEnum):
    """TPM_ECC_CURVE (part 2, 6.4)."""

    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


class AttestType(enum.IntEnum):
    """TPMI_ST_ATTEST: the `type` of a TPMS_ATTEST (part 2, 6.9)."""

    NV = 0x8014
    COMMAND_AUDIT = 0x8015
    SESSION_AUDIT = 0x8016
    CERTIFY = 0x8017
    QUOTE = 0x8018
    TIME = 0x8019
    CREATION = 0x801A
    NV_DIGEST = 0x801C


class CommandCode(enum.IntEnum):
    """TPM_CC values (part 2, 6.5.2) used in policies and credential protection."""

    EvictControl = 0x00000120
    CreatePrimary = 0x00000131
    ActivateCredential = 0x00000147
    Certify = 0x00000148
    PolicyNV = 0x00000149
    CertifyCreation = 0x0000014A
    Duplicate = 0x0000014B
    NV_Read = 0x0000014E
    PolicySecret = 0x00000151
    Create = 0x00000153
    Import = 0x00000156
    Load = 0x00000157
    Quote = 0x00000158
    Sign = 0x0000015D
    Unseal = 0x0000015E
    PolicySigned = 0x00000160
    MakeCredential = 0x00000168
    PolicyAuthorize = 0x0000016A
    PolicyAuthValue = 0x0000016B
    PolicyCommandCode = 0x0000016C
    PolicyOR = 0x00000171
    PolicyPCR = 0x0000017F
    PolicyDuplicationSelect = 0x00000188
    PolicyPassword = 0x0000018C


class Handle(enum.IntEnum):
    """Permanent handles (TPM_RH, part 2, 7.4) whose names are the handle itself."""

    OWNER = 0x40000001
    NULL = 0x40000007
    ENDORSEMENT = 0x4000000B
    PLATFORM = 0x4000000C


def alg_or_int(value: int) -> int:
    """`TpmAlg(value)` when the registry knows it, else the plain int (kept for exact round trips)."""
    try:
        return TpmAlg(value)
    except ValueError:
        return value
