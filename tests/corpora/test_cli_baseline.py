"""`vroot baseline` on real machines' logs: learn, show, appraise (RA-5, offline)."""

from __future__ import annotations

import json

import pytest

from vroot.cli.main import run

pytestmark = pytest.mark.corpora

POLICY = b"kind: vroot.policy\ngroup: laptops\nevent_pcrs: [0, 1, 2, 3, 4, 5, 7]\n"


def test_learn_show_and_appraise(corpora, tmp_path, capsys):
    known_good = corpora / "go-tpm-tools" / "glinux-alex.bin"
    other = corpora / "go-tpm-tools" / "arch-linux-workstation.bin"
    manifest, policy = tmp_path / "laptops.yaml", tmp_path / "policy.yaml"
    policy.write_bytes(POLICY)
    assert run(["baseline", "learn", "--tcg", str(known_good), "--name", "laptops", "--version", "1",
                "--out", str(manifest)]) == 0  # fmt: skip
    assert run(["baseline", "show", str(manifest)]) == 0
    assert "baseline laptops v1" in capsys.readouterr().out
    assert run(["baseline", "appraise", "--baseline", str(manifest), "--policy", str(policy),
                "--tcg", str(known_good), "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["verdict"] == "trusted"
    assert run(["baseline", "appraise", "--baseline", str(manifest), "--policy", str(policy),
                "--tcg", str(other)]) == 1  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("untrusted") and "baseline.event.unknown PCR 0" in out


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_bytes(b"name: [unclosed")
    assert run(["baseline", "show", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert run(["baseline", "show", str(tmp_path / "missing.yaml")]) == 2
