"""TPML_PCR_SELECTION (part 2, 10.6.2 and 10.9.7) as a frozen `PcrSelection`.

Wire form: count u32, then per bank TPMS_PCR_SELECTION { hash u16, sizeofSelect u8, pcrSelect[size] },
PCR i at byte i // 8, bit i % 8. Caps (part 2 sizes them by the implementation; these are the
largest any TSS or TPM uses): at most 16 banks (the TSS's TPM2_NUM_PCR_BANKS, HASH_COUNT upper
bound) and a bitmap of at most 4 bytes (PCR_SELECT_MAX for 32 PCRs). A bank may appear only once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from vroot.errors import InvalidInput, TpmStructureError
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._wire import Reader, slot_setters, u8, u16, u32

MAX_BANKS = 16
MAX_SELECT_BYTES = 4
MAX_PCR = MAX_SELECT_BYTES * 8 - 1
# sizeofSelect the writer uses when the selection does not say: 3 bytes, PCRs 0-23 (PC Client).
DEFAULT_SELECT_BYTES = 3

_BITS = tuple(tuple(b for b in range(8) if v >> b & 1) for v in range(256))


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """Which PCRs of which banks: banks in wire order, indices ascending (the order pcrDigest uses).

    Build with `PcrSelection.from_mapping({HashAlg.SHA256: [0, 1, 7]})`. Iterating yields
    `(HashAlg, index)` pairs in digest order. `select_sizes` keeps each bank's sizeofSelect as read
    from the wire so that `encode()` gives back the same bytes; it takes no part in equality.
    """

    banks: tuple[tuple[HashAlg, tuple[int, ...]], ...]
    select_sizes: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.banks) > MAX_BANKS:
            raise InvalidInput(f"PCR selection: {len(self.banks)} banks, at most {MAX_BANKS}")
        seen = set()
        for alg, indices in self.banks:
            if not isinstance(alg, HashAlg):
                raise InvalidInput(f"PCR selection: bank {alg!r} is not a HashAlg")
            if alg in seen:
                raise InvalidInput(f"PCR selection: bank {alg.bank} listed twice")
            seen.add(alg)
            if not isinstance(indices, tuple) or list(indices) != sorted(set(indices)):
                raise InvalidInput(f"PCR selection: {alg.bank} indices must be a tuple, ascending, unique")
            for i in indices:
                if not isinstance(i, int) or not 0 <= i <= MAX_PCR:
                    raise InvalidInput(f"PCR selection: {alg.bank} PCR {i!r} out of range 0-{MAX_PCR}")
        if self.select_sizes is not None:
            if len(self.select_sizes) != len(self.banks):
                raise InvalidInput("PCR selection: one select size per bank")
            for (alg, indices), size in zip(self.banks, self.select_sizes, strict=True):
                if not 0 <= size <= MAX_SELECT_BYTES or (indices and indices[-1] >= size * 8):
                    raise InvalidInput(f"PCR selection: sizeofSelect {size} cannot hold {alg.bank} PCRs")

    @classmethod
    def from_mapping(cls, mapping: Mapping[HashAlg | str | int, Iterable[int]]) -> PcrSelection:
        """Banks in the mapping's order; indices sorted and de-duplicated. Keys: HashAlg, id or name."""
        banks = []
        for key, indices in mapping.items():
            if isinstance(key, str):
                alg = HashAlg.from_bank(key)
            else:
                alg = HashAlg.from_id(int(key))
            banks.append((alg, tuple(sorted(set(indices)))))
        return cls(tuple(banks))

    def to_mapping(self) -> dict[HashAlg, tuple[int, ...]]:
        return {alg: indices for alg, indices in self.banks}

    def __iter__(self) -> Iterator[tuple[HashAlg, int]]:
        for alg, indices in self.banks:
            for i in indices:
                yield alg, i

    def __len__(self) -> int:
        return sum(len(indices) for _, indices in self.banks)

    def pairs(self) -> frozenset[tuple[HashAlg, int]]:
        """The selected PCRs as a set, ignoring bank order and empty banks."""
        return frozenset(self)

    def hash_algs(self) -> frozenset[HashAlg]:
        """The banks that select at least one PCR."""
        return frozenset(alg for alg, indices in self.banks if indices)

    def encode(self) -> bytes:
        """Marshal as TPML_PCR_SELECTION."""
        out = [u32(len(self.banks))]
        sizes = self.select_sizes
        for n, (alg, indices) in enumerate(self.banks):
            if sizes is not None:
                size = sizes[n]
            else:
                size = max(DEFAULT_SELECT_BYTES, (indices[-1] // 8 + 1) if indices else 0)
            bitmap = bytearray(size)
            for i in indices:
                bitmap[i >> 3] |= 1 << (i & 7)
            out.append(u16(alg) + u8(size) + bytes(bitmap))
        return b"".join(out)

    def __str__(self) -> str:
        return "+".join(f"{alg.bank}:{','.join(map(str, idx))}" for alg, idx in self.banks) or "(none)"


def _make(banks: tuple, sizes: tuple) -> PcrSelection:
    """Build without re-validating: for the parser, whose output is valid by construction."""
    sel = _new(PcrSelection)
    _s_banks(sel, banks)
    _s_sizes(sel, sizes)
    return sel


_new = object.__new__
_s_banks, _s_sizes = slot_setters(PcrSelection)


def read_pcr_selection(r: Reader, what: str = "TPML_PCR_SELECTION") -> PcrSelection:
    start = r.pos
    count = r.u32(f"{what}.count")
    if count > MAX_BANKS:
        raise TpmStructureError(f"{what}.count: {count} banks, at most {MAX_BANKS}", offset=start)
    banks = []
    sizes = []
    seen = set()
    buf = r.buf
    for _ in range(count):
        pos = r.pos
        alg = r.hash_alg(f"{what}.pcrSelections.hash")
        if alg in seen:
            raise TpmStructureError(f"{what}: bank {alg.bank} listed twice", offset=pos)
        seen.add(alg)
        size = r.u8(f"{what}.pcrSelections.sizeofSelect")
        if size > MAX_SELECT_BYTES:
            raise TpmStructureError(
                f"{what}.pcrSelections.sizeofSelect: {size} bytes, at most {MAX_SELECT_BYTES}",
                offset=r.pos - 1,
            )
        at = r.need(size, f"{what}.pcrSelections.pcrSelect")
        indices = []
        for byte in range(size):
            v = buf[at + byte]
            if v:
                base = byte * 8
                indices.extend(base + b for b in _BITS[v])
        banks.append((alg, tuple(indices)))
        sizes.append(size)
    return _make(tuple(banks), tuple(sizes))


def parse_pcr_selection(data: bytes) -> PcrSelection:
    """Parse a complete TPML_PCR_SELECTION; trailing bytes are an error."""
    r = Reader(bytes(data))
    sel = read_pcr_selection(r)
    r.done("TPML_PCR_SELECTION")
    return sel
