"""`vroot eventlog show|replay` (issue 2, point 8): output shapes, --ima, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vroot.cli.eventlog import fast_replay
from vroot.cli.main import run
from vroot.eventlog import (
    EventType,
    TcgLogBuilder,
    UnverifiedImaLog,
    encode_ima_ascii,
    encode_ima_binary,
    encode_tcg_log,
    ima_ng_entry,
    separator,
)
from vroot.tpm2 import HashAlg

# As tests/conftest.py (a bare `conftest` import would be ambiguous: tests/tpm has one too).
CORPORA = Path(
    os.environ.get("VROOT_CORPORA", Path(__file__).resolve().parents[2].parent / "shared" / "corpora")
)

VROOT = Path(sys.executable).with_name("vroot")


@pytest.fixture
def tcg_file(tmp_path):
    builder = TcgLogBuilder()
    builder.add(4, EventType.EV_EFI_ACTION, b"Calling EFI Application from Boot Option")
    builder.add(7, EventType.EV_SEPARATOR, separator())
    path = tmp_path / "bios.bin"
    path.write_bytes(encode_tcg_log(builder.build()))
    return path


@pytest.fixture
def ima_entries():
    return (
        ima_ng_entry("boot_aggregate", b"\x01" * 32, alg=HashAlg.SHA256),
        ima_ng_entry("/usr/bin/vroot", b"\x02" * 32, alg=HashAlg.SHA256),
    )


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_replay_json_shape(tcg_file, capsys):
    assert run(["eventlog", "replay", str(tcg_file), "--json"]) == 0
    doc = _json(capsys)
    assert set(doc) == {"pcrs", "events"} and doc["events"] == 3
    assert list(doc["pcrs"]) == ["sha1", "sha256"]
    assert list(doc["pcrs"]["sha256"]) == [str(i) for i in range(24)]
    assert doc["pcrs"]["sha256"]["17"] == "f" * 64 and doc["pcrs"]["sha1"]["0"] == "0" * 40
    assert doc["pcrs"]["sha256"]["4"] == doc["pcrs"]["sha256"]["4"].lower() != "0" * 64


@pytest.mark.corpora
def test_replay_json_values_on_a_corpus_log(capsys):
    log = CORPORA / "go-tpm-tools/glinux-alex.bin"
    assert run(["eventlog", "replay", str(log), "--json"]) == 0
    doc = _json(capsys)
    expected = json.loads((CORPORA / "go-tpm-tools/glinux-alex.bin.expected.json").read_text())["pcrs"]
    for bank, values in expected.items():
        for index, value in values.items():
            assert doc["pcrs"][bank][index] == value
    assert doc["events"] == 29


def test_replay_ima_ascii_and_binary(tmp_path, ima_entries, capsys):
    log = UnverifiedImaLog(entries=ima_entries, format="ascii")
    docs = []
    for name, data in (("ascii", encode_ima_ascii(log)), ("binary", encode_ima_binary(log))):
        path = tmp_path / name
        path.write_bytes(data)
        assert run(["eventlog", "replay", str(path), "--ima", "--json"]) == 0
        docs.append(_json(capsys))
    assert docs[0] == docs[1]
    assert docs[0]["events"] == 2 and set(docs[0]["pcrs"]) == {"sha1", "sha256"}
    assert list(docs[0]["pcrs"]["sha1"]) == ["10"]


def test_replay_table_and_show(tcg_file, tmp_path, ima_entries, capsys):
    assert run(["eventlog", "replay", str(tcg_file)]) == 0
    assert "sha256" in capsys.readouterr().out
    assert run(["eventlog", "show", str(tcg_file)]) == 0
    out = capsys.readouterr().out
    assert "EV_EFI_ACTION" in out and "Calling EFI Application" in out
    path = tmp_path / "ima"
    path.write_bytes(encode_ima_ascii(UnverifiedImaLog(entries=ima_entries, format="ascii")))
    assert run(["eventlog", "show", str(path), "--ima"]) == 0
    assert "/usr/bin/vroot" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["replay", "show"])
def test_malformed_file_exits_2_with_one_line_naming_the_offset(tmp_path, command, capsys):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"\x00" * 32 + b"\xff\xff")
    assert (
        run(
            ["eventlog", command, str(path), "--json"]
            if command == "replay"
            else ["eventlog", command, str(path)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vroot: error: ")
    assert str(path) in err and "offset 32" in err


def test_malformed_ima_file_names_the_line(tmp_path, capsys):
    path = tmp_path / "ima.txt"
    path.write_bytes(b"10 " + b"00" * 20 + b" ima-ng sha1:" + b"00" * 20 + b" /a\n10 nothex ima-ng x y\n")
    assert run(["eventlog", "replay", str(path), "--ima", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2" in err and "offset" in err


def test_missing_file_exits_2(tmp_path, capsys):
    assert run(["eventlog", "replay", str(tmp_path / "nope"), "--json"]) == 2
    err = capsys.readouterr().err
    assert err == f"vroot: error: {tmp_path / 'nope'}: no such file\n"


def test_console_script_end_to_end(tcg_file, tmp_path):
    done = subprocess.run(
        [str(VROOT), "eventlog", "replay", str(tcg_file), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0 and json.loads(done.stdout)["events"] == 3
    bad = tmp_path / "bad"
    bad.write_bytes(b"garbage garbage garbage garbage garbage")
    done = subprocess.run(
        [str(VROOT), "eventlog", "replay", str(bad), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "offset 0" in done.stderr


def test_fast_replay_prints_what_the_full_cli_prints(tcg_file, capsys):
    assert run(["eventlog", "replay", str(tcg_file), "--json"]) == 0
    full = capsys.readouterr().out
    assert fast_replay([str(tcg_file), "--json"]) == 0
    assert capsys.readouterr().out == full
    assert json.loads(full) == json.loads(json.dumps(json.loads(full)))


def test_fast_replay_declines_what_it_does_not_serve(tcg_file, tmp_path):
    assert fast_replay([str(tcg_file)]) is None  # no --json: the table needs Rich
    assert fast_replay([str(tcg_file), "--json", "--verbose"]) is None
    assert fast_replay([str(tmp_path / "missing"), "--json"]) is None  # errors: the full CLI reports them


def test_cli_module_imports_nothing_heavy():
    code = (
        "import sys, vroot.cli.eventlog as m; "
        "print(sorted(n for n in ('typer', 'rich', 'vroot.eventlog', 'json', 'typing') if n in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_replay_path_imports_no_typer_rich_or_json(tcg_file):
    code = (
        "import sys; from vroot.cli.eventlog import fast_replay; "
        f"assert fast_replay([{str(tcg_file)!r}, '--json']) == 0; "
        "print(sorted(n for n in ('typer', 'rich', 'json', 'vroot.eventlog._describe') if n in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
