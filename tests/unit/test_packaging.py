"""Packaging (issue 6, point 4): a wheel built from this tree carries every module, the Alembic
migrations, the lean `vroot` launcher and the systemd-free data it needs, and runs from an install
of that wheel alone (with the dependencies already present, as on a machine that has them);
`vroot --version`; shell completion for bash, zsh and fish that answers with real commands."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vroot import __version__

ROOT = Path(__file__).resolve().parent.parent.parent
VROOT = str(Path(sys.executable).parent / "vroot")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("vroot-*.whl")
    return built


def test_the_wheel_carries_the_code_the_migrations_and_the_launcher(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "vroot").rglob("*.py")}
    assert source <= names, sorted(source - names)[:5]
    assert "vroot/store/migrations/script.py.mako" in names
    assert any(n.endswith("versions/0002_migrations.py") for n in names)
    assert any(n.endswith(".data/scripts/vroot") for n in names)


def test_an_install_of_the_wheel_runs(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    code = ("import sys, vroot, vroot.store; assert vroot.__file__.startswith(sys.argv[1]), vroot.__file__; "
            "from vroot.store import head_revision; print(vroot.__version__, head_revision())")  # fmt: skip
    ran = subprocess.run([sys.executable, "-c", code, str(target)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [__version__, "0002"]
    launcher = target / "bin" / "vroot"
    assert launcher.is_file()
    version = subprocess.run([sys.executable, str(launcher), "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert version.stdout == f"vroot {__version__}\n"


@pytest.mark.parametrize(("shell", "words"), [
    ("bash", {"COMP_WORDS": "vroot host dr", "COMP_CWORD": "2"}),
    ("zsh", {"_TYPER_COMPLETE_ARGS": "vroot host dr"}),
])  # fmt: skip
def test_shell_completion_answers_with_real_commands(shell, words):
    script = subprocess.run([VROOT, "completion", shell], capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_VROOT_COMPLETE" in script.stdout
    env = {**os.environ, "_VROOT_COMPLETE": f"complete_{shell}", **words}
    got = subprocess.run([VROOT], env=env, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and "drain" in got.stdout and "migrate" not in got.stdout, got


def test_completion_for_an_unknown_shell_is_a_usage_error():
    got = subprocess.run([VROOT, "completion", "tcsh"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 2 and got.stderr.strip() == "vroot: error: no completion for shell 'tcsh': use bash, zsh or fish"
