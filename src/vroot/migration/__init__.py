"""vTM migration (ISO/IEC 27070 clauses 5.5, 6.6; DESIGN.md section 6): a vTM moves only to a TM that
certified its target key for this migration, never exists as two live copies, and never crosses the
network in the clear.

    from vroot.migration.engine import MigrationEngine
    from vroot.migration.protocol import MigrationTicket, verify_target

    dst, src = MigrationEngine(dst_manager), MigrationEngine(src_manager)
    target = dst.prepare_in(ticket)                              # MIG-4
    blob = src.export_out(ticket, target_public=..., certify_attest=..., certify_signature=...,
                          destination_ak_public=dst_ak_public)    # MIG-5, MIG-6 (verifies the target)
    dst.import_in(ticket.migration_id, blob)                      # MIG-7, MIG-10
    dst.finalize_in(mid); src.finalize_out(mid)                   # after the controller's commit

- `protocol` (pure): tickets, target verification, journal state machine.
- `blob` (pure): the blob format, AES-256-GCM with the header as AAD.
- `engine`: the steps on one host (host TM, vTM manager, journals), JSON in and out.

Names load on first use, so the pure parts import without the TSS.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["MigrationEngine", "MigrationTicket", "VerifiedTarget", "verify_target"]

_WHERE = {
    "MigrationEngine": "vroot.migration.engine",
    "MigrationTicket": "vroot.migration.protocol",
    "VerifiedTarget": "vroot.migration.protocol",
    "verify_target": "vroot.migration.protocol",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vroot.migration' has no attribute {name!r}")
