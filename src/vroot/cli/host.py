"""`vroot host`: provision a host, run its agent, look at it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from vroot.cli.migrate import drain

app = typer.Typer(
    help="Provision a host's TM and run the host agent that owns its vTMs.", no_args_is_help=True
)


def _client(directory: Path):  # noqa: ANN202
    from vroot.host import AgentClient, HostPaths

    return AgentClient(HostPaths(directory).agent_socket)


@app.command()
def init(
    directory: Path = typer.Argument(..., metavar="DIR", help="The host directory to create."),
    simulate: bool = typer.Option(False, "--simulate", help="A simulated host: a swtpm is its TM."),
    tcti: str | None = typer.Option(None, "--tcti", help="A real host's TM, e.g. device:/dev/tpmrm0."),
    boot_log: Path | None = typer.Option(
        None, "--boot-log", help="Device hosts: the firmware event log (default: the kernel's)."
    ),
    ima_log: Path | None = typer.Option(
        None, "--ima-log", help="Device hosts: the IMA list (default: the kernel's)."
    ),
    host_id: str | None = typer.Option(
        None, "--host-id", help="Default: the directory name (simulated) or hostname."
    ),
    manufacturer_ca: Path | None = typer.Option(
        None,
        "--manufacturer-ca",
        help="Test manufacturer CA directory (simulated; default DIR/../manufacturer-ca).",
    ),
    flavour: str = typer.Option("default", "--flavour", help="Build of the simulated boot components."),
    label: list[str] = typer.Option([], "--label", help="key=value label for placement (repeatable)."),
    ek_kind: str = typer.Option(
        "ecc", "--ek-kind", help="ecc (P-256) or rsa (2048): the EK whose certificate the TM's NV holds."
    ),
    force: bool = typer.Option(False, "--force", help="Provision an existing host again."),
) -> None:
    """Create a host directory and provision its TM (EK + certificate, AK, vTM-manager key)."""
    from datetime import UTC, datetime

    from cryptography import x509

    from vroot.errors import InvalidInput
    from vroot.host import HostConfig, default_host_id, init_host

    if simulate == (tcti is not None):
        raise InvalidInput("give exactly one of --simulate and --tcti")
    labels = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--label {item!r}: use key=value")
        labels[key] = value
    if host_id is None:
        host_id = directory.absolute().name if simulate else default_host_id()
    config = HostConfig(
        host_id=host_id,
        mode="simulate" if simulate else "device",
        tcti=tcti,
        labels=labels,
        ek_kind=ek_kind,
        boot_log=str(boot_log.absolute()) if boot_log else None,
        ima_log=str(ima_log.absolute()) if ima_log else None,
    )
    keys = init_host(
        directory,
        config=config,
        now=datetime.now(UTC),
        serial=x509.random_serial_number(),
        manufacturer_ca_dir=manufacturer_ca,
        flavour=flavour,
        force=force,
    )
    from vroot.tpm2 import parse_public

    print(f"host {host_id} provisioned in {directory}")
    print(f"  trusted state: {keys.trusted.bank.bank} PCRs {', '.join(map(str, sorted(keys.trusted.pcrs)))}")
    print(f"  vTM-manager key: {parse_public(keys.manager_public).name().hex()}")
    print(f"run the agent with: vroot host run {directory}")


@app.command()
def enroll(
    directory: Path = typer.Argument(..., metavar="DIR", help="A host directory made by `vroot host init`."),
    server: str = typer.Option(..., "--server", help="The RA server's https:// URL."),
    ca: Path = typer.Option(..., "--ca", help="The server's operations CA (the server's DIR/tls/ca.pem)."),
) -> None:
    """Enroll the host with an RA server (RA-1), before `vroot host run --server`.

    Credential activation in the host's TM: the server's PCA checks the EK certificate against its
    manufacturer CAs, the host proves its AK is in the same TM, and gets an AK certificate and the
    agent's client certificate (kept in DIR/server/). Enrolling again replaces them."""
    from vroot.agent import enroll_host

    creds = enroll_host(directory, server, ca)
    print(f"enrolled {creds.agent_id} with {creds.server_url}; certificates in {creds.directory}")
    print(f"run the agent with: vroot host run {directory} --server {server} --ca {ca}")


app.command("drain")(drain)  # vroot host drain HOST: the migration controller's drain (MC-F1)


@app.command()
def run(
    directory: Path = typer.Argument(..., metavar="DIR", help="A host directory made by `vroot host init`."),
    check_interval: float = typer.Option(
        1.0, "--check-interval", help="Seconds between vTM liveness checks."
    ),
    server: str | None = typer.Option(
        None, "--server", help="Also answer this RA server's tasks (after `vroot host enroll`)."
    ),
    ca: Path | None = typer.Option(None, "--ca", help="The RA server's operations CA (with --server)."),
    simulate_guests: bool = typer.Option(
        False, "--simulate-guests", help="With --server: also be the guest attester (vm:<uuid>) of each VM here."
    ),
) -> None:
    """Run the host agent in the foreground (local API on DIR/agent.sock). Ctrl-C stops it."""
    import logging

    from vroot.errors import InvalidInput
    from vroot.host.agent import HostAgent

    if simulate_guests and server is None:
        raise InvalidInput("--simulate-guests needs --server")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = HostAgent.start(directory)
    loops = []

    def ready() -> None:
        if server is not None:
            from vroot.agent import start_host_loop

            loops.append(start_host_loop(directory, server_url=server, ca_certificate=ca,
                                         simulate_guests=simulate_guests))  # fmt: skip
        guests = " and its VMs' guest attesters" if server and simulate_guests else ""
        print(f"ready: {directory}" + (f" (tasks from {server}{guests})" if server else ""), flush=True)

    try:
        agent.serve(check_interval=check_interval, on_ready=ready)
    finally:
        for loop in loops:
            loop.stop(timeout=1.0)


@app.command()
def status(
    directory: Path = typer.Argument(..., metavar="DIR"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the host agent's view: host id, banks, vTMs."""
    client = _client(directory)
    info = client.call("GET", "/v1/host")
    info["vtm_list"] = client.call("GET", "/v1/vtms")["vtms"]
    if as_json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return
    print(
        f"host {info['host_id']} ({info['mode']}), agent pid {info['pid']}, banks {', '.join(info['banks'])}"
    )
    print(f"trusted PCRs: {', '.join(map(str, info['trusted_pcrs']))}; vTMs: {info['vtms']}")


@app.command()
def reboot(directory: Path = typer.Argument(..., metavar="DIR")) -> None:
    """Reboot a simulated host: its TM resets, the boot is measured again, vTMs restart if trusted."""
    out = _client(directory).call("POST", "/v1/reboot", {})
    print(f"host {out['rebooted']} rebooted")
    for message in out["messages"]:
        print(f"  {message}")


@app.command()
def stop(
    directory: Path = typer.Argument(..., metavar="DIR"),
    stop_vtms: bool = typer.Option(False, "--stop-vtms", help="Also stop every vTM."),
    stop_tm: bool = typer.Option(False, "--stop-tm", help="Also stop a simulated host's TM (a power-off)."),
) -> None:
    """Stop the host agent (vTMs keep running unless --stop-vtms)."""
    _client(directory).call("POST", "/v1/shutdown", {"stop_vtms": stop_vtms, "stop_tm": stop_tm})
    print("host agent stopping")


@app.command("deep-quote")
def deep_quote(
    directory: Path = typer.Argument(..., metavar="DIR"),
    qualifying_data: str = typer.Option(
        ..., "--qualifying-data", help="Hex, 1-64 bytes (e.g. a Merkle root)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the evidence JSON here (default: stdout)."),
) -> None:
    """Quote the host's PCRs over the given qualifying data; print the evidence bundle (JSON)."""
    doc = _client(directory).call("POST", "/v1/deep-quote", {"qualifying_data": qualifying_data})
    text = json.dumps(doc, indent=2)
    if out is None:
        print(text)
    else:
        out.write_text(text)
