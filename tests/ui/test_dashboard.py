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
from attest_helpers import attest
from browser_helpers import headless_chromium, wait_until
from deep_helpers import VmWorld, attest_many, vm_world
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.tpm  # the whole module takes about 12 s


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


def _open(driver: WebDriver, hash_route: str) -> None:
    """Go to a page of the signed-in app (no reload: the event feed and its events stay)."""
    driver.execute_script("location.hash = arguments[0]", hash_route)


def test_ra5_ra4_a_tampered_boot_loader_turns_host_a_untrusted_on_its_page_and_on_the_fleet(world, browser, shots):
    a = world.a
    _open(browser, "#/agent/host:host-a")
    head = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#agent-head[data-agent='host:host-a']"),
                      what="host-a's page")  # fmt: skip
    assert head.get_attribute("data-verdict") == "trusted"
    stages = browser.find_elements(By.CSS_SELECTOR, "#chain li.stage")
    assert stages and {s.get_attribute("data-status") for s in stages} <= {"matched", "unchecked"}
    screenshot(browser, shots, "host-trusted")
    history_before = len(browser.find_elements(By.CSS_SELECTOR, "#history tbody tr"))

    loader = a.directory / "images" / "bootloader.efi"
    good = loader.read_bytes()
    try:
        loader.write_bytes(bytes([good[0] ^ 1]) + good[1:])
        a.local.call("POST", "/v1/reboot", {})
        browser.find_element(By.ID, "attest-now").click()
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#agent-head").get_attribute("data-verdict")
                   == "untrusted", what="host-a untrusted on its page")  # fmt: skip
    finally:
        loader.write_bytes(good)
        a.local.call("POST", "/v1/reboot", {})
    finding = browser.find_element(By.CSS_SELECTOR, "#findings tr[data-finding='baseline.event.unknown']")
    assert finding.get_attribute("data-pcr") == "4"
    assert "bootloader.efi" in finding.text
    unknown = browser.find_element(By.CSS_SELECTOR, "#chain li.stage-unknown")
    assert unknown.get_attribute("data-pcr") == "4" and "baseline.event.unknown" in unknown.text
    marked = browser.find_elements(By.CSS_SELECTOR, "#chain li[data-status='replaced']")
    assert [m.get_attribute("data-pcr") for m in marked] == ["4"], text(browser, "#chain")
    assert "bootloader" in marked[0].get_attribute("data-component").lower()
    clean = browser.find_elements(By.CSS_SELECTOR, "#chain li[data-status='matched']")
    assert clean and all(s.get_attribute("data-pcr") != "4" for s in clean)  # the other stages still match
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(rows) == history_before + 1 and rows[0].get_attribute("data-verdict") == "untrusted"
    assert "rebooted" in text(browser, "#agent-head")
    screenshot(browser, shots, "host-untrusted")

    _open(browser, "#/fleet")
    card = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "section.host[data-agent='host:host-a']"),
                      what="the fleet")  # fmt: skip
    assert card.get_attribute("data-verdict") == "untrusted" and "baseline.event.unknown" in card.text
    other = browser.find_element(By.CSS_SELECTOR, "section.host[data-agent='host:host-b']")
    assert other.get_attribute("data-verdict") == "trusted"
    screenshot(browser, shots, "fleet-untrusted")

    # the good boot loader is back: "attest now" again turns host-a trusted
    _open(browser, "#/agent/host:host-a")
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#agent-head[data-agent='host:host-a']"),
               what="host-a's page again")  # fmt: skip
    browser.find_element(By.ID, "attest-now").click()
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#agent-head").get_attribute("data-verdict")
               == "trusted", what="host-a trusted again")  # fmt: skip


def test_mc_f1_f3_mc_s4_a_migration_started_from_the_ui_completes_with_its_steps_and_live_events(world, browser, shots):
    vm = world.vm_b
    assert attest(world.op, "host:host-a")["verdict"] == "trusted"  # a fresh trusted verdict for the destination
    _open(browser, "#/migrations")
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#placement[data-vm]"), what="the migration form")
    Select(browser.find_element(By.ID, "mig-vm")).select_by_value(vm)  # to the best host: the placement says why
    placement = wait_until(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f"#placement[data-vm='{vm}'][data-to=''][data-destination='host:host-a']"),
        what="the best placement")  # fmt: skip
    refused = {(r.get_attribute("data-host"), r.get_attribute("data-code"))
               for r in placement.find_elements(By.CSS_SELECTOR, "table.refusals tbody tr")}  # fmt: skip
    assert refused == {("host:host-b", "source")}
    screenshot(browser, shots, "migration-form")
    Select(browser.find_element(By.ID, "mig-to")).select_by_value("host:host-a")
    wait_until(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f"#placement[data-vm='{vm}'][data-to='host:host-a'][data-destination='host:host-a']"),
        what="the placement to host-a")  # fmt: skip

    browser.find_element(By.ID, "mig-start").click()
    started = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#start-result[data-migration]"),
                         what="the migration started")  # fmt: skip
    migration_id = started.get_attribute("data-migration")
    card = wait_until(browser, lambda d: (c := d.find_element(By.CSS_SELECTOR, f"article[data-migration='{migration_id}']"))
                      .get_attribute("data-state") in ("completed", "aborted") and c, timeout=90,
                      what="the migration to finish")  # fmt: skip
    assert card.get_attribute("data-state") == "completed", card.text
    steps = card.find_elements(By.CSS_SELECTOR, "li.step")
    assert [s.get_attribute("data-step") for s in steps] == ["prepare", "export", "import", "finalize"]
    for step in steps:
        assert step.get_attribute("class") == "step done"
        assert step.find_element(By.CSS_SELECTOR, ".step-ms").text.endswith(("ms", " s"))
    assert "host:host-b" in card.text and "host:host-a" in card.text
    assert world.store.agents.get(f"vm:{vm}").host_id == "host:host-a"
    screenshot(browser, shots, "migrations")

    _open(browser, "#/live")
    wait_until(browser, lambda d: {"migration.requested", "migration.completed"} <= {
        e.get_attribute("data-kind") for e in d.find_elements(By.CSS_SELECTOR, f"#events li[data-agent='vm:{vm}']")},
        what="the migration's events in the live view")  # fmt: skip
    kinds = [e.get_attribute("data-kind") for e in browser.find_elements(By.CSS_SELECTOR, "#events li")]
    assert "verdict.changed" in kinds  # host-a's turn to untrusted and back, from the previous test
    assert kinds.index("migration.completed") < kinds.index("migration.requested")  # newest first
    screenshot(browser, shots, "live")

    _open(browser, "#/fleet")  # the VM now shows under host-a
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"section.host[data-agent='host:host-a'] tr[data-agent='vm:{vm}']"),
               what="the moved VM under host-a")  # fmt: skip


def test_vm_page_shows_the_joint_verdict_naming_its_host_and_its_own_boot_chain(world, browser, shots):
    vm = f"vm:{world.vms_a[0]}"
    _open(browser, f"#/agent/{vm}")
    head = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"#agent-head[data-agent='{vm}']"),
                      what="the VM's page")  # fmt: skip
    assert "vouched for by" in head.text and "host:host-a" in head.text
    assert browser.find_elements(By.CSS_SELECTOR, "#chain li.stage")
    assert "Boot chain of the VM" in text(browser, "#chain h2")
    screenshot(browser, shots, "vm")
