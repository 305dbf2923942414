"""Headless Chromium for the dashboard tests (importable as `browser_helpers`): Debian's `chromium`
driven through `chromedriver` by Selenium, one browser per test module, stopped by PID.

Chromium trusts the test server's TLS certificate by its public key only
(`--ignore-certificate-errors-spki-list` with the SHA-256 of the server certificate's
SubjectPublicKeyInfo): any other certificate error still fails, and nothing is fetched from
anywhere but the test server (background networking, sync, component updates off).
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)


def spki_pin(certificate_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's SPKI list wants it."""
    spki = x509.load_pem_x509_certificate(certificate_pem).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time since boot


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of `pid` and every process under it, now."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        started = _start_time(p)
        if started is not None:
            out.append((p, started))
        todo.extend(tree.get(p, []))
    return out


def _kill_remaining(processes: list[tuple[int, str]], *, grace: float = 5.0) -> list[int]:
    """SIGKILL those of `processes` (pid, start time) still alive after `grace` seconds; the PIDs
    killed. A PID whose start time changed is another process now and is left alone."""
    deadline = time.monotonic() + grace
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [(p, s) for p, s in alive if _start_time(p) == s and not _zombie(p)]
        if alive:
            time.sleep(0.1)
    for pid, _ in alive:
        os.kill(pid, signal.SIGKILL)
    return [p for p, _ in alive]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextmanager
def headless_chromium(profile: Path, *, trust_certificate: bytes):
    """A Selenium driver on a new headless Chromium with its own profile directory. On exit the
    browser is quit and chromedriver stopped; every process they started that is still there
    after a grace period is killed by its PID, also when the test failed."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile / 'data'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                f"--ignore-certificate-errors-spki-list={spki_pin(trust_certificate)}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-sync", "--disable-component-update", "--disable-default-apps", "--mute-audio",
                "--password-store=basic", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        processes = descendants(service.process.pid) if service.process is not None else []
        try:
            driver.quit()  # closes the browser and stops chromedriver (Selenium's service)
        finally:
            _kill_remaining(processes)


def wait_until(driver: WebDriver, predicate: Callable[[WebDriver], Any], *, timeout: float = 30.0,
               what: str = "condition") -> Any:  # fmt: skip
    """Poll `predicate(driver)` until it returns something truthy (that value), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = predicate(driver)
        except Exception as exc:  # noqa: BLE001 - a page still rendering: stale or missing elements
            last_error, got = exc, None
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last: {last_error!r})" if last_error else ""))
