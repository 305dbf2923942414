"""X.509 certificates signed by a key that lives in a TM (TPM-NOTES.md, appendix).

`cryptography` signs certificates only with software keys, but a certificate is
`SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }`: build it with a
throw-away software key of the same algorithm (the TBS names the signature algorithm, not the key),
have the TM sign SHA-256(TBS), and put the TM's signature in place of the throw-away one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki import _der
from vroot.pki._x509 import check_signed_by
from vroot.tpm2 import HashAlg, ObjectAttributes, ObjectType, PublicArea, SigAlg, parse_signature

SignDigest = Callable[[bytes], bytes]
# The throw-away key only fixes the signatureAlgorithm (sha256WithRSAEncryption does not depend on
# the modulus size), so the smallest RSA key cryptography will make is enough.
_SCRATCH_RSA_BITS = 1024


def _scratch_key(issuer_public: PublicArea) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if issuer_public.type is ObjectType.ECC:
        return ec.generate_private_key(ec.SECP256R1())
    if issuer_public.type is ObjectType.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=_SCRATCH_RSA_BITS)
    raise InvalidInput(f"a {issuer_public.type.name} key cannot sign certificates")


def _split_certificate(der: bytes) -> tuple[bytes, bytes]:
    """(tbsCertificate, signatureAlgorithm) as the exact DER elements of a certificate."""
    start, end = _der.read_single(der, _der.SEQUENCE, "certificate")
    parts = []
    pos = start
    for _ in range(3):
        _tag, _c_start, c_end = _der.read_tlv(der, pos, end)
        parts.append(der[pos:c_end])
        pos = c_end
    if pos != end:
        raise InvalidInput("certificate: trailing elements")
    return parts[0], parts[1]


def _signature_value(sig_bytes: bytes, issuer_public: PublicArea) -> bytes:
    """The TPMT_SIGNATURE as an X.509 signatureValue: DER (r, s) for ECDSA, the raw block for RSASSA."""
    sig = parse_signature(sig_bytes)
    if sig.hash_alg is not HashAlg.SHA256:
        raise CertificateInvalid(f"TM signature uses {sig.hash_alg.bank}, the certificate says SHA-256")
    if issuer_public.type is ObjectType.ECC:
        if sig.sig_alg is not SigAlg.ECDSA:
            raise CertificateInvalid(f"TM returned a {sig.sig_alg.name} signature for an ECDSA certificate")
        return sig.to_der()
    if sig.sig_alg is not SigAlg.RSASSA:
        raise CertificateInvalid(f"TM returned a {sig.sig_alg.name} signature for an RSASSA certificate")
    return sig.sig


def tm_signed_certificate(
    builder: x509.CertificateBuilder,
    *,
    issuer_public: PublicArea,
    sign_digest: SignDigest,
) -> x509.Certificate:
    """Sign `builder` with a TM-resident key: ECDSA-SHA256 (ECC) or RSASSA-SHA256 (RSA).

    `sign_digest(sha256_of_tbs)` must return a marshalled TPMT_SIGNATURE made by the key whose
    public area is `issuer_public`, e.g. `lambda d: tm.sign_digest(key, d, policy=...)`. The builder
    must be complete (subject, issuer, key, serial, validity) and carry whatever authorityKeyIdentifier
    the caller wants. Fails closed: the assembled certificate is returned only after its signature
    verifies under `issuer_public` (`CertificateInvalid` otherwise).
    """
    if not isinstance(issuer_public, PublicArea):
        raise InvalidInput(f"issuer_public: expected a PublicArea, got {type(issuer_public).__name__}")
    attrs = issuer_public.object_attributes
    if not attrs & ObjectAttributes.SIGN_ENCRYPT or attrs & ObjectAttributes.RESTRICTED:
        raise InvalidInput("issuer key must be an unrestricted signing key (sign, not restricted)")
    try:
        scratch = builder.sign(_scratch_key(issuer_public), hashes.SHA256())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot build the certificate: {exc}") from None
    tbs, algorithm = _split_certificate(scratch.public_bytes(Encoding.DER))
    if tbs != scratch.tbs_certificate_bytes:
        raise InvalidInput("certificate: TBS does not split out as cryptography encoded it")
    signature = _signature_value(sign_digest(hashlib.sha256(tbs).digest()), issuer_public)
    der = _der.sequence(tbs, algorithm, _der.bit_string(signature))
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateInvalid(f"assembled certificate does not load ({exc})") from None
    check_signed_by(cert, issuer_public.public_key(), "TM-signed certificate")
    return cert


def software_signer(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> SignDigest:
    """A `sign_digest` over a software key that answers as TPM2_Sign would (a marshalled TPMT_SIGNATURE,
    ECDSA-SHA256 or RSASSA-SHA256). For tests and tools that have no TM; it proves nothing a TM would."""
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

    from vroot.tpm2 import Signature

    def sign(digest: bytes) -> bytes:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
            size = (key.curve.key_size + 7) // 8
            return Signature(
                SigAlg.ECDSA, HashAlg.SHA256, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big")
            ).encode()
        sig = key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return Signature(SigAlg.RSASSA, HashAlg.SHA256, sig=sig).encode()

    return sign
