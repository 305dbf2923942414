"""tpm2-tools' serialized PCR file (`tpm2_quote -o`, `tpm2_pcrread -o`; read by `tpm2_checkquote -f`).

Raw little-endian C structs as tpm2-tools writes them (TPM-NOTES section 9):

    TPML_PCR_SELECTION   132 B: count u32, then 16 slots of
                                { hash u16, sizeofSelect u8, pcrSelect[4], 1 pad byte }
    u32 n                number of TPML_DIGEST blocks that follow (one per TPM2_PCR_Read)
    n x TPML_DIGEST      532 B: count u32 (<= 8), then 8 x { size u16 (<= 64), buffer[64] }

The digests, taken in order, are the selected PCRs' values in selection order (banks in order,
indices ascending). Every field is checked: exact total length, counts, sizes against each bank's
digest size, and that the number of digests equals the number of selected PCRs.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from vroot.errors import TpmStructureError
from vroot.tpm2._alg import HashAlg

_SEL_SLOTS = 16
_SEL_SIZE = 4 + _SEL_SLOTS * 8  # 132
_DIGESTS_PER_BLOCK = 8
_BLOCK_SIZE = 4 + _DIGESTS_PER_BLOCK * (2 + 64)  # 532
MAX_BLOCKS = (_SEL_SLOTS * 32 + _DIGESTS_PER_BLOCK - 1) // _DIGESTS_PER_BLOCK  # every PCR of 16 banks

_SLOT = struct.Struct("<HB4sx")
_U32 = struct.Struct("<I")
_DIGEST = struct.Struct("<H64s")


def _err(what: str, offset: int) -> TpmStructureError:
    return TpmStructureError(what, offset=offset, source="tpm2-tools PCR file")


def parse_tpm2_tools_pcrs(data: bytes) -> dict[HashAlg, dict[int, bytes]]:
    """Decode the file into {bank: {pcr index: value}}, banks in file order, indices ascending."""
    data = bytes(data)
    if len(data) < _SEL_SIZE + 4:
        raise _err(f"truncated: {len(data)} bytes, at least {_SEL_SIZE + 4} needed", len(data))
    (count,) = _U32.unpack_from(data, 0)
    if count > _SEL_SLOTS:
        raise _err(f"TPML_PCR_SELECTION.count {count}, at most {_SEL_SLOTS}", 0)
    selection: list[tuple[HashAlg, list[int]]] = []
    for slot in range(count):
        off = 4 + slot * 8
        alg_id, size, bitmap = _SLOT.unpack_from(data, off)
        try:
            alg = HashAlg(alg_id)
        except ValueError:
            raise _err(f"unknown hash algorithm 0x{alg_id:04x} in selection slot {slot}", off) from None
        if size > 4:
            raise _err(f"sizeofSelect {size} in selection slot {slot}, at most 4", off + 2)
        if any(a is alg for a, _ in selection):
            raise _err(f"bank {alg.bank} selected twice", off)
        indices = [8 * byte + bit for byte in range(size) for bit in range(8) if bitmap[byte] >> bit & 1]
        selection.append((alg, indices))
    (blocks,) = _U32.unpack_from(data, _SEL_SIZE)
    if blocks > MAX_BLOCKS:
        raise _err(f"{blocks} digest blocks, at most {MAX_BLOCKS}", _SEL_SIZE)
    want = _SEL_SIZE + 4 + blocks * _BLOCK_SIZE
    if len(data) != want:
        what = "truncated" if len(data) < want else "trailing bytes"
        raise _err(
            f"{what}: {len(data)} bytes, {blocks} digest blocks need exactly {want}", min(len(data), want)
        )
    digests: list[tuple[int, bytes]] = []
    for b in range(blocks):
        off = _SEL_SIZE + 4 + b * _BLOCK_SIZE
        (n,) = _U32.unpack_from(data, off)
        if n > _DIGESTS_PER_BLOCK:
            raise _err(f"TPML_DIGEST.count {n} in block {b}, at most {_DIGESTS_PER_BLOCK}", off)
        for i in range(n):
            doff = off + 4 + i * 66
            size, buf = _DIGEST.unpack_from(data, doff)
            if size > 64:
                raise _err(f"digest size {size}, at most 64", doff)
            digests.append((doff, buf[:size]))
    total = sum(len(indices) for _, indices in selection)
    if len(digests) != total:
        raise _err(f"{len(digests)} digests for {total} selected PCRs", _SEL_SIZE)
    out: dict[HashAlg, dict[int, bytes]] = {}
    it = iter(digests)
    for alg, indices in selection:
        bank = out.setdefault(alg, {})
        for index in indices:
            doff, value = next(it)
            if len(value) != alg.digest_size:
                raise _err(f"{alg.bank} PCR {index}: {len(value)}-byte digest, want {alg.digest_size}", doff)
            bank[index] = value
    return out


def encode_tpm2_tools_pcrs(values: Mapping[HashAlg, Mapping[int, bytes]]) -> bytes:
    """Write {bank: {index: value}} as tpm2-tools does: banks in mapping order, indices ascending,
    digests in blocks of 8."""
    if len(values) > _SEL_SLOTS:
        raise TpmStructureError(f"{len(values)} banks, at most {_SEL_SLOTS}")
    sel = bytearray(_SEL_SIZE)
    _U32.pack_into(sel, 0, len(values))
    flat: list[bytes] = []
    for slot, (alg, bank) in enumerate(values.items()):
        alg = HashAlg(alg)
        indices = sorted(bank)
        if indices and (indices[0] < 0 or indices[-1] > 31):
            raise TpmStructureError(f"{alg.bank}: PCR index out of range 0-31")
        bitmap = bytearray(4)
        for i in indices:
            bitmap[i >> 3] |= 1 << (i & 7)
            v = bytes(bank[i])
            if len(v) != alg.digest_size:
                raise TpmStructureError(f"{alg.bank} PCR {i}: {len(v)}-byte value, want {alg.digest_size}")
            flat.append(v)
        size = 4 if indices and indices[-1] >= 24 else 3
        _SLOT.pack_into(sel, 4 + slot * 8, alg, size, bytes(bitmap))
    out = [bytes(sel)]
    chunks = [flat[i : i + _DIGESTS_PER_BLOCK] for i in range(0, len(flat), _DIGESTS_PER_BLOCK)]
    out.append(_U32.pack(len(chunks)))
    for chunk in chunks:
        block = bytearray(_BLOCK_SIZE)
        _U32.pack_into(block, 0, len(chunk))
        for i, v in enumerate(chunk):
            _DIGEST.pack_into(block, 4 + i * 66, len(v), v)
        out.append(bytes(block))
    return b"".join(out)
