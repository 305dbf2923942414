"""vroot's foundation benchmarks, each side by side with its anchor in one run (issue 2).

    make bench                      # or: .venv/bin/python benchmarks/run.py [--quick]

(a) event logs: vroot's in-process parse + replay of every corpus log against `tpm2_eventlog`
    handling the same file as a whole process (goal: vroot ≥ 10× faster);
(b) quote verification: vroot's `verify_quote` against keylime 7.14.3's
    `keylime.tpm.tpm_util.checkquote` (run in its own venv, benchmarks/.keylime-venv) and against
    the bare `cryptography` signature check (goal: within 1.5× of the bare check);
(c) CLI start-up: `vroot --help` and `vroot eventlog replay FILE --json` against a bare
    `python -c pass` of the same interpreter (goal: within 1.5×).

Medians of repeated runs; the results table goes to stdout and benchmarks/out/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _timing import fmt, median_call, median_process  # noqa: E402

CORPORA = Path(os.environ.get("VROOT_CORPORA", ROOT.parent / "shared" / "corpora"))
KEYLIME_VENV = HERE / ".keylime-venv"
BIN = Path(sys.executable).parent


def _tcg_logs() -> list[tuple[str, Path, list[str]]]:
    """(name, path, extra tpm2_eventlog args) of every corpus TCG log tpm2_eventlog accepts."""
    version2 = {"event-arch-linux.bin", "event-gce-ubuntu-2104-log.bin", "event-sd-boot-fedora37.bin",
                "event-moklisttrusted.bin"}  # fmt: skip
    found = []
    for expected in sorted(CORPORA.glob("*/*.expected.json")):
        log = expected.with_name(expected.name.removesuffix(".expected.json"))
        if log.suffix == ".bin" or log.exists() and not log.name.endswith(".json"):
            if log.exists() and log.stat().st_size > 0:
                found.append(
                    (
                        f"{log.parent.name}/{log.name}",
                        log,
                        ["--eventlog-version=2"] if log.name in version2 else [],
                    )
                )
    for extra in ("keylime/mb_log.bin", "keylime/create-mb-policy/binary_bios_measurements"):
        if (CORPORA / extra).exists() and all(p != CORPORA / extra for _, p, _ in found):
            found.append((extra, CORPORA / extra, []))
    return found


def bench_eventlogs(quick: bool) -> list[dict]:
    from vroot.errors import EventLogError
    from vroot.eventlog import parse_tcg_log, replay_tcg_log

    tool = shutil.which("tpm2_eventlog")
    rows = []
    for name, path, args in _tcg_logs():
        data = path.read_bytes()
        try:
            n_events = len(parse_tcg_log(data).events)
        except EventLogError:
            continue
        if subprocess.run([tool, *args, str(path)], capture_output=True).returncode != 0:
            continue  # tpm2_eventlog rejects it: no anchor to compare with
        ours = median_call(
            lambda data=data: replay_tcg_log(parse_tcg_log(data)), repeat=15 if quick else 60, inner=5
        )
        theirs = median_process([tool, *args, str(path)], repeat=5 if quick else 20)
        rows.append(
            {"log": name, "events": n_events, "vroot": ours, "tpm2_eventlog": theirs, "ratio": theirs / ours}
        )
    return rows


def _swtpm_ecc_quote(workdir: Path) -> dict:
    """An ECC P-256 quote over sha256 PCRs 0-16 made by a swtpm, with an ASCII nonce keylime accepts."""
    from vroot.tm import TmClient, public_pem, start_swtpm
    from vroot.tpm2 import HashAlg

    nonce = b"vrootbenchnonce01234"
    proc = start_swtpm(workdir / "tm", tcp_port=None, unix_path=workdir / "tm.sock")
    try:
        with TmClient.open(proc.tcti) as tm, tm.create_primary_ek("ecc") as ek:
            with tm.load(ek, tm.create_ak(ek, "ecc")) as ak:
                tm.pcr_extend(16, {HashAlg.SHA256: bytes(range(32))})
                attest, sig = tm.quote(ak, {HashAlg.SHA256: range(17)}, nonce)
                pcrs = {
                    HashAlg.SHA256: {
                        i: v for i, v in tm.pcr_read({HashAlg.SHA256: range(17)})[HashAlg.SHA256].items()
                    }
                }
                return {"name": "swtpm ECC P-256 / sha256, 17 PCRs", "attest": attest, "sig": sig,
                        "ak_public": ak.public, "ak_pem": public_pem(ak.public), "nonce": nonce, "pcrs": pcrs}  # fmt: skip
    finally:
        proc.stop()


def _gce_rsa_quote() -> dict | None:
    from vroot.tpm2 import HashAlg, parse_public

    folder = CORPORA / "go-tpm-tools" / "gce-cos-85-no-nonce"
    if not folder.is_dir():
        return None
    expected = json.loads((folder / "expected.json").read_text())
    bank = expected["pcrs"]["sha256"] if "pcrs" in expected else expected["sha256"]
    pcrs = {HashAlg.SHA256: {int(i): bytes.fromhex(v) for i, v in bank.items()}}
    ak_public = (folder / "ak_public.tpmt_public.bin").read_bytes()
    from cryptography.hazmat.primitives import serialization

    pem = (
        parse_public(ak_public)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {"name": "GCE vTPM RSA-2048 / sha256, 24 PCRs (corpus)", "attest": (folder / "quote_sha256.tpms_attest.bin").read_bytes(),
            "sig": (folder / "quote_sha256.tpmt_signature.bin").read_bytes(), "ak_public": ak_public, "ak_pem": pem,
            "nonce": b"", "pcrs": pcrs}  # fmt: skip


def _bare_check(q: dict):  # noqa: ANN202
    """The bare cost: one signature verification with a preloaded key (what any verifier must do)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from vroot.tpm2 import parse_public, parse_signature

    key = parse_public(q["ak_public"]).public_key()
    sig = parse_signature(q["sig"])
    attest = q["attest"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        der = sig.to_der()
        return lambda: key.verify(der, attest, ec.ECDSA(hashes.SHA256()))
    raw = sig.sig
    return lambda: key.verify(raw, attest, padding.PKCS1v15(), hashes.SHA256())


def _keylime(q: dict, workdir: Path, repeat: int) -> float | None:
    python = KEYLIME_VENV / "bin" / "python"
    if not python.exists():
        return None
    from vroot.tpm2 import encode_tpm2_tools_pcrs

    files = {}
    for key, data in (("ak", q["ak_pem"]), ("attest", q["attest"]), ("sig", q["sig"]),
                      ("pcrs", encode_tpm2_tools_pcrs(q["pcrs"]))):  # fmt: skip
        files[key] = workdir / f"kl-{key}"
        files[key].write_bytes(data)
    out = subprocess.run(
        [
            str(python),
            str(HERE / "keylime_checkquote.py"),
            *(str(files[k]) for k in ("ak", "attest", "sig", "pcrs")),
            q["nonce"].decode(),
            "sha256",
            str(repeat),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def bench_quotes(quick: bool, workdir: Path) -> list[dict]:
    from vroot.attestation.quote import verify_quote
    from vroot.tpm2 import parse_public

    repeat = 300 if quick else 2000
    rows = []
    for q in filter(None, (_swtpm_ecc_quote(workdir), _gce_rsa_quote())):
        ak = parse_public(q["ak_public"])
        key = ak.public_key()

        def from_bytes(q=q, ak=ak) -> None:
            verify_quote(q["attest"], q["sig"], ak, nonce=q["nonce"], pcrs=q["pcrs"])

        def key_loaded(q=q, key=key) -> None:
            verify_quote(q["attest"], q["sig"], key, nonce=q["nonce"], pcrs=q["pcrs"])

        from_bytes()  # must verify before it is timed
        bare = median_call(_bare_check(q), repeat=repeat)
        ours = median_call(from_bytes, repeat=repeat)
        ours_key = median_call(key_loaded, repeat=repeat)
        theirs = _keylime(q, workdir, repeat)
        rows.append(
            {"quote": q["name"], "bare": bare, "vroot": ours, "vroot_key": ours_key, "keylime": theirs}
        )
    return rows


def bench_startup(quick: bool, workdir: Path) -> list[dict]:
    """Start-up as a user sees it: bytecode compiled (pip does this for installed packages) and
    PYTHONDONTWRITEBYTECODE unset, for the bare interpreter and for vroot alike."""
    repeat = 7 if quick else 25
    python = str(BIN / "python")
    vroot = str(BIN / "vroot")
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "100"
    log = CORPORA / "go-tpm-tools" / "rhel8-uefi.bin"
    bare = median_process([python, "-c", "pass"], repeat=repeat, env=env)
    rows = [{"command": "python -c pass", "time": bare, "ratio": 1.0}]
    for label, argv in (
        # What pip's console-script wrapper itself costs before any vroot code runs: it imports re.
        ("python -c 'import re, sys' (console-script floor)", [python, "-c", "import re, sys"]),
        ("vroot --help", [vroot, "--help"]),
        ("vroot eventlog replay rhel8-uefi.bin --json", [vroot, "eventlog", "replay", str(log), "--json"]),
    ):
        t = median_process(argv, repeat=repeat, env=env)
        rows.append({"command": label, "time": t, "ratio": t / bare})
    return rows


def render(logs: list[dict], quotes: list[dict], startup: list[dict]) -> str:
    out = [
        f"# vroot benchmarks ({platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()})",
        "",
    ]
    out += ["## (a) event log parse + replay: vroot in-process vs tpm2_eventlog whole process", "",
            "| log | events | vroot | tpm2_eventlog | ratio (×faster) |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in logs:
        out.append(
            f"| {r['log']} | {r['events']} | {fmt(r['vroot'])} | {fmt(r['tpm2_eventlog'])} | {r['ratio']:.0f}× |"
        )
    if logs:
        ratios = sorted(r["ratio"] for r in logs)
        out += [
            "",
            f"Lowest ratio {ratios[0]:.0f}×, median {ratios[len(ratios) // 2]:.0f}× over {len(logs)} logs (goal ≥ 10×).",
        ]
    out += ["", "## (b) quote verification", "",
            "| quote | bare signature check | vroot (AK as TPMT_PUBLIC) | ratio | vroot (AK key loaded) | ratio | keylime 7.14.3 checkquote | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in quotes:
        kl = "not installed" if r["keylime"] is None else fmt(r["keylime"])
        klr = "" if r["keylime"] is None else f"{r['keylime'] / r['bare']:.2f}×"
        out.append(
            f"| {r['quote']} | {fmt(r['bare'])} | {fmt(r['vroot'])} | {r['vroot'] / r['bare']:.2f}× | "
            f"{fmt(r['vroot_key'])} | {r['vroot_key'] / r['bare']:.2f}× | {kl} | {klr} |"
        )
    out += ["", "Ratios are against the bare signature check (goal for vroot ≤ 1.5×).", ""]
    out += ["## (c) CLI start-up", "", "| command | median | ratio to bare interpreter |", "|---|---:|---:|"]
    for r in startup:
        out.append(f"| `{r['command']}` | {fmt(r['time'])} | {r['ratio']:.2f}× |")
    out += ["", "Goal: ≤ 1.5× the bare interpreter.", ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vroot-bench-") as tmp:
        workdir = Path(tmp)
        logs = bench_eventlogs(args.quick)
        quotes = bench_quotes(args.quick, workdir)
        startup = bench_startup(args.quick, workdir)
    text = render(logs, quotes, startup)
    print(text)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
