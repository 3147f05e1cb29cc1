"""The built report as a user sees it, in a real headless Chromium (Debian's chromium + chromium-driver,
installed by `make setup`, driven by selenium): the matrix page shows the four wire classes and the legend, a
hover shows a cell's facts, a click opens the cell's Allure page with its wire facts, and no page logs a
console error. Screenshots of each are kept in reports/out/screenshots/.

The cells are real: four cells of the suites, one per wire class, run on the reference mesh with capture.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from reports import build
from reports.wire_classes import CLASSES
from tests.test_reports_build import allure_cli  # noqa: F401 (the fixture installs Allure 3 when missing)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "reports" / "out" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Flags that let Chromium run as root in a container with no network beyond loopback.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1100")
# One real cell per wire class.
CELLS = {"mtls": "client-sidecar/server-sidecar/pa-strict/dr-none",
         "tls": "scope/dr-istio-mutual-custom-sni",
         "cleartext": "client-no-sidecar/server-sidecar/pa-permissive/dr-none",
         "refused": "client-sidecar/server-sidecar/pa-strict/dr-disable"}
WAIT_S = 30

pytestmark = [pytest.mark.root, pytest.mark.mesh, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]


@pytest.fixture(scope="module")
def report(allure_cli, tmp_path_factory):  # noqa: F811
    """A report built by reports.build from a real run of the four cells."""
    run = tmp_path_factory.mktemp("browser-run")
    selection = " or ".join(f"[{cell}]" for cell in CELLS.values())
    done = subprocess.run([sys.executable, "-m", "pytest", "suites/test_matrix.py", "suites/test_scope.py", "-q",
                           "-p", "no:cacheprovider", "-k", selection, "--alluredir", str(run / "allure-results")],
                          cwd=ROOT, env={**os.environ, "MESHPROOF_CELLS_DIR": str(run / "cells")},
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and "4 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    out = run / "out"
    assert build.main(["--results", str(run / "allure-results"), "--out", str(out), "--allure", allure_cli,
                       "--cells", str(run / "cells")]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{', '.join(missing)} missing: `make setup` installs chromium and chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="meshproof-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), f"could not write {path}"
    return path


def test_matrix_page_shows_the_four_classes_legend_and_hover_facts(report, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get((report / "matrix.html").as_uri())
    for found in CLASSES:
        cell = browser.find_element(By.CSS_SELECTOR, f'td[data-cell="{CELLS[found.key]}"]')
        assert cell.get_attribute("data-class") == found.key
        assert found.glyph in cell.text and found.label in cell.text
        want = tuple(int(found.colour[i:i + 2], 16) for i in (1, 3, 5))
        assert f"rgb{want}".replace(" ", "") in cell.value_of_css_property("background-color").replace(" ", "") \
            .replace("rgba", "rgb").replace(",1)", ")")
    legend = browser.find_element(By.CSS_SELECTOR, "p.legend").text
    assert all(f"{c.glyph} {c.label}" in legend for c in CLASSES) and "expected ≠ observed" in legend
    assert "1 cleartext · 1 refused" in browser.find_element(By.CSS_SELECTOR, "p.counts").text.replace("\n", " ")
    target = browser.find_element(By.CSS_SELECTOR, f'td[data-cell="{CELLS["mtls"]}"]')
    tip = target.find_element(By.CSS_SELECTOR, ".tip")
    assert not tip.is_displayed()
    ActionChains(browser).move_to_element(target).perform()
    assert tip.is_displayed() and "rule: istio-mutual-accepted" in tip.text and "tls_version: TLSv1.3" in tip.text
    _screenshot(browser, "matrix.png")
    assert _console_errors(browser) == []


def test_a_matrix_cell_opens_its_allure_page_with_the_wire_facts(report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((report / "matrix.html").as_uri())
    before = set(browser.window_handles)
    browser.find_element(By.CSS_SELECTOR, f'td[data-cell="{CELLS["mtls"]}"] a').click()
    WebDriverWait(browser, WAIT_S).until(lambda d: set(d.window_handles) - before)
    browser.switch_to.window((set(browser.window_handles) - before).pop())
    WebDriverWait(browser, WAIT_S).until(
        until.text_to_be_present_in_element((By.TAG_NAME, "body"), "STRICT namespace, no DestinationRule: "
                                                                   "sidecar → sidecar ⇒ mTLS"))
    _screenshot(browser, "cell.png")
    # Allure shows the description in a frame of its own.
    description = WebDriverWait(browser, WAIT_S).until(
        until.presence_of_element_located((By.XPATH, "//iframe[contains(@srcdoc, 'Wire facts')]")))
    browser.execute_script("arguments[0].scrollIntoView()", description)
    _screenshot(browser, "cell-wire-facts.png")
    browser.switch_to.frame(description)
    facts = browser.find_element(By.CSS_SELECTOR, "table.wire-facts")
    for fact in ("wire verdict mtls", "tls version TLSv1.3", "alpn istio", "sni outbound_.8000_.",
                 "canary in clear False"):
        assert fact in facts.text, facts.text
    browser.switch_to.default_content()
    assert _console_errors(browser) == []
    browser.close()
    browser.switch_to.window(before.pop())


def test_report_tree_reads_epic_feature_story_without_console_errors(report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((report / "allure-report" / "index.html").as_uri())
    WebDriverWait(browser, WAIT_S).until(lambda d: "Matrix" in d.find_element(By.TAG_NAME, "body").text)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Matrix" in body and "Scope" in body and "test_matrix.py" not in body
    browser.find_element(By.XPATH, "//*[normalize-space(text())='Matrix']").click()
    feature = "client sidecar → server sidecar"
    WebDriverWait(browser, WAIT_S).until(lambda d: feature in d.find_element(By.TAG_NAME, "body").text)
    browser.find_element(By.XPATH, f"//*[normalize-space(text())='{feature}']").click()
    WebDriverWait(browser, WAIT_S).until(
        lambda d: "PeerAuthentication STRICT" in d.find_element(By.TAG_NAME, "body").text)
    _screenshot(browser, "report.png")
    assert _console_errors(browser) == []
