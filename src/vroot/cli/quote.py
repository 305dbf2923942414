"""`vroot quote`: verify TPM2_Quote evidence from files.

    vroot quote verify --ak ak.pub --attest quote.msg --signature quote.sig --nonce 9009 --pcrs pcrs.json

Exit 0 when the quote verifies, 1 when it does not (the reason on one line), 2 when an input cannot
be read. Heavy modules (cryptography, rich, the codec) load inside the command, not at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from vroot.tpm2 import HashAlg

app = typer.Typer(help="Verify TPM 2.0 quotes.", no_args_is_help=True)

MAX_FILE = 4 * 1024 * 1024  # no legitimate input comes close


@app.callback()
def _quote() -> None:
    """Verify TPM 2.0 quotes."""


def _read(path: str, what: str) -> bytes:
    from vroot.errors import InvalidInput

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise InvalidInput(f"{what} {path} is larger than {MAX_FILE} bytes")
    return data


def _with_source(exc: Exception, source: str) -> Exception:
    """The same error, naming the file it came from."""
    from vroot.errors import InvalidInput, TpmStructureError

    if isinstance(exc, TpmStructureError):
        where = source if not exc.source else f"{source} ({exc.source})"
        return TpmStructureError(exc.what, offset=exc.offset, source=where)
    if isinstance(exc, InvalidInput) and source not in str(exc):
        return InvalidInput(f"{source}: {exc}")
    return exc


def parse_pcrs_file(data: bytes, source: str) -> dict[HashAlg, dict[int, bytes]]:
    """PCR values from `vroot eventlog replay --json` output ({"pcrs": {bank: {index: hex}}}, other
    top-level keys ignored) or a tpm2-tools serialized PCR file; told apart by the first non-blank
    byte (`{` for JSON; the binary file starts with a little-endian bank count of at most 16)."""
    from vroot.errors import InvalidInput
    from vroot.tpm2 import HashAlg, parse_tpm2_tools_pcrs

    if data.lstrip()[:1] != b"{":
        try:
            return parse_tpm2_tools_pcrs(data)
        except InvalidInput as exc:
            raise _with_source(exc, source) from None
    import json

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{source}: not valid JSON ({exc})") from None
    banks = doc.get("pcrs") if isinstance(doc, dict) else None
    if not isinstance(banks, dict):
        raise InvalidInput(f'{source}: no "pcrs" object (want {{"pcrs": {{"sha256": {{"0": "<hex>"}}}}}})')
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank, values in banks.items():
        try:
            alg = HashAlg.from_bank(bank)
        except InvalidInput as exc:
            raise InvalidInput(f"{source}: {exc}") from None
        if alg in out:
            raise InvalidInput(f"{source}: bank {alg.bank} given twice")
        if not isinstance(values, dict):
            raise InvalidInput(f"{source}: pcrs.{bank} must map PCR indices to hex digests")
        parsed: dict[int, bytes] = {}
        for index, value in values.items():
            if not (isinstance(index, str) and index.isdigit() and len(index) <= 10 and int(index) < 2**32):
                raise InvalidInput(f"{source}: pcrs.{bank}: {index!r} is not a PCR index")
            try:
                digest = bytes.fromhex(value) if isinstance(value, str) else None
            except ValueError:
                digest = None
            if digest is None or len(digest) != alg.digest_size:
                raise InvalidInput(
                    f"{source}: pcrs.{bank}.{index} is not a {alg.digest_size}-byte hex {alg.bank} digest"
                )
            parsed[int(index)] = digest
        out[alg] = parsed
    return out


def _hex_nonce(text: str) -> bytes:
    from vroot.errors import InvalidInput

    t = text.strip()
    if t[:2].lower() == "0x":
        t = t[2:]
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise InvalidInput(f'--nonce {text!r} is not hex (use "" for an empty nonce)') from None


@app.command("verify")
def verify(
    ak: str = typer.Option(..., "--ak", help="AK public key: PEM/DER, or TPM2B_PUBLIC / TPMT_PUBLIC bytes."),
    attest: str = typer.Option(..., "--attest", help="TPMS_ATTEST (tpm2_quote -m), bare or TPM2B."),
    signature: str = typer.Option(..., "--signature", help="TPMT_SIGNATURE (tpm2_quote -s)."),
    nonce: str = typer.Option(..., "--nonce", help='Expected qualifying data in hex; "" for none.'),
    pcrs: str | None = typer.Option(
        None,
        "--pcrs",
        help="Claimed PCR values: `vroot eventlog replay --json` output or a tpm2-tools PCR file (-o). "
        "Without it the PCR values are not checked.",
    ),
    allow_hash: list[str] = typer.Option(  # noqa: B008
        [],
        "--allow-hash",
        help="Also allow this hash (e.g. sha1) for the signature and PCR banks; default sha256/384/512.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify a TPM2_Quote: signature, magic, type, nonce, and the PCR digest against claimed values."""
    from vroot.attestation import DEFAULT_ALLOWED_HASHES, verify_quote
    from vroot.errors import InvalidInput, VerificationError
    from vroot.tpm2 import HashAlg, PublicArea, load_ak, parse_attest, parse_signature

    allowed = set(DEFAULT_ALLOWED_HASHES)
    for name in allow_hash:
        allowed.add(HashAlg.from_bank(name))
    expected_nonce = _hex_nonce(nonce)
    files = {"AK": ak, "attest": attest, "signature": signature}
    raw = {what: _read(path, f"{what} file") for what, path in files.items()}
    try:
        key = load_ak(raw["AK"])
    except InvalidInput as exc:
        raise _with_source(exc, ak) from None
    claimed = None
    if pcrs is not None:
        claimed = parse_pcrs_file(_read(pcrs, "PCR file"), pcrs)
    # Decode here first, so that an unreadable file is named in the error (exit 2).
    for what, parse in (("attest", parse_attest), ("signature", parse_signature)):
        try:
            parse(raw[what])
        except InvalidInput as exc:
            raise _with_source(exc, files[what]) from None
    try:
        vq = verify_quote(
            raw["attest"],
            raw["signature"],
            key,
            nonce=expected_nonce,
            pcrs=claimed,
            allowed_hashes=frozenset(allowed),
        )
    except VerificationError as exc:
        if json_out:
            _print_json({"valid": False, "error": type(exc).__name__, "reason": str(exc)})
        raise
    ak_name = key.name().hex() if isinstance(key, PublicArea) and key.name_alg is not None else None
    result = _result(vq, ak_name)
    if json_out:
        _print_json(result)
    else:
        _print_table(result)


def _result(vq: Any, ak_name: str | None) -> dict[str, Any]:
    return {
        "valid": True,
        "ak_name": ak_name,
        "qualified_signer": vq.qualified_signer.hex(),
        "nonce": vq.nonce.hex(),
        "hash": vq.hash_alg.bank,
        "clock": vq.clock,
        "reset_count": vq.reset_count,
        "restart_count": vq.restart_count,
        "safe": vq.safe,
        "firmware_version": f"0x{vq.firmware_version:016x}",
        "selection": {alg.bank: list(indices) for alg, indices in vq.selection.banks},
        "pcr_digest": vq.pcr_digest.hex(),
        "pcrs_verified": vq.pcrs_verified,
        "pcrs": {alg.bank: {str(i): v.hex() for i, v in bank.items()} for alg, bank in vq.pcrs.items()},
    }


def _print_json(doc: dict[str, Any]) -> None:
    import json

    typer.echo(json.dumps(doc, indent=2))


def _print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="quote verified", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    if r["ak_name"]:
        table.add_row("AK name", r["ak_name"])
    table.add_row("signer (QN)", r["qualified_signer"])
    table.add_row("nonce", r["nonce"] or "(empty)")
    table.add_row("signature hash", r["hash"])
    table.add_row("clock / resets / restarts", f"{r['clock']} / {r['reset_count']} / {r['restart_count']}")
    table.add_row("PCRs quoted", "; ".join(f"{b}: {_ranges(ix)}" for b, ix in r["selection"].items()))
    table.add_row("PCR digest", r["pcr_digest"])
    if r["pcrs_verified"]:
        n = sum(len(v) for v in r["pcrs"].values())
        table.add_row("PCR values", f"verified ({n} values match the digest)")
    else:
        table.add_row("PCR values", "NOT checked (no --pcrs given)")
    Console().print(table)


def _ranges(indices: list[int]) -> str:
    """0,1,2,3,7 -> 0-3,7"""
    out: list[str] = []
    for i in indices:
        if out and i == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out) or "(none)"
