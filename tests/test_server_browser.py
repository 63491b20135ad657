"""A real headless Chromium (Debian's chromium + chromium-driver, installed by .ci/run) uses the page:
submits a prompt, sees the progress bar move and the video play in the gallery.

INFINISTAR_SCREENSHOT=FILE also saves a screenshot of the page after the job (docs/serve-page.png).
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from server_process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
BOUND_S = 300


@pytest.fixture
def browser():
    if not (BROWSER and DRIVER):
        pytest.skip("no chromium + chromedriver (.ci/run installs Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_submits_shows_progress_and_plays_the_video(browser, tmp_path):
    server = ServerProcess(tmp_path / "data", "--keep-alive", "-1").start()
    try:
        browser.get(server.url)
        assert browser.title == "infinistar"
        deadline = time.monotonic() + BOUND_S
        while not browser.find_elements(By.CSS_SELECTOR, "#model option") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert browser.find_element(By.ID, "model").get_attribute("value") == "tiny"
        browser.find_element(By.ID, "prompt").send_keys("a red square moving right")
        browser.find_element(By.ID, "seed").send_keys("11")
        browser.find_element(By.ID, "submit").click()
        seen = set()
        while time.monotonic() < deadline:
            seen.update(browser.execute_script(  # the queue is redrawn often: read it in one go
                "return [...document.querySelectorAll('#queue progress')].map((bar) => bar.value)"))
            if browser.find_elements(By.CSS_SELECTOR, "#gallery video"):
                break
            time.sleep(0.03)
        assert browser.find_element(By.ID, "error").text == ""
        # A progress bar was drawn for the job; on an idle machine the tiny job can finish between
        # two polls of the page (250 ms), so movement is not asserted.
        assert seen, "no progress bar was drawn for the job"
        video = browser.find_element(By.CSS_SELECTOR, "#gallery video")
        ready = 0
        while ready < 1 and time.monotonic() < deadline:
            ready = browser.execute_script("return arguments[0].readyState", video)
            time.sleep(0.05)
        assert ready >= 1 and browser.execute_script("return arguments[0].duration", video) > 0  # it plays
        item = browser.find_element(By.CSS_SELECTOR, "#gallery .item")
        assert "seed 11" in item.text and "re-run with this seed" in item.text
        time.sleep(0.5)  # let the first frames paint for the screenshot
        if os.environ.get("INFINISTAR_SCREENSHOT"):
            browser.save_screenshot(os.environ["INFINISTAR_SCREENSHOT"])
        # Re-running with the seed queues the same prompt and seed again.
        item.find_element(By.XPATH, ".//button[text()='re-run with this seed']").click()
        while len(browser.find_elements(By.CSS_SELECTOR, "#gallery .item")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        titles = [e.text.splitlines()[0] for e in browser.find_elements(By.CSS_SELECTOR, "#gallery .item")]
        assert titles == ["a red square moving right — seed 11"] * 2
    finally:
        server.stop()
