"""Frozen, slotted value records without `dataclasses`.

`vroot eventlog replay` must start within 1.5x of a bare interpreter, and importing `dataclasses`
(which imports `inspect`) alone costs about as much as the interpreter's own start-up. A record here
behaves like `@dataclass(frozen=True, slots=True, kw_only=True)`: keyword-only construction, no
attribute assignment afterwards, equality and hashing over its fields, a readable repr, and
`replace()`. Fields are the `__slots__` of the class and its record bases, in order; a field
named in `_defaults` may be omitted; fields in `_nocompare` are left out of == and hash. A slot
whose name starts with `_` is not a field: it is private to the class (a cache of something the
fields determine) and left unset until the class's own code sets it.
"""

from __future__ import annotations

from types import MappingProxyType

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs start-up time
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable


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
            fields.extend(s for s in ((slots,) if isinstance(slots, str) else slots) if not s.startswith("_"))
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
        return cls._maker()(*values)

    @classmethod
    def _maker(cls) -> Callable[..., Record]:
        """The function behind `_make`, for loops that build many records: it takes every field,
        in `_fields` order, and sets them without checks. Made on first use (not at import)."""
        maker = cls.__dict__.get("_positional")
        if maker is None:
            maker = _positional_constructor(cls)
            cls._positional = maker  # on the class itself: a subclass makes its own
        return maker

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


def _positional_constructor(cls: type[Record]) -> Callable[..., Record]:
    # A record is frozen by its __setattr__, which also keeps Python from storing into its slots at
    # full speed. So the constructor builds an instance of an open subclass (the same layout, with
    # object's __setattr__), stores each field as a plain attribute, unrolled (as namedtuple and
    # dataclasses generate their methods), and then gives it its class: about half the time of
    # calling each slot's setter, which decoders pay once per record.
    from keyword import iskeyword

    fields = cls._fields
    args = [f"v{i}" for i in range(len(fields))]
    if any(iskeyword(name) for name in fields):  # a valid slot name, not a valid attribute in source
        body = "".join(f"    s{i}(self, v{i})\n" for i in range(len(fields)))
        source = f"def make({', '.join(args)}):\n    self = new(cls)\n{body}    return self\n"
    else:
        body = "".join(f"    self.{name} = v{i}\n" for i, name in enumerate(fields))
        source = f"def make({', '.join(args)}):\n    self = new(open_cls)\n{body}    self.__class__ = cls\n    return self\n"
    open_cls = type(f"_Open{cls.__name__}", (cls,), {"__slots__": (), "__module__": cls.__module__,
                    "__setattr__": object.__setattr__, "__delattr__": object.__delattr__})  # fmt: skip
    namespace: dict[str, object] = {"new": object.__new__, "cls": cls, "open_cls": open_cls}
    namespace.update((f"s{i}", setter) for i, setter in enumerate(cls._setters))
    exec(source, namespace)  # the source is made from field names and counts only, never from data
    maker = namespace["make"]
    maker.__qualname__ = f"{cls.__name__}._make"  # type: ignore[attr-defined]
    return maker  # type: ignore[return-value]


def _hashable(value: object) -> object:
    if isinstance(value, dict | MappingProxyType):
        return tuple(value.items())
    return value
