"""The [migration] table of server.toml (MC-S3, MC-S4): the controller's policy read, checked, and
refused with the option named when wrong; without the table the defaults apply."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from vroot.errors import InvalidInput
from vroot.server._settings import load_settings

SERVER = """[server]
database = "sqlite:///x.db"
operator_token_sha256 = "{digest}"
""".format(digest="ab" * 32)


def _write(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "server.toml").write_text(SERVER + extra)
    return tmp_path


def test_mc_s3_the_migration_policy_is_read(tmp_path):
    settings = load_settings(_write(tmp_path, """
[migration]
max_verdict_age_seconds = 30
same_zone = true
require_labels = {tier = "prod"}
retired_baselines = ["hosts@1", "old-firmware"]
timeout_seconds = 20
task_ttl_seconds = 40
tick_seconds = 0.5
"""), environ={})
    m = settings.migration
    assert m.rules.max_verdict_age == timedelta(seconds=30) and m.rules.same_zone
    assert dict(m.rules.require_labels) == {"tier": "prod"}
    assert m.rules.retired_baselines == frozenset({("hosts", 1), ("old-firmware", None)})
    assert (m.timeout, m.task_ttl, m.tick_seconds) == (timedelta(seconds=20), timedelta(seconds=40), 0.5)


def test_mc_s3_defaults_without_the_table(tmp_path):
    m = load_settings(_write(tmp_path), environ={}).migration
    assert m.rules.max_verdict_age == timedelta(seconds=120) and not m.rules.same_zone
    assert m.timeout == timedelta(seconds=60) and m.rules.retired_baselines == frozenset()


@pytest.mark.parametrize(("table", "words"), [
    ("[migration]\nmax_verdict_age_seconds = 0\n", "migration.max_verdict_age_seconds"),
    ("[migration]\nsame_zone = \"sometimes\"\n", "migration.same_zone"),
    ("[migration]\nretired_baselines = [\"x@y\"]\n", "NAME or NAME@VERSION"),
    ("[migration]\nspeed = 11\n", "migration.speed"),
    ("[migrations]\n", "optionally [migration]"),
])  # fmt: skip
def test_mc_s3_a_wrong_option_is_named(tmp_path, table, words):
    with pytest.raises(InvalidInput, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_settings(_write(tmp_path, table), environ={})
