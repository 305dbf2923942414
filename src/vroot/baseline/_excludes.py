"""IMA path excludes: regular expressions, validated and bounded before anything matches them.

A pattern must match a whole path (`re.fullmatch`): `/tmp/.*` excludes everything under /tmp,
`/tmp` excludes only /tmp itself. Patterns are checked when a baseline or policy is built:

- at most `MAX_EXCLUDES` patterns of at most `MAX_PATTERN` characters, no NUL or newline;
- they compile with Python's `re`, without a warning of set syntax whose meaning will change (`[[`);
- no backreferences, no repeated group that holds a repetition or an alternation (`(a+)+`,
  `(a|aa)*`), and at most `MAX_UNBOUNDED` (2) repetitions `*`, `+`, `{m,n}` per pattern: those
  are the shapes of catastrophic backtracking, and IMA paths are text the attester chooses.

Backtracking is still polynomial in the path length, so a path longer than `MAX_EXCLUDED_PATH`
(1,024 characters) is never excluded: it is appraised like any other (fail closed).

All patterns of a policy are compiled once into one alternation (`compile_excludes`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

from vroot.errors import InvalidInput

__all__ = ["MAX_EXCLUDED_PATH", "MAX_EXCLUDES", "MAX_PATTERN", "compile_excludes", "validate_excludes"]

MAX_EXCLUDES = 256
MAX_PATTERN = 512
MAX_UNBOUNDED = 2
MAX_EXCLUDED_PATH = 1024
_QUANTIFIERS = ("*", "+", "{")


def validate_excludes(patterns: Iterable[str], *, what: str = "excludes") -> tuple[str, ...]:
    """The patterns as a tuple, or `InvalidInput` naming the first one that is refused."""
    if isinstance(patterns, str | bytes):
        raise InvalidInput(f"{what} must be a list of regular expressions, not one string")
    out: list[str] = []
    for pattern in patterns:
        if len(out) >= MAX_EXCLUDES:
            raise InvalidInput(f"{what}: more than {MAX_EXCLUDES} patterns")
        if not isinstance(pattern, str) or not pattern:
            raise InvalidInput(f"{what}: a pattern must be non-empty text, not {pattern!r:.60}")
        if len(pattern) > MAX_PATTERN or "\x00" in pattern or "\n" in pattern:
            raise InvalidInput(f"{what}: pattern {pattern[:60]!r} is longer than {MAX_PATTERN} or has NUL/newline")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)  # set syntax whose meaning will change
                re.compile(pattern)
        except (re.error, OverflowError, RecursionError, FutureWarning) as exc:
            raise InvalidInput(f"{what}: pattern {pattern[:60]!r} does not compile: {exc}") from None
        _check_backtracking(pattern, what)
        out.append(pattern)
    return tuple(out)


def compile_excludes(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One compiled pattern matching a path that any of `patterns` matches whole; None for none."""
    patterns = tuple(patterns)
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _check_backtracking(pattern: str, what: str) -> None:
    """Refuse backreferences, repeated groups holding a quantifier or an alternation, and more
    than `MAX_UNBOUNDED` repetitions in one pattern."""
    stack: list[bool] = []  # per open group: does it hold a quantifier or an alternation?
    unbounded = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if (nxt.isdigit() and nxt != "0") or nxt == "g":
                raise InvalidInput(f"{what}: pattern {pattern[:60]!r} uses a backreference")
            i += 2
            continue
        if c == "[":
            i = _class_end(pattern, i)
            continue
        follows_quantifier = pattern[i + 1 : i + 2] in _QUANTIFIERS
        if c == "(":
            if pattern.startswith("(?P=", i) or pattern.startswith("(?(", i):
                raise InvalidInput(f"{what}: pattern {pattern[:60]!r} uses a backreference")
            stack.append(False)
        elif c == ")":
            inner = stack.pop() if stack else False
            if inner and follows_quantifier:
                raise InvalidInput(
                    f"{what}: pattern {pattern[:60]!r} repeats a group that holds a repetition or an "
                    "alternation (catastrophic backtracking)"
                )
            if stack and (inner or follows_quantifier):
                stack[-1] = True
        elif c == "|":
            if stack:
                stack[-1] = True
        elif c in _QUANTIFIERS:
            unbounded += 1
            if unbounded > MAX_UNBOUNDED:
                raise InvalidInput(
                    f"{what}: pattern {pattern[:60]!r} has more than {MAX_UNBOUNDED} repetitions "
                    "(*, + or {m,n}); split it into several patterns"
                )
            if stack:
                stack[-1] = True
        i += 1


def _class_end(pattern: str, i: int) -> int:
    """The index after the character class that starts at `i`."""
    i += 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":  # a literal ] first in a class
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1
