"""`vroot guest run`: the guest attester inside a VM (RA-1, RA-3; DESIGN.md sections 1 and 5).

    vroot guest run --tcti device:/dev/tpmrm0 --server https://ra:8443 --ca ops-ca.pem [--dir DIR]

On its first run it enrolls the VM's vTM with the server (`GuestAttester.enroll`: vEK certificate
from the vTM's NV, a vAK persistent in the vTM, credential activation) and keeps its credentials
in DIR; then it answers the server's `attest` tasks until SIGINT/SIGTERM with a quote of its vTM
and the kernel's measurement logs. VMs on a vroot host can instead be simulated by their host
(`vroot host run --server ... --simulate-guests`).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

app = typer.Typer(help="Run the guest attester of a VM (its vTM, the RA server).", no_args_is_help=True)

DEFAULT_DIR = Path("/var/lib/vroot-guest")


@app.callback()
def _guest() -> None:
    """The guest attester of a VM (RA-1, RA-3)."""


@app.command()
def run(
    tcti: str = typer.Option(..., "--tcti", help="The VM's TPM, e.g. device:/dev/tpmrm0 or swtpm:host=...,port=..."),
    server: str = typer.Option(..., "--server", help="The RA server's https:// URL."),
    ca: Path = typer.Option(..., "--ca", help="The RA server's operations CA (PEM)."),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Where the guest keeps its credentials."),
    boot_log: Path = typer.Option(Path("/sys/kernel/security/tpm0/binary_bios_measurements"), "--boot-log",
                                  help="The guest's TCG event log."),
    ima_log: Path = typer.Option(Path("/sys/kernel/security/ima/binary_runtime_measurements"), "--ima-log",
                                 help="The guest's IMA list (binary); a missing file means none."),
    wait: float = typer.Option(25.0, "--wait", min=0.0, help="Seconds of each long-poll for a task."),
) -> None:
    """Enroll this VM's vTM if it is not enrolled, then answer the server's attestation tasks."""
    from vroot.agent import DeviceGuestTm, GuestAttester
    from vroot.errors import NotFound

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    attester = GuestAttester(DeviceGuestTm(tcti, boot_log=boot_log, ima_log=ima_log), directory)
    try:
        creds = attester.credentials()
    except NotFound:
        creds = attester.enroll(server, ca)
        print(f"enrolled {creds.agent_id} with {creds.server_url}; credentials in {creds.directory}", flush=True)
    client, loop = attester.task_loop(server_url=server, ca_certificate=ca, wait=wait)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ready: {creds.agent_id} answers attestation tasks from {server}", flush=True)
    try:
        loop.run(stop)
    finally:
        client.close()


if __name__ == "__main__":  # `python -m vroot.cli.guest run ...` until `vroot guest` is registered
    app()
