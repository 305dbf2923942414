"""Frozen, slotted value records without `dataclasses`.

`vroot eventlog replay` must start within 1.5x of a bare interpreter, and importing `dataclasses`
(which imports `inspect`) alone costs about as much as the interpreter's own start-up. A record here
behaves like `@dataclass(frozen=True, slots=True, kw_only=True)`: keyword-only construction, no
attribute assignment afterwards, equality and hashing over its fields, a readable repr, and
`replace()`. Fields are the `__slots__` of the class and its record bases, in order; a field
named in `_defaults` may be omitted; fields in `_nocompare` are left out of == and hash.
"""

from __future__ import annotations

from types import MappingProxyType


class Record:
    """Base of every eventlog value type."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _compare: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}
    _nocompare: frozenset[str] = frozenset()
    _setters: tuple = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = []
        for klass in reversed(cls.__mro__):
            slots = klass.__dict__.get("__slots__", ())
            fields.extend((slots,) if isinstance(slots, str) else slots)
        cls._fields = tuple(fields)
        cls._compare = tuple(f for f in fields if f not in cls._nocompare)
        setters = []
        for name in fields:
            for klass in cls.__mro__:
                if name in klass.__dict__:
                    setters.append(klass.__dict__[name].__set__)
                    break
        cls._setters = tuple(setters)

    def __init__(self, **kwargs: object) -> None:
        setter = object.__setattr__
        defaults = self._defaults
        for name in self._fields:
            if name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif name in defaults:
                setter(self, name, defaults[name])
            else:
                raise TypeError(f"{type(self).__name__}() missing keyword argument {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(kwargs)}")

    @classmethod
    def _make(cls, *values: object) -> Record:
        """Positional construction for decoder hot loops: every field, in `_fields` order."""
        self = object.__new__(cls)
        for setter, value in zip(cls._setters, values, strict=True):
            setter(self, value)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self._compare)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__, *(_hashable(v) for v in self._key())))

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({body})"

    def replace(self, **changes: object) -> Record:
        """A copy with some fields changed (like `dataclasses.replace`)."""
        values = {f: getattr(self, f) for f in self._fields}
        values.update(changes)
        return type(self)(**values)


def _hashable(value: object) -> object:
    if isinstance(value, dict | MappingProxyType):
        return tuple(value.items())
    return value
