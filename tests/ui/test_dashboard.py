"""The web dashboard end to end in headless Chromium (issue 6, point 1): every page, against a
real server with two enrolled swtpm hosts, their VMs and baselines (RA-4, RA-5, RA-6, MC-F1,
MC-F3, MC-S3, MC-S4).

One world and one browser serve the module; the tests run in order: a wrong token shows an error
and no data; the fleet shows both hosts trusted and each VM naming its host; host-a's boot loader
is tampered, "attest now" turns it untrusted on its page (the finding, the boot-loader stage of
the timeline) and on the fleet; a migration started from the form completes with its four steps'
times, and the live view shows its events. Each page is photographed (VROOT_SCREENSHOTS=DIR also
saves the pictures there: scripts/screenshots.py writes docs/screenshots/ that way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_helpers import headless_chromium, wait_until
from deep_helpers import VmWorld, attest_many, vm_world
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [pytest.mark.tpm, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmWorld]:
    with vm_world(tmp_path_factory.mktemp("ui") / "server") as w:
        yield w


@pytest.fixture(scope="module")
def browser(world: VmWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    cert = (world.server.directory / "tls" / "server-cert.pem").read_bytes()
    with headless_chromium(tmp_path_factory.mktemp("chromium"), trust_certificate=cert) as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def screenshot(driver: WebDriver, shots: Path, name: str) -> Path:
    """A PNG of the page as shown (in the run's directory, and in $VROOT_SCREENSHOTS if set)."""
    path = shots / f"{name}.png"
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 2400)")
    driver.set_window_size(1280, max(700, int(height)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    assert path.stat().st_size > 5000, f"{name}: an empty picture"
    extra = os.environ.get("VROOT_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    return path


def sign_in(driver: WebDriver, url: str, token: str) -> None:
    driver.get(url + "/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/ui/#/fleet")
    box = wait_until(driver, lambda d: d.find_element(By.ID, "token"), what="the sign-in form")
    box.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()


def text(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_ra6_a_wrong_token_shows_a_clear_error_and_no_data(world, browser, shots):
    sign_in(browser, world.server.url, "not-the-operator-token")
    error = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#sign-in-status .error"),
                       what="the sign-in error")  # fmt: skip
    assert "Wrong token" in error.text and "401" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, ".host, [data-agent]") == []
    assert not browser.find_element(By.ID, "nav").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0  # the refused token is not kept
    assert "not-the-operator-token" not in browser.page_source
    screenshot(browser, shots, "sign-in-refused")


def test_ra4_the_fleet_shows_both_hosts_trusted_and_each_vm_naming_its_host(world, browser, shots):
    vms = [f"vm:{vm}" for vm in (*world.vms_a, world.vm_b)]
    results = attest_many(world.op, ["host:host-a", "host:host-b", *vms])
    assert {r["verdict"] for r in results} == {"trusted"}
    sign_in(browser, world.server.url, world.server.token)
    cards = wait_until(browser, lambda d: len(found := d.find_elements(By.CSS_SELECTOR, "section.host")) == 2 and found,
                       what="two host cards")  # fmt: skip
    assert [c.get_attribute("data-agent") for c in cards] == ["host:host-a", "host:host-b"]
    assert [c.get_attribute("data-verdict") for c in cards] == ["trusted", "trusted"]
    assert browser.execute_script("return sessionStorage.length") == 1
    assert world.server.token not in browser.current_url
    for card, host, on_it in ((cards[0], "host:host-a", world.vms_a), (cards[1], "host:host-b", [world.vm_b])):
        rows = card.find_elements(By.CSS_SELECTOR, "table.vms tbody tr")
        assert sorted(r.get_attribute("data-agent") for r in rows) == sorted(f"vm:{vm}" for vm in on_it)
        for row in rows:
            assert row.get_attribute("data-verdict") == "trusted"
            assert row.find_element(By.CSS_SELECTOR, "td.vouched").text.startswith(host)
    wait_until(browser, lambda d: d.find_element(By.ID, "feed-state").get_attribute("data-state") == "live",
               what="the event stream")  # fmt: skip
    screenshot(browser, shots, "fleet")
