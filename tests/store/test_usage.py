"""The usage shown in the `vroot.store` docstring runs as written (on a temporary SQLite file)."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path

from store_helpers import NOW

import vroot.store


def test_package_docstring_example_runs(tmp_path: Path) -> None:
    doc = vroot.store.__doc__ or ""
    lines = doc.splitlines()[1:]
    end = next(i for i, line in enumerate(lines) if line and not line.startswith(" "))
    block = "\n".join(lines[:end])
    assert "Store.open" in block
    code = textwrap.dedent(block).replace(
        "sqlite:///var/lib/vroot/state.db", f"sqlite:///{tmp_path / 'v.db'}"
    )
    code = code.replace("store.events.since(0)", "events = store.events.since(0)")
    scope: dict[str, object] = {"now": NOW, "ek": b"ek", "timedelta": timedelta, "os": os}
    exec(compile(code, "vroot.store docstring", "exec"), scope)  # noqa: S102 - our own docstring
    assert [e.kind for e in scope["events"]] == ["verdict.changed"]
