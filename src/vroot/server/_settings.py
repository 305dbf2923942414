"""The server's settings: one frozen `Settings`, built once at start-up from `DIR/server.toml`.

    [server]
    listen = "127.0.0.1:8443"                 # host:port or [v6]:port
    database = "sqlite:////srv/vroot/vroot.db" # or postgresql://...
    manufacturer_cas = ["trust/manufacturer-0.pem"]   # relative to DIR, or absolute
    nonce_ttl_seconds = 120
    enrollment_ttl_seconds = 300
    attestation_interval_seconds = 60        # continuous attestation: each active host this often
    task_lease_seconds = 120
    max_wait_seconds = 60
    poll_interval_seconds = 1.0
    max_body_bytes = 16777216
    scheduler_interval_seconds = 5.0          # continuous attestation's check; 0 turns it off
    event_keepalive_seconds = 15.0            # comment lines on idle event streams
    webhook_timeout_seconds = 10.0
    deep_batch_seconds = 1.0                  # how long a VM's evidence waits for others of its host
    platform_host = "/var/lib/vroot/host"     # optional: the host directory of this server's own
                                              # platform (its agent running); its evidence is then
                                              # published for `vroot attest server` (MC-S2)
    operator_token_sha256 = "<64 hex digits>"  # the hash only; the token itself is never stored

    [migration]                               # optional: the migration controller's policy (MC-S3, MC-S4)
    max_verdict_age_seconds = 120             # a destination's trusted verdict must be this fresh
    same_zone = false                         # true: never move a vTM across zones
    require_labels = {tier = "prod"}          # a destination must carry these labels
    retired_baselines = ["hosts@1", "old-fw"] # hosts appraised under these are evacuated, never chosen
    timeout_seconds = 60                      # a migration not committed by then is aborted
    task_ttl_seconds = 120                    # lifetime of each signed task
    tick_seconds = 1.0                        # the controller's check of deadlines and lost tasks

Every [server] option can be overridden by the environment as `VROOT_SERVER_<OPTION>` (upper case, e.g.
`VROOT_SERVER_DATABASE`; lists separated by commas). The file is read with pydantic
(`extra="forbid"`: an unknown or misspelt option is an error, not silently ignored).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vroot.controller import MigrationRules
from vroot.errors import InvalidInput, NotFound

__all__ = [
    "CONFIG_NAME",
    "ENV_PREFIX",
    "MigrationSettings",
    "Settings",
    "load_settings",
    "parse_listen",
    "render_settings",
]

CONFIG_NAME = "server.toml"
ENV_PREFIX = "VROOT_SERVER_"
DEFAULT_LISTEN = "127.0.0.1:8443"
MAX_BODY_BYTES = 16 * 1024 * 1024


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` as (host, port); InvalidInput otherwise."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise InvalidInput(f"listen address {listen!r}: use HOST:PORT (IPv6 as [ADDR]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInput(f"listen address {listen!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise InvalidInput(f"listen address {listen!r}: put an IPv6 address in brackets")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise InvalidInput(f"listen address {listen!r}: port out of range")
    return host, port


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationSettings:
    """The [migration] table: the controller's policy and clocks."""

    rules: MigrationRules = field(default_factory=MigrationRules)
    timeout: timedelta = timedelta(seconds=60)
    task_ttl: timedelta = timedelta(seconds=120)
    tick_seconds: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the server reads from its configuration, checked once. Holds no secret."""

    directory: Path
    listen_host: str
    listen_port: int
    database_url: str = field(repr=False)  # may hold a password
    manufacturer_cas: tuple[Path, ...] = ()
    nonce_ttl: timedelta = timedelta(seconds=120)
    enrollment_ttl: timedelta = timedelta(seconds=300)
    attestation_interval: timedelta = timedelta(seconds=60)
    task_lease: timedelta = timedelta(seconds=120)
    max_wait_seconds: float = 60.0
    poll_interval_seconds: float = 1.0
    max_body_bytes: int = MAX_BODY_BYTES
    scheduler_interval_seconds: float = 5.0
    event_keepalive_seconds: float = 15.0
    webhook_timeout_seconds: float = 10.0
    deep_batch_seconds: float = 1.0
    operator_token_sha256: bytes = field(repr=False, default=b"")
    platform_host: Path | None = None
    migration: MigrationSettings = field(default_factory=lambda: MigrationSettings())

    def __post_init__(self) -> None:
        if len(self.operator_token_sha256) != 32:
            raise InvalidInput("operator_token_sha256 must be a SHA-256 digest (32 bytes)")

    @property
    def keys_dir(self) -> Path:
        """The PCA, operations CA and result-signing key (`vroot.pca.init_pca`)."""
        return self.directory / "keys"

    @property
    def tls_certificate(self) -> Path:
        return self.directory / "tls" / "server-cert.pem"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls" / "server-key.pem"

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


class _ServerFile(BaseModel):
    """The [server] table of server.toml (and its environment overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = DEFAULT_LISTEN
    database: str = Field(min_length=1)
    manufacturer_cas: list[str] = []
    nonce_ttl_seconds: int = Field(120, gt=0, le=86_400)
    enrollment_ttl_seconds: int = Field(300, gt=0, le=86_400)
    attestation_interval_seconds: int = Field(60, gt=0, le=86_400 * 7)
    task_lease_seconds: int = Field(120, gt=0, le=86_400)
    max_wait_seconds: float = Field(60.0, ge=0, le=600)
    poll_interval_seconds: float = Field(1.0, gt=0, le=60)
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=1 << 30)
    scheduler_interval_seconds: float = Field(5.0, ge=0, le=3600)
    event_keepalive_seconds: float = Field(15.0, gt=0, le=300)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    deep_batch_seconds: float = Field(1.0, ge=0, le=60)
    operator_token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    platform_host: str | None = Field(None, min_length=1, max_length=4096)

    def to_domain(self, directory: Path) -> Settings:
        host, port = parse_listen(self.listen)
        return Settings(
            directory=directory,
            listen_host=host,
            listen_port=port,
            database_url=self.database,
            manufacturer_cas=tuple(
                p if p.is_absolute() else directory / p for p in (Path(c) for c in self.manufacturer_cas)
            ),
            nonce_ttl=timedelta(seconds=self.nonce_ttl_seconds),
            enrollment_ttl=timedelta(seconds=self.enrollment_ttl_seconds),
            attestation_interval=timedelta(seconds=self.attestation_interval_seconds),
            task_lease=timedelta(seconds=self.task_lease_seconds),
            max_wait_seconds=self.max_wait_seconds,
            poll_interval_seconds=self.poll_interval_seconds,
            max_body_bytes=self.max_body_bytes,
            scheduler_interval_seconds=self.scheduler_interval_seconds,
            event_keepalive_seconds=self.event_keepalive_seconds,
            webhook_timeout_seconds=self.webhook_timeout_seconds,
            deep_batch_seconds=self.deep_batch_seconds,
            operator_token_sha256=bytes.fromhex(self.operator_token_sha256),
            platform_host=None if self.platform_host is None else directory / self.platform_host,
        )


class _MigrationFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_verdict_age_seconds: int = Field(120, gt=0, le=86_400)
    same_zone: bool = False
    require_labels: dict[str, str] = {}
    retired_baselines: list[str] = []
    timeout_seconds: int = Field(60, gt=0, le=3600)
    task_ttl_seconds: int = Field(120, gt=0, le=3600)
    tick_seconds: float = Field(1.0, gt=0, le=60)

    def to_domain(self) -> MigrationSettings:
        retired = set()
        for item in self.retired_baselines:
            name, sep, version = item.rpartition("@")
            if not sep:
                retired.add((item, None))
            elif name and version.isdigit():
                retired.add((name, int(version)))
            else:
                raise InvalidInput(f"retired_baselines: {item!r} is not NAME or NAME@VERSION")
        rules = MigrationRules(max_verdict_age=timedelta(seconds=self.max_verdict_age_seconds), same_zone=self.same_zone,
                               require_labels=dict(self.require_labels), retired_baselines=frozenset(retired))  # fmt: skip
        return MigrationSettings(rules=rules, timeout=timedelta(seconds=self.timeout_seconds),
                                 task_ttl=timedelta(seconds=self.task_ttl_seconds), tick_seconds=self.tick_seconds)  # fmt: skip


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in _ServerFile.model_fields.items():
        value = environ.get(ENV_PREFIX + name.upper())
        if value is None:
            continue
        if info.annotation == list[str]:
            out[name] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out[name] = value
    return out


def load_settings(directory: str | Path, *, environ: Mapping[str, str]) -> Settings:
    """Read `DIR/server.toml`, apply `VROOT_SERVER_*` overrides from `environ`, check everything.

    NotFound if DIR is not a server directory; InvalidInput naming the option that is wrong.
    """
    d = Path(directory).absolute()
    path = d / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"{d} is not a vroot server directory (no {CONFIG_NAME}; run `vroot server init`)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    table = raw.get("server")
    if not isinstance(table, dict) or not {"server"} <= set(raw) <= {"server", "migration"}:
        raise InvalidInput(f"{path}: want one [server] table (and optionally [migration])")
    merged = {**table, **_env_overrides(environ)}
    try:
        settings = _ServerFile.model_validate(merged).to_domain(d)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'server'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{path}: {problems}") from None
    if "migration" not in raw:
        return settings
    if not isinstance(raw["migration"], dict):
        raise InvalidInput(f"{path}: [migration] must be a table")
    try:
        migration = _MigrationFile.model_validate(raw["migration"]).to_domain()
    except ValidationError as exc:
        problems = "; ".join(f"migration.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{path}: {problems}") from None
    return dataclasses.replace(settings, migration=migration)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def render_settings(**options: object) -> str:
    """server.toml text for `options` (names of the [server] table), checked like a loaded file."""
    try:
        checked = _ServerFile.model_validate(options)
    except ValidationError as exc:
        raise InvalidInput(f"server settings: {exc.errors()[0]['msg']}") from None
    lines = ["# vroot server configuration (written by `vroot server init`)", "[server]"]
    lines += [f"{name} = {_toml(value)}" for name, value in checked.model_dump().items() if value is not None]
    return "\n".join(lines) + "\n"
