"""The page in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver, loads the page of a running `chef-genius serve`, asks for a recipe and finds it
rendered (title, ingredients, numbered steps, checks), on a phone-sized screen.

Skipped with a one-line reason where the browser is absent (`make browser` installs it).
CHEF_GENIUS_SCREENSHOT=FILE.png also saves the rendered page there (docs/serve.png is made so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytest.importorskip("fastapi", reason="chef-genius serve needs the serve extra (fastapi, uvicorn)")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): make browser",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.harness.serve_process import running_server  # noqa: E402
from tests.harness.tiny_server_model import shared_tiny_recipe_model  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_window_size(390, 1400)  # a phone's width (each test sets it again)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    with running_server(shared_tiny_recipe_model(tmp_path_factory), "--decoding", "guarded") as running:
        yield running


def test_the_page_writes_a_recipe_and_renders_it(browser, page_server, tmp_path):
    browser.set_window_size(390, 1400)
    browser.get(page_server.url + "/")
    assert browser.title == "chef-genius"
    assert Select(browser.find_element(By.ID, "decoding")).first_selected_option.text == "guarded"
    browser.find_element(By.ID, "title").send_keys("Tomato Pasta")
    browser.find_element(By.ID, "ingredients").send_keys("pasta\ntomatoes\nbasil")
    browser.find_element(By.ID, "notes").send_keys("Use fresh basil.")
    Select(browser.find_element(By.ID, "decoding")).select_by_value("greedy")
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 60).until(expected_conditions.visibility_of_element_located((By.ID, "recipe")))
    assert browser.find_element(By.ID, "r-title").text == "Tomato Pasta"
    ingredients = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#r-ingredients li")]
    steps = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#r-steps li")]
    assert ingredients == ["200 g pasta", "2 ripe tomatoes", "1 tbsp olive oil", "6 basil leaves"]
    assert len(steps) == 3 and steps[0] == "Boil the pasta in salted water until tender."
    assert browser.find_element(By.CSS_SELECTOR, "#r-steps").tag_name == "ol"  # numbered
    usable = browser.find_element(By.CSS_SELECTOR, '[data-verdict="usable"] h4')
    assert usable.text == "\u2713 usable: passed"
    reasons = browser.find_elements(By.CSS_SELECTOR, '[data-verdict="usable"] li')
    assert len(reasons) == 6 and any("ingredient lines" in r.text for r in reasons)
    assert "decoding greedy" in browser.find_element(By.ID, "r-meta").text
    assert browser.find_element(By.ID, "raw").get_attribute("textContent").startswith("Title: Tomato Pasta ||")
    # Nothing wider than the phone's screen.
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    # Copy as Markdown: the recipe's Markdown reaches the clipboard or its fallback.
    browser.find_element(By.ID, "copy").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "status").text == "Copied as Markdown."
    # The print view shows the recipe and hides the form.
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not browser.find_element(By.ID, "ask").is_displayed()
    assert browser.find_element(By.ID, "recipe").is_displayed()
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    browser.set_window_size(820, 900)  # a laptop's width, then the whole page's height
    browser.set_window_size(820, browser.execute_script("return document.documentElement.scrollHeight") + 140)
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("CHEF_GENIUS_SCREENSHOT"):
        shutil.copy(shot, Path(os.environ["CHEF_GENIUS_SCREENSHOT"]))


def test_the_page_says_what_went_wrong(browser, page_server):
    browser.set_window_size(390, 1400)
    browser.get(page_server.url + "/")
    browser.find_element(By.ID, "go").click()  # nothing asked for
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error")
    assert "say what to cook" in browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "recipe").is_displayed()
