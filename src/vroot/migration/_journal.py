"""Durable per-migration journals of one host (`DIR/migrations/<migration-id>.json`, and the source's
`<migration-id>.blob`): written atomically, so a crash leaves the previous state or the next."""

from __future__ import annotations

import json
from pathlib import Path

from vroot._fs import atomic_write, make_private_dir
from vroot.errors import InvalidInput
from vroot.migration.protocol import Journal, parse_migration_id

__all__ = ["JournalStore"]


class JournalStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, migration_id: str, suffix: str) -> Path:
        return self.root / f"{parse_migration_id(migration_id)}.{suffix}"

    def load(self, migration_id: str) -> Journal | None:
        try:
            text = self._path(migration_id, "json").read_text()
        except FileNotFoundError:
            return None
        try:
            return Journal.from_json(json.loads(text))
        except ValueError as exc:
            raise InvalidInput(f"migration journal {migration_id}: {exc}") from None

    def save(self, journal: Journal) -> Journal:
        make_private_dir(self.root)
        atomic_write(
            self._path(journal.migration_id, "json"), json.dumps(journal.to_json(), indent=2).encode()
        )
        return journal

    def save_blob(self, migration_id: str, blob: bytes) -> None:
        make_private_dir(self.root)
        atomic_write(self._path(migration_id, "blob"), blob)

    def load_blob(self, migration_id: str) -> bytes | None:
        try:
            return self._path(migration_id, "blob").read_bytes()
        except FileNotFoundError:
            return None

    def all(self) -> list[Journal]:
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.glob("*.json")):
            journal = self.load(path.stem)
            if journal is not None:
                out.append(journal)
        return out
