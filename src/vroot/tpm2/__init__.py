"""Pure-Python codec for TPM 2.0 structures (TCG TPM 2.0 Library, part 2). Never imports tpm2-pytss.

    from vroot.tpm2 import HashAlg, PcrSelection, parse_attest, parse_signature, parse_public

    attest = parse_attest(open("quote.msg", "rb").read())     # UnverifiedAttest: proves nothing yet
    sig = parse_signature(open("quote.sig", "rb").read())     # Signature (RSASSA, RSAPSS, ECDSA...)
    ak = parse_public(open("ak.pub", "rb").read())            # PublicArea; ak.name(), ak.public_key()
    sel = PcrSelection.from_mapping({HashAlg.SHA256: range(8)})

Every parser is bounded: truncated input, trailing bytes and impossible sizes raise
`TpmStructureError` (an `InvalidInput`) with the offset and field. Every structure has a writer
(`.encode()`), and `parse(x.encode()) == x`. To verify a quote use `vroot.attestation`.

Names other than `HashAlg` load on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from importlib import import_module

from vroot.tpm2._alg import HashAlg

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs CLI start-up time
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

_EXPORTS = {
    "_constants": (
        "TPM_GENERATED_VALUE",
        "AttestType",
        "CommandCode",
        "EccCurve",
        "Handle",
        "ObjectType",
        "SigAlg",
        "TpmAlg",
    ),
    "_pcr_selection": ("PcrSelection", "parse_pcr_selection"),
    "_attest": ("CertifyInfo", "QuoteInfo", "UnverifiedAttest", "parse_attest", "split_attest"),
    "_signature": ("Signature", "parse_signature"),
    "_public": (
        "AK_ATTRIBUTES",
        "EccPoint",
        "ObjectAttributes",
        "PublicArea",
        "Scheme",
        "SymDef",
        "parse_public",
        "qualified_name",
    ),
    "_keys": ("load_ak", "public_area_from_key"),
    "_policy": ("pcr_values_digest", "policy_command_code", "policy_pcr", "policy_secret"),
    "_credential": ("kdfa", "kdfe", "make_credential"),
    "_tools_pcrs": ("encode_tpm2_tools_pcrs", "parse_tpm2_tools_pcrs"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "AK_ATTRIBUTES",
    "AttestType",
    "CertifyInfo",
    "CommandCode",
    "EccCurve",
    "EccPoint",
    "Handle",
    "HashAlg",
    "ObjectAttributes",
    "ObjectType",
    "PcrSelection",
    "PublicArea",
    "QuoteInfo",
    "Scheme",
    "SigAlg",
    "Signature",
    "SymDef",
    "TPM_GENERATED_VALUE",
    "TpmAlg",
    "UnverifiedAttest",
    "encode_tpm2_tools_pcrs",
    "kdfa",
    "kdfe",
    "load_ak",
    "make_credential",
    "parse_attest",
    "parse_pcr_selection",
    "parse_public",
    "parse_signature",
    "parse_tpm2_tools_pcrs",
    "pcr_values_digest",
    "policy_command_code",
    "policy_pcr",
    "policy_secret",
    "public_area_from_key",
    "qualified_name",
    "split_attest",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from vroot.tpm2._attest import CertifyInfo, QuoteInfo, UnverifiedAttest, parse_attest, split_attest
    from vroot.tpm2._constants import (
        TPM_GENERATED_VALUE,
        AttestType,
        CommandCode,
        EccCurve,
        Handle,
        ObjectType,
        SigAlg,
        TpmAlg,
    )
    from vroot.tpm2._credential import kdfa, kdfe, make_credential
    from vroot.tpm2._keys import load_ak, public_area_from_key
    from vroot.tpm2._pcr_selection import PcrSelection, parse_pcr_selection
    from vroot.tpm2._policy import pcr_values_digest, policy_command_code, policy_pcr, policy_secret
    from vroot.tpm2._public import (
        AK_ATTRIBUTES,
        EccPoint,
        ObjectAttributes,
        PublicArea,
        Scheme,
        SymDef,
        parse_public,
        qualified_name,
    )
    from vroot.tpm2._signature import Signature, parse_signature
    from vroot.tpm2._tools_pcrs import encode_tpm2_tools_pcrs, parse_tpm2_tools_pcrs
