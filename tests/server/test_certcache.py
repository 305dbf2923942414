"""The cache of verified certificates (issue 4, Performance): a hit only inside the validity window
of what was verified, failures never cached; revocation stays the caller's per-use check (RA-5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vroot.errors import CertificateInvalid
from vroot.pki import create_ca
from vroot.server._certcache import VerifiedCache, validity_window

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_hit_only_inside_the_window_and_failures_are_not_kept() -> None:
    cache: VerifiedCache[str] = VerifiedCache(size=2)
    calls: list[str] = []

    def verify(value: str, start: datetime, end: datetime):  # noqa: ANN202
        def run() -> tuple[str, tuple[datetime, datetime]]:
            calls.append(value)
            return value, (start, end)

        return run

    window = (T0, T0 + timedelta(days=1))
    assert cache.get("a", T0, verify("a1", *window)) == "a1"
    assert cache.get("a", T0 + timedelta(hours=23), verify("a2", *window)) == "a1" and calls == ["a1"]
    assert cache.get("a", T0 + timedelta(days=1), verify("a3", *window)) == "a3"  # at notAfter: verified again
    assert cache.get("a", T0 - timedelta(seconds=1), verify("a4", *window)) == "a4"  # before notBefore too

    def refuse() -> tuple[str, tuple[datetime, datetime]]:
        raise CertificateInvalid("expired")

    with pytest.raises(CertificateInvalid):
        cache.get("b", T0, refuse)
    with pytest.raises(CertificateInvalid):
        cache.get("b", T0, refuse)  # a failure is verified again, never served from the cache
    cache.get("c", T0, verify("c", *window))
    cache.get("d", T0, verify("d", *window))  # size 2: "a" (least recently used) is dropped
    assert cache.get("a", T0, verify("a5", *window)) == "a5"


def test_validity_window_is_where_every_certificate_is_valid() -> None:
    outer = create_ca(common_name="outer", now=T0, validity_days=30).certificate
    inner = create_ca(common_name="inner", now=T0 + timedelta(days=2), validity_days=10).certificate
    start, end = validity_window(outer, inner)
    assert start == max(outer.not_valid_before_utc, inner.not_valid_before_utc)
    assert end == min(outer.not_valid_after_utc, inner.not_valid_after_utc) and start < end
