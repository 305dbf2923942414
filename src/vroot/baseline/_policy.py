"""Appraisal policies, one per group of attesters (DESIGN.md section 5).

A `Policy` says how a group's verified evidence is judged against its baseline:

- `pcrs`: golden values, bank -> PCR -> value, that verified PCRs must equal;
- `event_pcrs`: PCRs whose every TCG event must be in the baseline (and whose required
  reference values must appear);
- `ima`: an `ImaPolicy` (None: IMA is not appraised);
- `max_evidence_age`: how old evidence may be when it is appraised (None: no limit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from vroot.baseline._excludes import compile_excludes, validate_excludes
from vroot.baseline._imasig import ImaSigningKey, keys_by_id
from vroot.baseline._model import MAX_PCR, check_name, check_text
from vroot.errors import InvalidInput
from vroot.tpm2 import HashAlg

__all__ = ["MAX_EVIDENCE_AGE", "ImaPolicy", "Policy"]

MAX_EVIDENCE_AGE = timedelta(days=366)
MAX_SIGNING_KEYS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class ImaPolicy:
    """How IMA entries are appraised (see the package docstring for the order of the checks).

    `require_allowlist`: a measured path must be in the baseline's IMA reference (or carry a valid
    signature by an accepted key); when False, paths not in it are not reported, but a path in it
    with another digest still is. `excludes`: regular expressions (whole-path match) of paths not
    appraised at all, added to the baseline's. `signing_keys`: keys whose signatures make an entry
    acceptable. `require_signatures`: every appraised entry must carry a valid signature by one of
    them. `tolerate_violations`: report IMA violations as warnings instead of errors.
    """

    require_allowlist: bool = True
    excludes: tuple[str, ...] = ()
    signing_keys: tuple[ImaSigningKey, ...] = ()
    require_signatures: bool = False
    tolerate_violations: bool = False
    _keys: Mapping[bytes, tuple[ImaSigningKey, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for name in ("require_allowlist", "require_signatures", "tolerate_violations"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInput(f"IMA policy {name} must be true or false")
        object.__setattr__(self, "excludes", validate_excludes(self.excludes, what="IMA policy excludes"))
        keys = tuple(self.signing_keys) if not isinstance(self.signing_keys, str | bytes) else None
        if keys is None or not all(isinstance(k, ImaSigningKey) for k in keys):
            raise InvalidInput("IMA policy signing_keys must be ImaSigningKeys")
        if len(keys) > MAX_SIGNING_KEYS:
            raise InvalidInput(f"IMA policy: more than {MAX_SIGNING_KEYS} signing keys")
        object.__setattr__(self, "signing_keys", keys)
        object.__setattr__(self, "_keys", MappingProxyType(dict(keys_by_id(keys))))

    @property
    def keys_by_id(self) -> Mapping[bytes, tuple[ImaSigningKey, ...]]:
        return self._keys

    def exclude_pattern(self, baseline_excludes: Iterable[str] = ()) -> re.Pattern[str] | None:
        """One compiled pattern for this policy's excludes and `baseline_excludes`."""
        return compile_excludes(dict.fromkeys((*self.excludes, *baseline_excludes)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The appraisal policy of one group of attesters (`group`), against baseline `baseline`
    (a baseline name; the store resolves it to a version; None leaves the choice to the caller)."""

    group: str
    baseline: str | None = None
    pcrs: Mapping[HashAlg, Mapping[int, bytes]] = field(default_factory=dict)
    event_pcrs: frozenset[int] = frozenset()
    ima: ImaPolicy | None = None
    max_evidence_age: timedelta | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.group, "policy group")
        if self.baseline is not None:
            check_name(self.baseline, "policy baseline")
        check_text(self.description, "policy description")
        if not isinstance(self.pcrs, Mapping):
            raise InvalidInput("policy pcrs must map banks to {PCR: value}")
        golden: dict[HashAlg, Mapping[int, bytes]] = {}
        for alg, values in self.pcrs.items():
            if not isinstance(alg, HashAlg) or not isinstance(values, Mapping):
                raise InvalidInput("policy pcrs must map a HashAlg to {PCR: value}")
            bank: dict[int, bytes] = {}
            for index, value in values.items():
                _check_pcr(index, "policy golden PCR")
                if not isinstance(value, bytes) or len(value) != alg.digest_size:
                    raise InvalidInput(f"policy golden {alg.bank} PCR {index}: a value is {alg.digest_size} bytes")
                bank[index] = value
            if bank:
                golden[alg] = MappingProxyType(dict(sorted(bank.items())))
        object.__setattr__(self, "pcrs", MappingProxyType(dict(sorted(golden.items()))))
        if isinstance(self.event_pcrs, str | bytes) or not isinstance(self.event_pcrs, Iterable):
            raise InvalidInput("policy event_pcrs must be a set of PCR indices")
        event_pcrs = frozenset(self.event_pcrs)
        for index in event_pcrs:
            _check_pcr(index, "policy event PCR")
        object.__setattr__(self, "event_pcrs", event_pcrs)
        if self.ima is not None and not isinstance(self.ima, ImaPolicy):
            raise InvalidInput("policy ima must be an ImaPolicy or None")
        age = self.max_evidence_age
        if age is not None and (not isinstance(age, timedelta) or not timedelta(0) < age <= MAX_EVIDENCE_AGE):
            raise InvalidInput(f"policy max_evidence_age must be a duration above 0 and at most {MAX_EVIDENCE_AGE}")


def _check_pcr(index: object, what: str) -> None:
    if type(index) is not int or not 0 <= index <= MAX_PCR:
        raise InvalidInput(f"{what} {index!r} is not a PCR index 0-{MAX_PCR}")
