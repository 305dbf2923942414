"""Reference values and baselines: what a good platform measures (DESIGN.md section 5).

A `Baseline` is a named, versioned set of `ReferenceValue`s (one measured component: the PCR and
event type it is logged with and its digest in one or more banks) and, optionally, an
`ImaReference` (the file digests allowed per path, several per path for several package
versions). Every value is checked when it is built; bad values raise `InvalidInput`.

A baseline holds no host identity, so a VM's baseline holds wherever the VM runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vroot.baseline._excludes import validate_excludes
from vroot.errors import InvalidInput
from vroot.tpm2 import HashAlg

__all__ = [
    "MAX_IMA_PATHS",
    "MAX_REFERENCE_VALUES",
    "Baseline",
    "ImaReference",
    "ReferenceValue",
]

MAX_REFERENCE_VALUES = 100_000
MAX_IMA_PATHS = 2_000_000
MAX_DIGESTS_PER_PATH = 1024
MAX_PATH = 4096
MAX_PCR = 31
MAX_TEXT = 4096
MAX_COMPONENT = 256
FILE_DIGEST_SIZES = frozenset({16, 20, 24, 28, 32, 40, 48, 64})  # the sizes of the hashes IMA logs
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+~-]{0,127}")


def check_name(value: object, what: str) -> str:
    """A baseline name, version or policy group: 1-128 of `A-Za-z0-9._:@/+~-`, starting alphanumeric."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(f"{what} {value!r:.80} must be 1-128 characters of A-Za-z0-9._:@/+~- (alphanumeric first)")
    return value


def check_text(value: object, what: str, cap: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > cap or "\x00" in value:
        raise InvalidInput(f"{what} must be text of at most {cap} characters without NUL")
    return value


def check_digests(digests: object, what: str) -> Mapping[HashAlg, bytes]:
    """A read-only {HashAlg: digest} with at least one entry, each of its algorithm's size."""
    if not isinstance(digests, Mapping) or not digests:
        raise InvalidInput(f"{what}: digests must map at least one hash algorithm to a digest")
    out: dict[HashAlg, bytes] = {}
    for alg, digest in digests.items():
        if not isinstance(alg, HashAlg):
            raise InvalidInput(f"{what}: {alg!r} is not a HashAlg")
        if not isinstance(digest, bytes) or len(digest) != alg.digest_size:
            raise InvalidInput(f"{what}: a {alg.bank} digest is {alg.digest_size} bytes")
        out[alg] = digest
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceValue:
    """One component as a good platform measures it (IM-1: the digest in a PCR, the description
    in the log): `component` at `version`, logged in `pcr` as an event of `event_type` (an
    `EventType` value) with `digests` per bank.

    `required`: appraisal reports `baseline.event.missing` when no event of a checked PCR matches it.
    """

    component: str
    version: str = ""
    pcr: int
    event_type: int
    digests: Mapping[HashAlg, bytes]
    description: str = ""
    required: bool = False

    def __post_init__(self) -> None:
        check_text(self.component, "reference value component", MAX_COMPONENT)
        if not self.component:
            raise InvalidInput("reference value component must not be empty")
        check_text(self.version, f"reference value {self.component!r} version", MAX_COMPONENT)
        check_text(self.description, f"reference value {self.component!r} description")
        if type(self.pcr) is not int or not 0 <= self.pcr <= MAX_PCR:
            raise InvalidInput(f"reference value {self.component!r}: PCR {self.pcr!r} is not 0-{MAX_PCR}")
        if not isinstance(self.event_type, int) or isinstance(self.event_type, bool):
            raise InvalidInput(f"reference value {self.component!r}: event type must be an integer")
        if not 0 <= self.event_type <= 0xFFFFFFFF:
            raise InvalidInput(f"reference value {self.component!r}: event type {self.event_type} out of range")
        object.__setattr__(self, "event_type", int(self.event_type))
        object.__setattr__(self, "digests", check_digests(self.digests, f"reference value {self.component!r}"))
        if not isinstance(self.required, bool):
            raise InvalidInput(f"reference value {self.component!r}: required must be true or false")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImaReference:
    """Allowed IMA file digests per path (an allowlist), and paths to leave out (`excludes`:
    regular expressions matched against whole paths, see `vroot.baseline._excludes`).

    `digests` maps a path (for `ima-buf` entries: the buffer's name, e.g. a keyring) to the set
    of digests allowed for it; a digest is the raw file digest of any algorithm IMA logs.
    """

    digests: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.digests, Mapping):
            raise InvalidInput("IMA reference digests must map paths to digests")
        if len(self.digests) > MAX_IMA_PATHS:
            raise InvalidInput(f"IMA reference: more than {MAX_IMA_PATHS} paths")
        out: dict[str, frozenset[bytes]] = {}
        for path, digests in self.digests.items():
            _check_path(path)
            if isinstance(digests, bytes | str) or not isinstance(digests, Iterable):
                raise InvalidInput(f"IMA reference {path[:80]!r}: digests must be a set of byte strings")
            values = frozenset(digests)
            if not values or len(values) > MAX_DIGESTS_PER_PATH:
                raise InvalidInput(f"IMA reference {path[:80]!r}: 1-{MAX_DIGESTS_PER_PATH} digests")
            for digest in values:
                if not isinstance(digest, bytes) or len(digest) not in FILE_DIGEST_SIZES:
                    raise InvalidInput(
                        f"IMA reference {path[:80]!r}: a digest must be {sorted(FILE_DIGEST_SIZES)} bytes"
                    )
            out[path] = values
        object.__setattr__(self, "digests", MappingProxyType(dict(sorted(out.items()))))
        object.__setattr__(self, "excludes", validate_excludes(self.excludes, what="IMA reference excludes"))

    def merge(self, other: ImaReference) -> ImaReference:
        """The union: every digest of either for each path, the excludes of both (each once)."""
        merged: dict[str, set[bytes]] = {p: set(d) for p, d in self.digests.items()}
        for path, digests in other.digests.items():
            merged.setdefault(path, set()).update(digests)
        excludes = tuple(dict.fromkeys(self.excludes + other.excludes))
        return ImaReference(digests={p: frozenset(d) for p, d in merged.items()}, excludes=excludes)


def _check_path(path: object) -> None:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\x00" in path or "\n" in path:
        raise InvalidInput(f"IMA reference path {path!r:.80} must be 1-{MAX_PATH} characters without NUL/newline")


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """A named, versioned baseline. Appraisals name the `name` and `version` they used.

    Does not prove anything by itself: it is what an operator says a good platform measures.
    """

    name: str
    version: str
    reference_values: tuple[ReferenceValue, ...] = ()
    ima: ImaReference | None = None
    description: str = ""
    _index: Mapping[tuple[int, int, HashAlg, bytes], tuple[int, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        check_name(self.name, "baseline name")
        check_name(self.version, "baseline version")
        check_text(self.description, "baseline description")
        values = tuple(self.reference_values) if not isinstance(self.reference_values, str | bytes) else None
        if values is None or not all(isinstance(v, ReferenceValue) for v in values):
            raise InvalidInput("baseline reference_values must be ReferenceValues")
        if len(values) > MAX_REFERENCE_VALUES:
            raise InvalidInput(f"baseline: more than {MAX_REFERENCE_VALUES} reference values")
        if self.ima is not None and not isinstance(self.ima, ImaReference):
            raise InvalidInput("baseline ima must be an ImaReference or None")
        object.__setattr__(self, "reference_values", values)
        index: dict[tuple[int, int, HashAlg, bytes], list[int]] = {}
        for position, value in enumerate(values):
            for alg, digest in value.digests.items():
                index.setdefault((value.pcr, value.event_type, alg, digest), []).append(position)
        object.__setattr__(self, "_index", MappingProxyType({k: tuple(v) for k, v in index.items()}))

    def candidates(self, pcr: int, event_type: int, alg: HashAlg, digest: bytes) -> tuple[int, ...]:
        """Positions of the reference values for (`pcr`, `event_type`) whose `alg` digest is `digest`."""
        return self._index.get((pcr, event_type, alg, digest), ())

    def with_ima(self, ima: ImaReference, *, version: str) -> Baseline:
        """A new version of this baseline with `ima` merged into its IMA reference."""
        merged = ima if self.ima is None else self.ima.merge(ima)
        return Baseline(name=self.name, version=version, reference_values=self.reference_values, ima=merged,
                        description=self.description)  # fmt: skip
