"""Certificates verified once, reused while they stay valid (issue 4, Performance).

Every agent request presents its TLS client certificate, and every attestation checks the agent's
AK certificate: the same bytes, verified the same way, thousands of times an hour. A `VerifiedCache`
keeps what a verification returned, keyed by exactly the bytes (and inputs) that were verified, and
hands it out again only while `now` lies inside the validity window of the certificate AND of its
trust anchor; outside it, or for anything it has not seen, the caller verifies afresh (and that
verification raises as it always did). Failures are never cached.

Proves nothing new: a hit returns what the full verification proved for those same bytes.
Does not replace the checks that can change while a certificate stays valid: the caller still
asks the store, on every use, whether it was revoked and whose it is (so a revocation is honoured
at the next request).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from cryptography import x509

__all__ = ["VerifiedCache", "validity_window"]

T = TypeVar("T")


def validity_window(*certificates: x509.Certificate) -> tuple[datetime, datetime]:
    """The time during which every one of `certificates` is valid (notBefore .. notAfter)."""
    return (max(c.not_valid_before_utc for c in certificates), min(c.not_valid_after_utc for c in certificates))


class VerifiedCache(Generic[T]):
    """At most `size` verification results, least recently used dropped first. Thread-safe."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[T, datetime, datetime]] = OrderedDict()

    def get(self, key: Hashable, now: datetime, verify: Callable[[], tuple[T, tuple[datetime, datetime]]]) -> T:
        """The cached result for `key` if `now` is inside its window, else `verify()`'s (cached then).
        `verify` returns the result and the window it holds for (`validity_window`)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None and entry[1] <= now < entry[2]:
            return entry[0]
        value, (start, end) = verify()
        with self._lock:
            self._entries[key] = (value, start, end)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
