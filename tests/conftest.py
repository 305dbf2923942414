"""Shared fixtures: where the real-machine corpora live, and the swtpm fixtures (tests/tpm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Real logs and quotes from real machines; read in place, never copied into the repository.
CORPORA = Path(os.environ.get("VROOT_CORPORA", ROOT.parent / "shared" / "corpora"))


def pytest_configure(config: pytest.Config) -> None:
    # Corpus tests are parametrized at collection; without the corpora they would silently vanish.
    if not CORPORA.is_dir():
        raise pytest.UsageError(f"corpora not found at {CORPORA}: check out next to ../shared or set VROOT_CORPORA")


@pytest.fixture(scope="session")
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.fail(f"corpora not found at {CORPORA} (set VROOT_CORPORA)")
    return CORPORA
