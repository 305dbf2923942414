#!/usr/bin/env python3
"""The requirement table of docs/security-model.md: requirement ID -> code -> tests.

    scripts/reqmap.py            rewrite the table between the reqmap markers of docs/security-model.md
    scripts/reqmap.py --check    exit 1 if the file is out of date or a mapped code path is missing

The "tests" column is generated: every `tests/**/test_*.py` is read with `ast` (never imported) and
a requirement ID counts for a test when it is in the test's name (`test_ra1_...`, `test_vmm_f4_...`,
`test_mc_s3_...`, `test_mig10_...`; several IDs may lead the name) or in its docstring; an ID in a
module docstring counts for the module. Ranges (`MIG-4..10`, `MIG-5..MIG-10`) are expanded.

The "code" column is the hand-kept CODE mapping below (requirement -> paths under the repository);
`--check` verifies that every path exists.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = Path("docs/security-model.md")
START = "<!-- reqmap:start -->"
END = "<!-- reqmap:end -->"

# DESIGN.md section 9, in its order.
REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("HW-F1", "storage root in the host TM"),
    ("HW-F2", "EK, AK, quotes"),
    ("HW-F3", "PCR banks"),
    ("VMM-F1", "vTM lifecycle (create, start, stop, destroy)"),
    ("VMM-F2", "one vTM per VM, bound for life"),
    ("VMM-F3", "vTM state protected by the host TM"),
    ("VMM-F4", "vEK certificates linked to the TM"),
    ("VMM-F5", "deep quote"),
    ("VMM-F6", "vTM launch measured in a host PCR"),
    ("VMM-S1", "isolation between vTMs"),
    ("VMM-S2", "vTM keys released only in approved host states"),
    ("VMM-S3", "a vTM is distinguishable from a hardware TM"),
    ("VMM-S4", "state in transit confidential, bound to an attested destination, no replay, one live copy"),
    ("VMM-S5", "engines accept commands only from the authenticated controller"),
    ("VM-F1", "unchanged TPM 2.0 interface in the VM"),
    ("VM-F3", "virtual firmware measures the VM chain"),
    ("TT-1", "transitive trust in the host"),
    ("TT-2", "transitive trust in the VMM"),
    ("TT-3", "transitive trust in the VM"),
    ("IM-1", "measurement events: digests in PCRs, descriptions in the log"),
    ("RA-1", "AK/vAK certification by credential activation"),
    ("RA-2", "nonce challenge"),
    ("RA-3", "VM evidence"),
    ("RA-4", "host evidence bound to VM evidence"),
    ("RA-5", "verification and appraisal"),
    ("RA-6", "results stored and given to the controller"),
    ("RA-7", "replay, relay and forged-vTM attacks rejected"),
    ("DP-1", "binding to a TM-resident key"),
    ("DP-2", "sealing to (v)PCRs"),
    ("DP-3", "vTM rooted in the TM"),
    ("DP-4", "data sealed in a vTM survives its migration"),
    ("MC-F1", "controller decides when a vTM must migrate"),
    ("MC-F2", "controller instructs the migration engine"),
    ("MC-F3", "controller listens for completion"),
    ("MC-S1", "controller authenticated by an external entity"),
    ("MC-S2", "controller protected and remotely verifiable"),
    ("MC-S3", "policies for moving a TM-protected vTM"),
    ("MC-S4", "controller knows each system's trustworthiness and can restrict destinations"),
    ("MIG-1", "migration: (not defined in DESIGN.md section 6; the tests use it for: a vTM never migrates to its own host)"),
    ("MIG-2", "migration: (not defined in DESIGN.md section 6)"),
    ("MIG-3", "migration: (not defined in DESIGN.md section 6)"),
    ("MIG-4", "prepare: destination target key certified by its AK over the migration id and nonce"),
    ("MIG-5", "lock the vTM and take its complete state"),
    ("MIG-6", "export blob encrypted to the destination TM's target key"),
    ("MIG-7", "import inside the destination TM, header checked against the record"),
    ("MIG-8", "commit"),
    ("MIG-9", "finalize: the source destroys its copy"),
    ("MIG-10", "new vEK certificate from the destination's vTM-manager key"),
)
IDS = frozenset(i for i, _ in REQUIREMENTS)

# Hand-kept: where each requirement is met in the code (paths relative to the repository root).
CODE: dict[str, tuple[str, ...]] = {
    "HW-F1": ("src/vroot/tm/client.py", "src/vroot/host/_hosttm.py"),
    "HW-F2": ("src/vroot/host/_provision.py", "src/vroot/pki/_ek.py", "src/vroot/attestation/quote.py",
              "src/vroot/pca/_enroll.py"),
    "HW-F3": ("src/vroot/tpm2/_pcr_selection.py", "src/vroot/eventlog/_replay.py", "src/vroot/tm/client.py"),
    "VMM-F1": ("src/vroot/vtm/manager.py", "src/vroot/host/_localapi.py", "src/vroot/cli/vtm.py"),
    "VMM-F2": ("src/vroot/vtm/manager.py", "src/vroot/vtm/_record.py", "src/vroot/pki/_vek_ext.py"),
    "VMM-F3": ("src/vroot/vtm/_statekey.py", "src/vroot/tm/swtpm.py"),
    "VMM-F4": ("src/vroot/pki/_vek.py", "src/vroot/pki/_tm_sign.py", "src/vroot/vtm/manager.py",
               "src/vroot/pca/_vtm.py"),
    "VMM-F5": ("src/vroot/host/agent.py", "src/vroot/attestation/host.py", "src/vroot/attestation/merkle.py",
               "src/vroot/server/_deep.py"),
    "VMM-F6": ("src/vroot/measure/_launch.py", "src/vroot/host/_launchlog.py"),
    "VMM-S1": ("src/vroot/vtm/manager.py", "src/vroot/host/_config.py"),
    "VMM-S2": ("src/vroot/vtm/_statekey.py", "src/vroot/host/_provision.py"),
    "VMM-S3": ("src/vroot/pki/_vek.py", "src/vroot/pki/_oids.py", "src/vroot/pca/_vtm.py",
               "src/vroot/server/_guests.py"),
    "VMM-S4": ("src/vroot/migration/protocol.py", "src/vroot/migration/blob.py", "src/vroot/migration/engine.py",
               "src/vroot/server/_migration_checks.py", "src/vroot/server/_migrations.py"),
    "VMM-S5": ("src/vroot/controller/_tasks.py", "src/vroot/agent/_migrate.py"),
    "VM-F1": ("src/vroot/tm/swtpm.py", "src/vroot/vtm/manager.py"),
    "VM-F3": ("src/vroot/measure/_chain.py", "src/vroot/measure/_boot.py", "src/vroot/host/agent.py"),
    "TT-1": ("src/vroot/measure/_chain.py", "src/vroot/measure/_verify.py"),
    "TT-2": ("src/vroot/measure/_chain.py", "src/vroot/measure/_verify.py"),
    "TT-3": ("src/vroot/measure/_chain.py", "src/vroot/measure/_verify.py"),
    "IM-1": ("src/vroot/measure/_plan.py", "src/vroot/eventlog/_build.py", "src/vroot/baseline/_model.py"),
    "RA-1": ("src/vroot/pca/_enroll.py", "src/vroot/pca/_vtm.py", "src/vroot/pca/_akcert.py",
             "src/vroot/agent/_enroll.py", "src/vroot/server/_enroll.py", "src/vroot/server/_guests.py"),
    "RA-2": ("src/vroot/store/_nonces.py", "src/vroot/server/_attest.py", "src/vroot/attestation/quote.py"),
    "RA-3": ("src/vroot/agent/_guest.py", "src/vroot/server/_vmevidence.py", "src/vroot/attestation/deep.py"),
    "RA-4": ("src/vroot/attestation/deep.py", "src/vroot/attestation/merkle.py", "src/vroot/server/_batch.py",
             "src/vroot/server/_deep.py", "src/vroot/server/_joint.py"),
    "RA-5": ("src/vroot/attestation/host.py", "src/vroot/baseline/_appraise.py", "src/vroot/baseline/_findings.py",
             "src/vroot/server/_judge.py"),
    "RA-6": ("src/vroot/store/_results.py", "src/vroot/server/_scheduler.py", "src/vroot/server/_webhooks.py",
             "src/vroot/attestation/ear.py"),
    "RA-7": ("src/vroot/server/_deep.py", "src/vroot/server/_joint.py", "src/vroot/pca/_vtm.py",
             "src/vroot/store/_nonces.py"),
    "DP-1": ("src/vroot/guest/_bind.py", "src/vroot/guest/_keys.py"),
    "DP-2": ("src/vroot/guest/_seal.py", "src/vroot/guest/_blob.py"),
    "DP-3": ("src/vroot/vtm/_statekey.py", "src/vroot/vtm/manager.py"),
    "DP-4": ("src/vroot/migration/engine.py", "src/vroot/vtm/_migration.py", "src/vroot/server/_migration_checks.py"),
    "MC-F1": ("src/vroot/controller/_placement.py", "src/vroot/server/_migrations.py",
              "src/vroot/server/api/_routes_migrations.py", "src/vroot/cli/migrate.py"),
    "MC-F2": ("src/vroot/controller/_machine.py", "src/vroot/controller/_tasks.py", "src/vroot/server/_migrations.py",
              "src/vroot/agent/_migrate.py"),
    "MC-F3": ("src/vroot/controller/_machine.py", "src/vroot/server/_migrations.py", "src/vroot/store/_migrations.py",
              "src/vroot/server/api/_routes_migrations.py"),
    "MC-S1": ("src/vroot/controller/_tasks.py", "src/vroot/controller/_files.py", "src/vroot/agent/_migrate.py"),
    "MC-S2": ("src/vroot/attestation/platform.py", "src/vroot/server/api/_routes_platform.py",
              "src/vroot/cli/attest_server.py", "src/vroot/host/agent.py"),
    "MC-S3": ("src/vroot/controller/_placement.py", "src/vroot/server/_settings.py"),
    "MC-S4": ("src/vroot/controller/_placement.py", "src/vroot/server/_migrations.py",
              "src/vroot/server/_migration_checks.py", "src/vroot/server/api/_routes_library.py"),
    "MIG-1": ("src/vroot/controller/_machine.py",),
    "MIG-2": (),
    "MIG-3": (),
    "MIG-4": ("src/vroot/migration/engine.py", "src/vroot/migration/protocol.py", "src/vroot/controller/_machine.py",
              "src/vroot/server/_migration_checks.py"),
    "MIG-5": ("src/vroot/migration/engine.py", "src/vroot/vtm/_migration.py"),
    "MIG-6": ("src/vroot/migration/blob.py", "src/vroot/migration/engine.py", "src/vroot/server/_migration_checks.py"),
    "MIG-7": ("src/vroot/migration/engine.py", "src/vroot/vtm/_migration.py", "src/vroot/server/_migration_checks.py"),
    "MIG-8": ("src/vroot/controller/_machine.py", "src/vroot/server/_migrations.py", "src/vroot/store/_migrations.py",
              "src/vroot/migration/engine.py", "src/vroot/migration/_journal.py"),
    "MIG-9": ("src/vroot/controller/_machine.py", "src/vroot/migration/engine.py", "src/vroot/vtm/_migration.py",
              "src/vroot/migration/_journal.py"),
    "MIG-10": ("src/vroot/vtm/_migration.py", "src/vroot/vtm/manager.py", "src/vroot/server/_migration_checks.py",
               "src/vroot/store/_migrations.py"),
}

_TEXT_ID = re.compile(
    r"\b(HW-F|VMM-F|VMM-S|VM-F|MC-F|MC-S|MIG-|TT-|IM-|RA-|DP-)(\d+)(?:\.\.(?:(?:HW-F|VMM-F|VMM-S|VM-F|MC-F|MC-S|MIG-|TT-|IM-|RA-|DP-))?(\d+))?\b"
)
_NAME_ONE = re.compile(r"^(ra|dp|tt|im|mig)(\d+)$")
_NAME_TWO = re.compile(r"^(hw|vmm|vm|mc)$")
_NAME_FS = re.compile(r"^([fs])(\d+)$")
_NAME_JOINED = re.compile(r"^(hw|vmm|vm|mc)([fs])(\d+)$")


def ids_in_text(text: str) -> set[str]:
    """Requirement IDs named in free text (ranges expanded); only IDs of REQUIREMENTS."""
    found = set()
    for prefix, first, last in _TEXT_ID.findall(text):
        for n in range(int(first), int(last or first) + 1):
            found.add(f"{prefix}{n}")
    return found & IDS


def ids_in_name(name: str) -> set[str]:
    """Requirement IDs in a test function's name: `test_ra1_ra7_x` -> {RA-1, RA-7}."""
    tokens = name.lower().split("_")
    found = set()
    for i, tok in enumerate(tokens):
        if m := _NAME_ONE.match(tok):
            found.add(f"{m[1].upper()}-{int(m[2])}")
        elif (m := _NAME_JOINED.match(tok)) is not None:
            found.add(f"{m[1].upper()}-{m[2].upper()}{int(m[3])}")
        elif _NAME_TWO.match(tok) and i + 1 < len(tokens) and (m := _NAME_FS.match(tokens[i + 1])):
            found.add(f"{tok.upper()}-{m[1].upper()}{int(m[2])}")
    return found & IDS


def _tests_of(tree: ast.Module):
    """(name, docstring) of every test function, at module level or in a Test* class."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            yield node.name, ast.get_docstring(node) or ""
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef) and sub.name.startswith("test"):
                    yield f"{node.name}.{sub.name}", ast.get_docstring(sub) or ""


def scan(root: Path) -> dict[str, dict[str, list[str]]]:
    """requirement -> test file (relative) -> test names; an empty list: the module's docstring only."""
    table: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for path in sorted((root / "tests").rglob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for req in ids_in_text(ast.get_docstring(tree) or ""):
            table[req].setdefault(rel, [])
        for name, doc in _tests_of(tree):
            for req in ids_in_name(name) | ids_in_text(doc):
                names = table[req].setdefault(rel, [])
                if name not in names:
                    names.append(name)
    return table


def _tests_cell(files: dict[str, list[str]]) -> str:
    parts = []
    for rel in sorted(files):
        names = files[rel]
        if names:
            parts.append(f"`{rel}`: " + ", ".join(f"`{n}`" for n in names))
        else:
            parts.append(f"`{rel}` (module)")
    return "<br>".join(parts) if parts else "**not yet tested**"


def render(root: Path) -> str:
    """The generated block, markers included."""
    found = scan(root)
    lines = [
        START,
        "<!-- generated by scripts/reqmap.py; edit the script's CODE mapping, not this table -->",
        "",
        "| ID | requirement | code | tests |",
        "|---|---|---|---|",
    ]
    for req, text in REQUIREMENTS:
        code = "<br>".join(f"`{p}`" for p in CODE.get(req, ())) or "not built yet"
        lines.append(f"| {req} | {text} | {code} | {_tests_cell(found.get(req, {}))} |")
    untested = [req for req, _ in REQUIREMENTS if not found.get(req)]
    lines += ["", f"Not yet tested ({len(untested)}): {', '.join(untested) if untested else 'none'}.", END]
    return "\n".join(lines)


def missing_code_paths(root: Path) -> list[str]:
    """Paths named in CODE that do not exist under `root`."""
    return sorted({p for paths in CODE.values() for p in paths if not (root / p).exists()})


def updated(text: str, block: str) -> str:
    """`text` with its marked block replaced by `block`; ValueError without both markers."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOC}: the markers {START} and {END} are missing")
    return text[:start] + block + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the document is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    missing = missing_code_paths(args.root)
    if missing:
        print(f"reqmap: CODE names paths that do not exist: {', '.join(missing)}", file=sys.stderr)
        return 1
    unknown = set(CODE) ^ IDS
    if unknown:
        print(f"reqmap: CODE and REQUIREMENTS differ on {', '.join(sorted(unknown))}", file=sys.stderr)
        return 1
    doc = args.root / DOC
    text = doc.read_text(encoding="utf-8")
    new = updated(text, render(args.root))
    if args.check:
        if new != text:
            print(f"reqmap: {DOC} is out of date: run scripts/reqmap.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        doc.write_text(new, encoding="utf-8")
        print(f"reqmap: {DOC} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
