"""`vroot host init`: make a directory into a vroot host and provision its TM.

Simulated (`--simulate`): the host TM is a new swtpm under DIR/tm, the host's boot components are
written to DIR/images (same `flavour`, same golden PCRs), the EK certificate comes from the
project's test manufacturer CA (created on first use in `manufacturer_ca`, shared by the hosts
that name the same directory). Real (`--tcti device:/dev/tpmrm0`): the TM and its EK certificate
are the machine's; the boot and IMA logs are the kernel's.
"""

from __future__ import annotations

import shutil
import socket
from datetime import datetime
from pathlib import Path

from vroot._fs import make_private_dir
from vroot.errors import Conflict, NotFound
from vroot.host._config import HostConfig, HostPaths, save_config
from vroot.host._hosttm import HostTm
from vroot.host._provision import HostKeys, provision_host_tm

__all__ = ["default_host_id", "init_host", "load_or_create_manufacturer_ca"]


def default_host_id() -> str:
    name = socket.gethostname().split(".")[0] or "host"
    return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "-" for c in name)[:63]


def load_or_create_manufacturer_ca(directory: Path, *, now: datetime):  # noqa: ANN201
    """The test manufacturer CA in `directory`, created there if it does not exist yet."""
    from vroot.pki import create_ca, load_ca, save_ca

    try:
        return load_ca(directory)
    except NotFound:
        ca = create_ca(common_name="vroot test TPM manufacturer CA", now=now)
        make_private_dir(directory)
        save_ca(ca, directory)
        return ca


def init_host(
    directory: Path,
    *,
    config: HostConfig,
    now: datetime,
    serial: int,
    manufacturer_ca_dir: Path | None = None,
    flavour: str = "default",
    force: bool = False,
) -> HostKeys:
    """Create the host directory and provision the TM. `Conflict` if it is already a host (unless
    `force`); nothing is left half-made on failure (a simulated host's directory is removed)."""
    paths = HostPaths(directory)
    if paths.config.exists() and not force:
        raise Conflict(f"{paths.root} is already a vroot host (use --force to provision it again)")
    if config.mode == "simulate" and paths.tm_pid.exists():
        raise Conflict(f"{paths.root}: its simulated TM is running (stop the host agent first)")
    created = not paths.root.exists()
    try:
        make_private_dir(paths.root)
        ca = None
        if config.mode == "simulate":
            from vroot.measure import HOST_CHAIN, write_images

            ca = load_or_create_manufacturer_ca(
                manufacturer_ca_dir or paths.root.parent / "manufacturer-ca", now=now
            )
            write_images(paths.images, HOST_CHAIN, flavour=flavour)
        save_config(config, paths)
        host = HostTm.open(config, paths, detached=False)
        try:
            return provision_host_tm(host.client, config, paths, manufacturer_ca=ca, now=now, serial=serial)
        finally:
            host.close(stop_tm=True)
    except BaseException:
        if created and config.mode == "simulate":
            shutil.rmtree(paths.root, ignore_errors=True)
        raise
