"""Baseline documents (versioned) and per-group policies (optimistic updates)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import NOW

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store import Store

DOC = {"components": [{"name": "shim", "pcr": 4, "digests": {"sha256": "ab" * 32}}]}


def test_baseline_versions(store: Store) -> None:
    v1 = store.baselines.add(name="fw-2024", document=DOC, group="prod", now=NOW)
    v2 = store.baselines.add(name="fw-2024", document={"v": 2}, now=NOW + timedelta(days=1))
    assert (v1.version, v2.version) == (1, 2) and v1.group == "prod" and v1.document == DOC
    assert store.baselines.get("fw-2024") == v2 and store.baselines.get("fw-2024", 1) == v1
    with pytest.raises(Conflict, match="version 2 already exists"):
        store.baselines.add(name="fw-2024", document={}, now=NOW, version=2)
    assert store.baselines.add(name="fw-2024", document={}, now=NOW, version=7).version == 7
    assert store.baselines.add(name="fw-2024", document={}, now=NOW).version == 8
    assert store.baselines.newest_version("fw-2024") == 8 == store.baselines.get("fw-2024").version
    with pytest.raises(NotFound):
        store.baselines.newest_version("nothing")
    with pytest.raises(NotFound, match="version 3"):
        store.baselines.get("fw-2024", 3)
    with pytest.raises(NotFound):
        store.baselines.get("nothing")
    with pytest.raises(InvalidInput):
        store.baselines.add(name="", document={}, now=NOW)


def test_baseline_list_and_delete(store: Store) -> None:
    store.baselines.add(name="a", document={}, group="g1", now=NOW)
    store.baselines.add(name="a", document={}, group="g1", now=NOW)
    store.baselines.add(name="b", document={}, group="g2", now=NOW)
    assert [(b.name, b.version) for b in store.baselines.list()] == [("a", 1), ("a", 2), ("b", 1)]
    assert [(b.name, b.version) for b in store.baselines.list(latest=True)] == [("a", 2), ("b", 1)]
    assert [b.name for b in store.baselines.list(group="g2")] == ["b"]
    store.baselines.delete("a", 2)
    assert store.baselines.get("a").version == 1
    with pytest.raises(NotFound):
        store.baselines.delete("a", 2)


def test_policy_put_with_expected_version(store: Store) -> None:
    p1 = store.policies.put("prod", {"pcrs": [0, 7]}, expected_version=0, now=NOW)
    assert p1.version == 1 and store.policies.get("prod") == p1
    with pytest.raises(Conflict, match="already exists"):
        store.policies.put("prod", {}, expected_version=0, now=NOW)
    p2 = store.policies.put("prod", {"pcrs": [0, 7, 10]}, expected_version=1, now=NOW + timedelta(hours=1))
    assert p2.version == 2 and p2.updated_at == NOW + timedelta(hours=1)
    with pytest.raises(Conflict, match="version 2, not 1"):  # a stale editor does not overwrite
        store.policies.put("prod", {"pcrs": []}, expected_version=1, now=NOW)
    assert store.policies.get("prod").document == {"pcrs": [0, 7, 10]}
    with pytest.raises(NotFound):
        store.policies.put("dev", {}, expected_version=3, now=NOW)
    store.policies.put("dev", {}, expected_version=0, now=NOW)
    assert [p.group for p in store.policies.list()] == ["dev", "prod"]
    store.policies.delete("dev")
    assert store.policies.find("dev") is None
    with pytest.raises(NotFound):
        store.policies.get("dev")
