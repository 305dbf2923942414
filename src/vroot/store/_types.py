"""Column types and value conversions shared by the models and the repositories.

Timestamps are timezone-aware UTC in Python. PostgreSQL stores them as `timestamptz`; SQLite has no
time zone, so they are stored as naive UTC text (always with microseconds, so text order is time
order) and made aware again on the way out. Naive datetimes are refused at the repository edge
(`aware()`), because a naive value compared with a stored one would silently mean local time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from vroot.errors import InvalidInput

# Surrogate keys: BIGINT on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the rowid alias that
# autoincrements, so the variant keeps it INTEGER there (still 64-bit).
Id = BigInteger().with_variant(Integer(), "sqlite")

# Constraint names are part of the schema (Alembic compares and drops them by name).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = aware(value, "timestamp")
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def aware(value: datetime, name: str) -> datetime:
    """`value` in UTC; raises InvalidInput for a naive datetime (whose zone nobody knows)."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def serial_text(serial: int) -> str:
    """An X.509 serial number as stored: lowercase hex without leading zeros (serials exceed 64 bits)."""
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise InvalidInput(f"certificate serial must be a non-negative int, got {serial!r}")
    return format(serial, "x")


def serial_int(text: str) -> int:
    return int(text, 16)


def pcrs_to_json(pcrs: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[str, str]]:
    """{bank: {index: digest}} as JSON: index keys as decimal strings, digests as hex."""
    out: dict[str, dict[str, str]] = {}
    for bank, values in pcrs.items():
        row: dict[str, str] = {}
        for index, digest in values.items():
            if not isinstance(index, int) or not 0 <= index < 64 or not isinstance(digest, bytes | bytearray):
                raise InvalidInput(f"PCR values must map int index to bytes, got {index!r} in bank {bank}")
            row[str(index)] = bytes(digest).hex()
        out[str(bank)] = row
    return out


def pcrs_from_json(data: Any) -> dict[str, dict[int, bytes]]:
    return {
        bank: {int(i): bytes.fromhex(d) for i, d in values.items()} for bank, values in (data or {}).items()
    }


def banks_to_json(values: Mapping[str, bytes]) -> dict[str, str]:
    """{bank: digest} as JSON with hex digests."""
    out: dict[str, str] = {}
    for bank, digest in values.items():
        if not isinstance(digest, bytes | bytearray):
            raise InvalidInput(f"digest for bank {bank} must be bytes, got {type(digest).__name__}")
        out[str(bank)] = bytes(digest).hex()
    return out


def banks_from_json(data: Any) -> dict[str, bytes]:
    return {bank: bytes.fromhex(d) for bank, d in (data or {}).items()}


def check_limit(limit: int) -> int:
    """A page size: 1..10000."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidInput(f"limit must be 1..10000, got {limit!r}")
    return limit
