"""`vroot vtm`: one vTM per VM, through the running host agent's local API."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import typer

app = typer.Typer(
    help="Create, start, stop and destroy vTMs (one per VM) on a running host agent.", no_args_is_help=True
)

HOST = typer.Option(
    Path("/var/lib/vroot/host"), "--host", envvar="VROOT_HOST", help="The host directory (or $VROOT_HOST)."
)


def _call(host: Path, method: str, path: str, body: dict | None = None) -> dict:
    from vroot.host import AgentClient, HostPaths

    return AgentClient(HostPaths(host).agent_socket).call(method, path, body)


def _uuid(vm: str) -> str:
    from vroot.vtm import parse_vm_uuid

    return parse_vm_uuid(vm)


def _print_status(doc: dict) -> None:
    state = f"running (pid {doc['pid']})" if doc["running"] else "stopped"
    print(f"vTM {doc['vm_uuid']}: {state}, {doc['kind']} vEK, {doc['transport']} {doc['endpoint']}")


@app.command()
def create(
    vm: str = typer.Argument(..., metavar="VM", help="The VM's UUID."),
    kind: str = typer.Option("ecc", "--kind", help="vEK algorithm: ecc (P-256) or rsa (2048)."),
    tcp_port: int | None = typer.Option(
        None, "--tcp-port", help="Serve on 127.0.0.1:PORT (+1 control) for tests."
    ),
    host: Path = HOST,
) -> None:
    """Create and start the vTM of a VM, with its vEK and vEK certificate."""
    _print_status(_call(host, "POST", "/v1/vtms", {"vm_uuid": _uuid(vm), "kind": kind, "tcp_port": tcp_port}))


@app.command()
def start(vm: str = typer.Argument(..., metavar="VM"), host: Path = HOST) -> None:
    """Start a stopped vTM (refused when the host is not in its trusted state)."""
    _print_status(_call(host, "POST", f"/v1/vtms/{_uuid(vm)}/start"))


@app.command()
def stop(vm: str = typer.Argument(..., metavar="VM"), host: Path = HOST) -> None:
    """Stop a vTM (its state stays, encrypted)."""
    _print_status(_call(host, "POST", f"/v1/vtms/{_uuid(vm)}/stop"))


@app.command()
def destroy(vm: str = typer.Argument(..., metavar="VM"), host: Path = HOST) -> None:
    """Destroy a VM's vTM for good: state, sealed key and certificate."""
    _call(host, "DELETE", f"/v1/vtms/{_uuid(vm)}")
    print(f"vTM {_uuid(vm)} destroyed")


@app.command("list")
def list_(host: Path = HOST, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the host's vTMs."""
    vtms = _call(host, "GET", "/v1/vtms")["vtms"]
    if as_json:
        json.dump(vtms, sys.stdout, indent=2)
        print()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vTMs on {host}")
    for column in ("VM", "state", "vEK", "endpoint", "vEK name"):
        table.add_column(column, overflow="fold")
    for doc in vtms:
        state = f"running ({doc['pid']})" if doc["running"] else f"stopped ({doc['desired']})"
        table.add_row(doc["vm_uuid"], state, doc["kind"], doc["endpoint"], doc["vek_name"][:20] + "…")
    Console().print(table)


@app.command()
def boot(
    vm: str = typer.Argument(..., metavar="VM"),
    image_dir: Path = typer.Option(
        ..., "--image-dir", help="The VM's boot components (see `vroot.measure`)."
    ),
    host: Path = HOST,
) -> None:
    """Simulate the VM's measured boot into its vTM's vPCRs (keeps the guest's TCG and IMA logs)."""
    out = _call(host, "POST", f"/v1/vtms/{_uuid(vm)}/boot", {"image_dir": str(image_dir.absolute())})
    print(f"VM {out['vm_uuid']} booted: {out['events']} measurements")
    for index, value in out["pcrs"]["sha256"].items():
        print(f"  vPCR {index:>2} sha256 {value}")


@app.command()
def certificate(
    vm: str = typer.Argument(..., metavar="VM"),
    out: Path | None = typer.Option(None, "--out", help="Write DER here (default: print PEM)."),
    host: Path = HOST,
) -> None:
    """The vTM's vEK certificate (signed inside the host TM by its vTM-manager key)."""
    der = base64.b64decode(_call(host, "POST", f"/v1/vtms/{_uuid(vm)}/certificate")["der"])
    if out is not None:
        out.write_bytes(der)
        return
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    sys.stdout.write(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode())


def _read_input(path: Path) -> bytes:
    from vroot.errors import InvalidInput

    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None


def _write_output(path: Path, data: bytes) -> None:
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        path.write_bytes(data)


IN = typer.Option(..., "--in", help="Input file ('-' for stdin).")
OUT = typer.Option(..., "--out", help="Output file ('-' for stdout).")


@app.command()
def seal(
    vm: str = typer.Argument(..., metavar="VM"),
    pcrs: str = typer.Option(..., "--pcrs", help="vPCR indices, e.g. 0,4,7,9 (their current values)."),
    bank: str = typer.Option("sha256", "--bank", help="PCR bank."),
    infile: Path = IN,
    outfile: Path = OUT,
    host: Path = HOST,
) -> None:
    """Seal data to the vTM's current vPCR values (DP-2): unseal fails once the guest's state changes."""
    from vroot.errors import InvalidInput

    try:
        indices = [int(p) for p in pcrs.split(",") if p.strip()]
    except ValueError:
        raise InvalidInput(f"--pcrs {pcrs!r}: give comma-separated PCR indices") from None
    body = {"data": base64.b64encode(_read_input(infile)).decode(), "pcrs": indices, "bank": bank}
    _write_output(outfile, base64.b64decode(_call(host, "POST", f"/v1/vtms/{_uuid(vm)}/seal", body)["blob"]))


def _open_blob(action: str, vm: str, infile: Path, outfile: Path, host: Path) -> None:
    body = {"blob": base64.b64encode(_read_input(infile)).decode()}
    _write_output(
        outfile, base64.b64decode(_call(host, "POST", f"/v1/vtms/{_uuid(vm)}/{action}", body)["data"])
    )


@app.command()
def unseal(
    vm: str = typer.Argument(..., metavar="VM"), infile: Path = IN, outfile: Path = OUT, host: Path = HOST
) -> None:
    """Unseal data sealed to this vTM (only while its vPCRs hold the sealed-to values)."""
    _open_blob("unseal", vm, infile, outfile, host)


@app.command()
def bind(
    vm: str = typer.Argument(..., metavar="VM"), infile: Path = IN, outfile: Path = OUT, host: Path = HOST
) -> None:
    """Bind data to the vTM's resident decryption key (DP-1): encrypted here, only that vTM opens it."""
    import os

    from vroot.guest import bind as bind_data

    pem = _call(host, "POST", f"/v1/vtms/{_uuid(vm)}/binding-key")["pem"].encode()
    _write_output(outfile, bind_data(pem, _read_input(infile), rng=os.urandom))


@app.command()
def unbind(
    vm: str = typer.Argument(..., metavar="VM"), infile: Path = IN, outfile: Path = OUT, host: Path = HOST
) -> None:
    """Open data bound to this vTM."""
    _open_blob("unbind", vm, infile, outfile, host)
