"""Reading YAML and JSON documents safely: bounded size, no alias bombs, only `InvalidInput` escapes.

`read_document` accepts JSON or YAML (JSON is tried first when the text starts with `{` or `[`).
YAML goes through PyYAML's safe loader (the C one when present, the pure-Python one as a fallback
for what libyaml refuses, such as escaped lone surrogates). Whatever comes out is then walked once,
with a budget of nodes and a depth cap, before any model looks at it, and a list or mapping met
twice (a YAML alias) is refused: aliases can make a few bytes stand for an exponential number of
nodes ("billion laughs"), and self-referencing ones for infinitely many.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic
import yaml

from vroot.errors import InvalidInput

__all__ = ["MAX_DEPTH", "MAX_DOCUMENT_SIZE", "MAX_NODES", "dump_document", "read_document", "read_model"]

M = TypeVar("M", bound=pydantic.BaseModel)
MAX_DOCUMENT_SIZE = 64 * 1024 * 1024
MAX_NODES = 8_000_000
MAX_DEPTH = 32
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError, AttributeError)


def read_document(data: bytes | str, *, what: str) -> Any:
    """The decoded document, after `_check_shape`; `InvalidInput` naming `what` otherwise."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"{what} must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT_SIZE:
        raise InvalidInput(f"{what} of {len(data)} bytes exceeds the cap of {MAX_DOCUMENT_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8 text (byte {exc.start})") from None
    doc = _decode(text, what)
    _check_shape(doc, what)
    return doc


def _decode(text: str, what: str) -> Any:
    head = text.lstrip()[:1]
    if head in ("{", "["):
        try:
            return json.loads(text)
        except RecursionError:
            raise InvalidInput(f"{what}: nested too deeply") from None
        except ValueError:
            pass  # YAML flow style: let the YAML loader say what is wrong
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except _YAML_ERRORS:
            pass  # libyaml refuses some escapes the pure loader takes; its message is the one to give
    try:
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - a safe loader
    except RecursionError:
        raise InvalidInput(f"{what}: nested too deeply") from None
    except _YAML_ERRORS as exc:
        reason = " ".join(str(exc).split())[:300]
        raise InvalidInput(f"{what} is neither JSON nor YAML: {reason}") from None


def _check_shape(doc: Any, what: str) -> None:
    """Walk the document once: at most MAX_NODES nodes, MAX_DEPTH levels, plain JSON types."""
    budget = MAX_NODES
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise InvalidInput(f"{what} has more than {MAX_NODES} values")
        if isinstance(node, dict | list):
            if id(node) in seen:  # only a YAML alias makes one list or mapping appear twice
                raise InvalidInput(f"{what}: YAML aliases of lists or mappings are not accepted")
            seen.add(id(node))
            if depth >= MAX_DEPTH:
                raise InvalidInput(f"{what} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key, value in node.items():
                    if not isinstance(key, str | int) or isinstance(key, bool):
                        raise InvalidInput(f"{what}: a key is a {type(key).__name__}, not text or a number")
                    stack.append((value, depth + 1))
                budget -= len(node)
            else:
                stack.extend((item, depth + 1) for item in node)
        elif not (node is None or isinstance(node, str | int | float | bool)):
            raise InvalidInput(f"{what}: a value is a {type(node).__name__} (quote dates and times)")


def read_model(data: bytes | str, model: type[M], *, what: str) -> M:
    """`model` (a pydantic model) validated from the document in `data`; `InvalidInput` naming
    the first field that is wrong."""
    doc = read_document(data, what=what)
    try:
        return model.model_validate(doc)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
        raise InvalidInput(f"{what}: {where}: {first.get('msg', 'invalid')}"[:500]) from None


def dump_document(doc: dict[str, Any], *, format: str) -> bytes:
    """`doc` as JSON (2-space indent) or YAML (block style), UTF-8, ending in a newline."""
    if format == "json":
        return (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode()
    if format != "yaml":
        raise InvalidInput(f"manifest format {format!r} is not yaml or json")
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    try:
        text = yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                         width=4096)  # fmt: skip
    except UnicodeEncodeError:  # a lone surrogate (a non-UTF-8 IMA path): the pure dumper escapes it
        text = yaml.dump(doc, Dumper=yaml.SafeDumper, sort_keys=False, allow_unicode=False,
                         default_flow_style=False, width=4096)  # fmt: skip
    return text.encode("utf-8")
