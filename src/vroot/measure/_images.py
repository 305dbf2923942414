"""Component images of a simulated platform: real files whose bytes the chain hashes.

`write_images` fills a directory with one file per stage of a chain. Contents are deterministic
(derived from the platform's `flavour` and the file name), so two hosts made with the same flavour
have the same golden PCR values and a baseline learnt on one holds on the other; a different
flavour is a different firmware/kernel build. Nothing here is secret.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from vroot.errors import InvalidInput, NotFound
from vroot.measure._chain import Stage

__all__ = ["ImageDir", "write_images"]

_TEXT = {
    "crtm-version.txt": "vroot simulated CRTM 1.0 ({flavour})",
    "vcrtm-version.txt": "vroot virtual CRTM 1.0 ({flavour})",
    "firmware.cfg": "boot-order=disk0\nvirtualization=on\niommu=on\nflavour={flavour}\n",
    "vplatform.cfg": "machine=q35\nmemory=2048\ntpm=crb\nflavour={flavour}\n",
    "bootloader.cfg": "default=0\ntimeout=0\nmenuentry vroot {{ linux /boot/vmlinuz; initrd /boot/initrd.img }}\n",
    "cmdline": "/boot/vmlinuz root=/dev/vda1 ro ima_policy=tcb ima_template=ima-ng",
    "vmm.conf": "[vmm]\naccel=kvm\nmax_vms=64\ntpm=emulator\n",
    "app.conf": "[app]\nlisten=0.0.0.0:8443\n",
}
_SIZES = {
    "firmware.bin": 256 * 1024,
    "vfirmware.bin": 128 * 1024,
    "vmlinuz": 64 * 1024,
    "initrd.img": 64 * 1024,
}


def _content(name: str, flavour: str) -> bytes:
    if name in _TEXT:
        return _TEXT[name].format(flavour=flavour).encode()
    size = _SIZES.get(name, 16 * 1024)
    seed = hashlib.sha256(f"vroot-image|{flavour}|{name}".encode()).digest()
    blocks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range((size + 31) // 32))
    return b"".join(blocks)[:size]


def write_images(directory: Path, chain: Iterable[Stage], *, flavour: str = "default") -> ImageDir:
    """Create (or overwrite) the files `chain` measures in `directory`; return it as an `ImageDir`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in sorted({s.file for s in chain if s.file}):
        target = directory / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(_content(name, flavour))
        os.replace(tmp, target)
    return ImageDir(directory)


class ImageDir:
    """A directory holding a platform's component images. Reads files; checks nothing else."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self, name: str) -> bytes:
        """The bytes of image `name`; `NotFound` if the file is missing, `InvalidInput` for a bad name."""
        if "/" in name or name in ("", ".", ".."):
            raise InvalidInput(f"bad image name {name!r}")
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"image {name!r} missing in {self.path}") from None

    def __repr__(self) -> str:
        return f"ImageDir({str(self.path)!r})"
