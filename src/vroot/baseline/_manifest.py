"""Baseline and policy manifests: YAML or JSON documents, read with pydantic (`extra="forbid"`).

Baseline manifest (`kind` may be left out; hex is upper or lower case, written lower case):

    kind: vroot.baseline
    name: host-firmware            # 1-128 of A-Za-z0-9._:@/+~-
    version: "2024.06.1"           # the same alphabet; quote it in YAML
    description: ""
    reference_values:
      - component: shim
        version: "15.8"
        pcr: 4
        event_type: EV_EFI_BOOT_SERVICES_APPLICATION   # a name, or the number
        digests: {sha256: "<hex>", sha1: "<hex>"}       # at least one bank
        description: ""
        required: false
    ima:                           # optional
      digests: {"/usr/bin/qemu-system-x86_64": ["<hex>", "<hex>"]}
      excludes: ["/tmp/.*"]        # regular expressions matching whole paths

Policy manifest:

    kind: vroot.policy
    group: hosts
    baseline: host-firmware        # optional
    description: ""
    pcrs: {sha256: {0: "<hex>", 7: "<hex>"}}   # golden values (optional)
    event_pcrs: [0, 1, 2, 3, 4, 5, 7, 8, 9]   # every event of these must be in the baseline
    max_evidence_age: 300          # seconds, optional
    ima:                           # optional: without it IMA is not appraised
      require_allowlist: true
      excludes: []
      require_signatures: false
      tolerate_violations: false
      signing_keys: [{pem: "-----BEGIN PUBLIC KEY-----...", key_id: "f3452d23", name: ""}]

`load_*(dump_*(x)) == x` for every value; `dump_*` writes every field, so `dump(load(d))` is
the canonical form of `d`. Any bad document raises `InvalidInput`, never another exception.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from vroot.baseline._documents import dump_document, read_model
from vroot.baseline._imasig import ImaSigningKey
from vroot.baseline._model import Baseline, ImaReference, ReferenceValue
from vroot.baseline._policy import MAX_EVIDENCE_AGE, ImaPolicy, Policy
from vroot.errors import InvalidInput
from vroot.eventlog import EventType
from vroot.tpm2 import HashAlg

__all__ = ["dump_manifest", "dump_policy", "load_manifest", "load_policy", "parse_hex"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
Text = Annotated[StrictStr, Field(max_length=4096)]
Hex = Annotated[StrictStr, Field(max_length=256)]
PcrIndex = Annotated[StrictInt, Field(ge=0, le=31)]
LaxPcrIndex = Annotated[int, Field(ge=0, le=31)]  # JSON object keys are text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_hex(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise InvalidInput(f"{what}: {value!r:.80} is not an even number of hex digits")
    return bytes.fromhex(value)


def _banks(names: dict[str, object], what: str) -> dict[HashAlg, object]:
    """{HashAlg: value} of {bank name: value}; `InvalidInput` for an unknown or repeated bank."""
    out: dict[HashAlg, object] = {}
    for name, value in names.items():
        try:
            alg = HashAlg.from_bank(name)
        except InvalidInput:
            raise InvalidInput(f"{what}: unknown bank {name!r:.40}") from None
        if alg in out:
            raise InvalidInput(f"{what}: bank {alg.bank} given twice")
        out[alg] = value
    return out


def _event_type(value: str | int, what: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(EventType[value])
    except KeyError:
        pass
    if re.fullmatch(r"0x[0-9a-fA-F]{1,8}", value):
        return int(value, 16)
    raise InvalidInput(f"{what}: event type {value!r:.80} is not an EV_* name or a number")


class ReferenceValueDoc(_Model):
    component: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    version: Annotated[StrictStr, Field(max_length=256)] = ""
    pcr: PcrIndex
    event_type: StrictStr | StrictInt
    digests: dict[StrictStr, Hex] = Field(min_length=1, max_length=16)
    description: Text = ""
    required: StrictBool = False

    def to_domain(self, where: str) -> ReferenceValue:
        digests = {alg: parse_hex(h, f"{where}.digests.{alg.bank}")
                   for alg, h in _banks(self.digests, f"{where}.digests").items()}  # fmt: skip
        return ReferenceValue(component=self.component, version=self.version, pcr=self.pcr,
                              event_type=_event_type(self.event_type, where), digests=digests,
                              description=self.description, required=self.required)  # fmt: skip


class ImaReferenceDoc(_Model):
    digests: dict[StrictStr, list[Hex]] = {}
    excludes: list[StrictStr] = []

    def to_domain(self) -> ImaReference:
        digests = {p: frozenset(parse_hex(h, f"ima.digests.{p[:60]}") for h in hs) for p, hs in self.digests.items()}
        return ImaReference(digests=digests, excludes=tuple(self.excludes))


class BaselineDoc(_Model):
    kind: Literal["vroot.baseline"] = "vroot.baseline"
    name: StrictStr
    version: StrictStr
    description: Text = ""
    reference_values: list[ReferenceValueDoc] = []
    ima: ImaReferenceDoc | None = None

    def to_domain(self) -> Baseline:
        values = tuple(v.to_domain(f"reference_values.{i}") for i, v in enumerate(self.reference_values))
        ima = None if self.ima is None else self.ima.to_domain()
        return Baseline(name=self.name, version=self.version, reference_values=values, ima=ima,
                        description=self.description)  # fmt: skip


class SigningKeyDoc(_Model):
    pem: Annotated[StrictStr, Field(min_length=1, max_length=65536)]
    key_id: Hex | None = None
    name: Annotated[StrictStr, Field(max_length=256)] = ""

    def to_domain(self) -> ImaSigningKey:
        key_id = b"" if self.key_id is None else parse_hex(self.key_id, "ima.signing_keys.key_id")
        if self.key_id is not None and len(key_id) != 4:
            raise InvalidInput(f"ima.signing_keys.key_id: {self.key_id!r} is not 4 bytes of hex")
        return ImaSigningKey(pem=self.pem, key_id=key_id, name=self.name)


class ImaPolicyDoc(_Model):
    require_allowlist: StrictBool = True
    excludes: list[StrictStr] = []
    signing_keys: list[SigningKeyDoc] = []
    require_signatures: StrictBool = False
    tolerate_violations: StrictBool = False

    def to_domain(self) -> ImaPolicy:
        return ImaPolicy(require_allowlist=self.require_allowlist, excludes=tuple(self.excludes),
                         signing_keys=tuple(k.to_domain() for k in self.signing_keys),
                         require_signatures=self.require_signatures,
                         tolerate_violations=self.tolerate_violations)  # fmt: skip


class PolicyDoc(_Model):
    kind: Literal["vroot.policy"] = "vroot.policy"
    group: StrictStr
    baseline: StrictStr | None = None
    description: Text = ""
    pcrs: dict[StrictStr, dict[LaxPcrIndex, Hex]] = {}
    event_pcrs: list[PcrIndex] = []
    max_evidence_age: Annotated[StrictInt | StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = None
    ima: ImaPolicyDoc | None = None

    def to_domain(self) -> Policy:
        pcrs = {
            alg: {i: parse_hex(h, f"pcrs.{alg.bank}.{i}") for i, h in values.items()}
            for alg, values in _banks(self.pcrs, "pcrs").items()
        }
        age = None
        if self.max_evidence_age is not None:
            if self.max_evidence_age > MAX_EVIDENCE_AGE.total_seconds():
                raise InvalidInput(f"max_evidence_age: at most {MAX_EVIDENCE_AGE.total_seconds():g} seconds")
            age = timedelta(seconds=self.max_evidence_age)
        return Policy(group=self.group, baseline=self.baseline, description=self.description, pcrs=pcrs,
                      event_pcrs=frozenset(self.event_pcrs), max_evidence_age=age,
                      ima=None if self.ima is None else self.ima.to_domain())  # fmt: skip


def load_manifest(data: bytes | str) -> Baseline:
    """A `Baseline` from a YAML or JSON baseline manifest (schema in the module docstring)."""
    return read_model(data, BaselineDoc, what="baseline manifest").to_domain()


def load_policy(data: bytes | str) -> Policy:
    """A `Policy` from a YAML or JSON policy manifest (schema in the module docstring)."""
    return read_model(data, PolicyDoc, what="policy manifest").to_domain()


def _type_name(value: int) -> str | int:
    try:
        return EventType(value).name
    except ValueError:
        return value


def dump_manifest(baseline: Baseline, *, format: Literal["yaml", "json"] = "yaml") -> bytes:
    """The manifest of `baseline` (every field written, digests in lower-case hex)."""
    doc: dict = {"kind": "vroot.baseline", "name": baseline.name, "version": baseline.version,
                 "description": baseline.description, "reference_values": []}  # fmt: skip
    for value in baseline.reference_values:
        doc["reference_values"].append({
            "component": value.component,
            "version": value.version,
            "pcr": value.pcr,
            "event_type": _type_name(value.event_type),
            "digests": {alg.bank: digest.hex() for alg, digest in value.digests.items()},
            "description": value.description,
            "required": value.required,
        })  # fmt: skip
    if baseline.ima is not None:
        doc["ima"] = {
            "digests": {path: sorted(d.hex() for d in digests) for path, digests in baseline.ima.digests.items()},
            "excludes": list(baseline.ima.excludes),
        }
    return dump_document(doc, format=format)


def dump_policy(policy: Policy, *, format: Literal["yaml", "json"] = "yaml") -> bytes:
    """The manifest of `policy` (every field written; key ids always given)."""
    age = policy.max_evidence_age
    seconds = None if age is None else age.total_seconds()
    doc: dict = {
        "kind": "vroot.policy",
        "group": policy.group,
        "baseline": policy.baseline,
        "description": policy.description,
        "pcrs": {alg.bank: {i: v.hex() for i, v in values.items()} for alg, values in policy.pcrs.items()},
        "event_pcrs": sorted(policy.event_pcrs),
        "max_evidence_age": int(seconds) if seconds is not None and seconds.is_integer() else seconds,
    }
    if format == "json":  # JSON object keys are text
        doc["pcrs"] = {bank: {str(i): v for i, v in values.items()} for bank, values in doc["pcrs"].items()}
    if policy.ima is not None:
        ima = policy.ima
        doc["ima"] = {
            "require_allowlist": ima.require_allowlist,
            "excludes": list(ima.excludes),
            "signing_keys": [{"pem": k.pem, "key_id": k.key_id.hex(), "name": k.name} for k in ima.signing_keys],
            "require_signatures": ima.require_signatures,
            "tolerate_violations": ima.tolerate_violations,
        }
    return dump_document(doc, format=format)
