"""The baseline library as the server keeps it (issue 4, point 5): baselines and group policies in
the store, checked by `vroot.baseline` before they are stored, and resolved for an appraisal.

    library.put_baseline("hosts", 3, manifest_bytes)        # YAML or JSON; versions are immutable
    library.put_policy("hosts", policy_bytes, expected_version=0, baseline_version=None)
    resolved = library.resolve("hosts")                      # Policy + Baseline for appraise()

Versions. A baseline is stored as (name, version) with `version` an integer chosen by the operator
(the URL's); the manifest's own `version` text is kept as its label. A policy names its baseline
(`baseline:` in the manifest, required here) and is resolved to the NEWEST version of that
baseline at each appraisal, unless the policy was stored with `baseline_version` (a pin: that
version, always). Policies carry an optimistic version: replacing one needs the version read.

Documents are stored in canonical JSON form (`dump_manifest`/`dump_policy`), so what is read back
is what was checked. Parsed baselines and policies are cached per (name, version) and (group,
version): both are immutable once stored, so a cached value is never stale; the cache belongs to
one `Library` (no global), and a newer version is seen at the next `resolve`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vroot.baseline import Baseline, Policy, dump_manifest, dump_policy, load_manifest, load_policy
from vroot.errors import InvalidInput, NotFound
from vroot.store import BaselineRecord, PolicyRecord, Store

__all__ = ["Library", "ResolvedPolicy", "policy_pin"]

CACHE_SIZE = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedPolicy:
    """What one appraisal of an attester of `group` runs on: its policy and baseline, by version.

    `policy_id` ("group@policy-version/baseline@baseline-version") names both exactly; it goes into
    each signed result (`ear.appraisal-policy-id`), so a relying party knows what was applied.
    """

    group: str
    policy: Policy
    policy_version: int
    baseline: Baseline
    baseline_name: str
    baseline_version: int

    @property
    def policy_id(self) -> str:
        return f"{self.group}@{self.policy_version}/{self.baseline_name}@{self.baseline_version}"


def policy_pin(record: PolicyRecord) -> int | None:
    """The baseline version a stored policy pins, or None (the newest is used)."""
    doc = record.document if isinstance(record.document, dict) else {}
    pin = doc.get("baseline_version")
    return pin if isinstance(pin, int) and not isinstance(pin, bool) else None


def policy_manifest(record: PolicyRecord) -> dict[str, Any]:
    doc = record.document if isinstance(record.document, dict) else {}
    manifest = doc.get("manifest")
    if not isinstance(manifest, dict):
        raise InvalidInput(f"stored policy of group {record.group} is not a vroot policy document")
    return manifest


class _Cache:
    """A small LRU map, safe across threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class Library:
    """Baselines and policies: checked on the way in, resolved for appraisal. Raises only
    `vroot.errors` (InvalidInput for a bad manifest, NotFound, Conflict)."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime], cache_size: int = CACHE_SIZE) -> None:
        self._store = store
        self._clock = clock
        self._baselines = _Cache(cache_size)
        self._policies = _Cache(cache_size)

    # -- baselines --------------------------------------------------------------------------------

    def put_baseline(self, name: str, version: int, manifest: bytes) -> BaselineRecord:
        """Store version `version` of baseline `name` from a YAML/JSON manifest naming the same
        baseline. Conflict if that version exists (versions are never replaced)."""
        baseline = load_manifest(manifest)
        if baseline.name != name:
            raise InvalidInput(f"the manifest is of baseline {baseline.name!r}, not {name!r}")
        document = json.loads(dump_manifest(baseline, format="json"))
        return self._store.baselines.add(name=name, version=version, document=document, now=self._clock())

    def get_baseline(self, name: str, version: int | None = None) -> BaselineRecord:
        return self._store.baselines.get(name, version)

    def baseline(self, name: str, version: int) -> Baseline:
        """The parsed baseline `name` at `version` (cached)."""
        return self._baselines.get(
            (name, version), lambda: load_manifest(json.dumps(self._store.baselines.get(name, version).document))
        )

    # -- policies ---------------------------------------------------------------------------------

    def put_policy(
        self, group: str, manifest: bytes, *, expected_version: int, baseline_version: int | None = None
    ) -> PolicyRecord:
        """Create (`expected_version` 0) or replace the policy of `group` from a YAML/JSON policy
        manifest for the same group. The manifest must name its baseline, and that baseline (the
        pinned version, if any) must exist. Conflict when the stored version is not the one given."""
        policy = load_policy(manifest)
        if policy.group != group:
            raise InvalidInput(f"the manifest is the policy of group {policy.group!r}, not {group!r}")
        if policy.baseline is None:
            raise InvalidInput("the policy must name its baseline (baseline: NAME)")
        try:
            self._store.baselines.get(policy.baseline, baseline_version)
        except NotFound as exc:
            raise InvalidInput(f"the policy names a baseline that is not stored: {exc}") from None
        document = {"manifest": json.loads(dump_policy(policy, format="json")), "baseline_version": baseline_version}
        return self._store.policies.put(group, document, expected_version=expected_version, now=self._clock())

    def get_policy(self, group: str) -> PolicyRecord:
        return self._store.policies.get(group)

    def resolve(self, group: str) -> ResolvedPolicy:
        """The policy of `group` and the baseline it applies now. NotFound when the group has no
        policy or its baseline is gone."""
        record = self._store.policies.get(group)
        policy: Policy = self._policies.get(
            (group, record.version), lambda: load_policy(json.dumps(policy_manifest(record)))
        )
        assert policy.baseline is not None  # put_policy refuses a policy without one
        pin = policy_pin(record)
        version = pin if pin is not None else self._store.baselines.newest_version(policy.baseline)
        return ResolvedPolicy(group=group, policy=policy, policy_version=record.version,
                              baseline=self.baseline(policy.baseline, version), baseline_name=policy.baseline,
                              baseline_version=version)  # fmt: skip
