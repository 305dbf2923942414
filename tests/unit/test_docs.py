"""The generated parts of docs/ match their sources, and the systemd units are valid.

- docs/security-model.md's requirement table is what scripts/reqmap.py makes from tests/ and its
  code mapping, and every module path in that mapping exists;
- docs/api.md is what scripts/apidoc.py makes from docs/openapi.json (the checked-in schema);
- packaging/systemd/*.service pass `systemd-analyze verify` (with ExecStart pointed at this
  checkout's `vroot`), and the `vroot` subcommands they run exist.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging" / "systemd"
INSTALLED_VROOT = "/opt/vroot/bin/vroot"


def _script(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_security_model_requirement_table_is_current():
    out = _run("scripts/reqmap.py", "--check")
    assert out.returncode == 0, out.stderr


def test_reqmap_code_paths_exist_and_cover_every_requirement():
    reqmap = _script("reqmap")
    assert reqmap.missing_code_paths(ROOT) == []
    assert set(reqmap.CODE) == reqmap.IDS
    assert len(reqmap.IDS) == 48  # DESIGN.md section 9: HW-F1..3 ... MIG-1..10


def test_reqmap_reads_ids_from_names_docstrings_and_ranges():
    reqmap = _script("reqmap")
    assert reqmap.ids_in_name("test_ra1_ra7_guest_x") == {"RA-1", "RA-7"}
    assert reqmap.ids_in_name("test_vmm_f4_manager") == {"VMM-F4"}
    assert reqmap.ids_in_name("test_mc_s1_vmm_s5_bad") == {"MC-S1", "VMM-S5"}
    assert reqmap.ids_in_name("test_mig10_x") == {"MIG-10"}
    assert reqmap.ids_in_name("test_ra9_not_a_requirement") == set()
    assert reqmap.ids_in_text("checks MIG-5..MIG-7 and TT-1..3, DP-4") == {
        "MIG-5", "MIG-6", "MIG-7", "TT-1", "TT-2", "TT-3", "DP-4"
    }  # fmt: skip


def test_reqmap_check_fails_on_a_stale_table(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('def test_ra2_nonce():\n    """RA-5 too."""\n')
    for p in {p for paths in _script("reqmap").CODE.values() for p in paths}:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).touch()
    doc = tmp_path / "docs" / "security-model.md"
    doc.write_text("# x\n<!-- reqmap:start -->\n<!-- reqmap:end -->\n")
    assert _run("scripts/reqmap.py", "--check", "--root", str(tmp_path)).returncode == 1
    assert _run("scripts/reqmap.py", "--root", str(tmp_path)).returncode == 0
    text = doc.read_text()
    assert "| RA-2 | nonce challenge |" in text and "`tests/test_x.py`: `test_ra2_nonce`" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "test_ra2_nonce" in rows["| RA-5"] and "not yet tested" in rows["| RA-1"]
    assert "RA-1, " in text.split("Not yet tested")[1] and "RA-2," not in text.split("Not yet tested")[1]
    assert _run("scripts/reqmap.py", "--check", "--root", str(tmp_path)).returncode == 0


def test_api_doc_matches_the_checked_in_openapi_schema():
    out = _run("scripts/apidoc.py", "--check")
    assert out.returncode == 0, out.stderr


def test_api_doc_names_every_operation_and_who_may_call_it():
    import json

    apidoc = _script("apidoc")
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    text = apidoc.render(spec)
    for path, ops in spec["paths"].items():
        for method in ops:
            assert f"| {method.upper()} | `{path}` |" in text
    assert "| GET | `/v1/agents/{agent_id}/tasks` | agent certificate |" in text
    assert "| PUT | `/v1/policies/{group}` | operator token |" in text
    assert "| GET | `/v1/health` | public |" in text


def _unit_files() -> list[Path]:
    files = sorted(UNITS.glob("*.service"))
    assert [f.name for f in files] == ["vroot-host@.service", "vroot-server.service"]
    return files


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install the Debian package systemd to check the unit files")
    vroot = ROOT / ".venv" / "bin" / "vroot"
    assert vroot.is_file(), "run `make setup` first: .venv/bin/vroot is missing"
    names = []
    for unit in _unit_files():
        text = unit.read_text()
        assert f"ExecStart={INSTALLED_VROOT} " in text
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_VROOT, str(vroot)))
        names.append(unit.name)
    (tmp_path / "vroot-host@host-a.service").write_text((tmp_path / "vroot-host@.service").read_text())
    names.append("vroot-host@host-a.service")
    out = subprocess.run([analyze, "verify", *(f"./{n}" for n in names)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", out.stderr + out.stdout


def test_systemd_units_run_vroot_commands_that_exist():
    for unit in _unit_files():
        exec_start = re.search(r"^ExecStart=(\S+) (\S+) (\S+) (\S+)", unit.read_text(), re.M)
        assert exec_start is not None and exec_start[1] == INSTALLED_VROOT
        group, command = exec_start[2], exec_start[3]
        out = subprocess.run([str(ROOT / ".venv" / "bin" / "vroot"), group, command, "--help"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, f"{unit.name}: vroot {group} {command}: {out.stderr}"
        assert exec_start[4].startswith("/var/lib/vroot/")
