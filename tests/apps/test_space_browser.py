"""End to end in headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium): paste a real
BOLD barcode into the page, press Identify, and read the identification off the page.

With ``BIOSCAN5M_SCREENSHOT=path.png`` the real-barcode test also saves a screenshot of the page (the docs' image).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bioscan5m

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,  # a headless Chromium against a live server
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="headless browser test needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
    ),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Without the background-networking flags Chromium's own connections are refused on a closed network.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app():
    from bioscan5m.apps import space

    return space


def serve(app, index_folder):
    return app.serve(index_folder, host="127.0.0.1", port=None, prevent_thread_lock=True, quiet=True)


def paste_and_identify(browser, url: str, barcode: str, expected_text: str, timeout: float = 90):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, timeout)
    box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#dna-input textarea")))
    box.send_keys(barcode)
    browser.find_element(By.CSS_SELECTOR, "#identify-button").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "status"), expected_text))
    return wait


def test_real_barcode_pasted_in_chromium_is_identified(browser, app, bold_root, tmp_path):
    from selenium.webdriver.common.by import By

    index = bioscan5m.build_index(bold_root, tmp_path / "index", model="kmer", splits="key_unseen",
                                  calibration="val_unseen+other_heldout", max_calibration_queries=500)
    # A real test_unseen barcode: its species is among the key_unseen reference specimens.
    record = bioscan5m.read_metadata(bold_root, split="test_unseen").iloc[11]
    demo = serve(app, index)
    try:
        paste_and_identify(browser, demo.local_url, record["dna_barcode"], f"Identified as {record['species']}")
        lineage = browser.find_element(By.ID, "lineage").text
        assert record["genus"] in lineage and record["family"] in lineage and "%" in lineage
        neighbours = browser.find_element(By.ID, "neighbours").text
        assert "BOLD:" in neighbours
        assert "Traceback" not in browser.page_source
        # As a first-time visitor sees it: the library in words (no server path), no photo widgets or gallery on a
        # DNA-only index, no synthetic banner, the licence footer.
        header = browser.find_element(By.ID, "header").text
        assert "4,954 reference specimens of 72 named species" in header and str(bold_root) not in header
        assert not browser.find_elements(By.ID, "photo-input") and not browser.find_elements(By.ID, "gallery")
        assert not browser.find_elements(By.ID, "synthetic-banner") and not browser.find_elements(By.ID, "calibration-warning")
        assert "CC BY 3.0" in browser.find_element(By.ID, "footer").text
        screenshot = os.environ.get("BIOSCAN5M_SCREENSHOT")
        if screenshot:
            height = browser.execute_script("return document.body.scrollHeight")
            browser.set_window_size(1400, min(height + 40, 2400))
            browser.save_screenshot(screenshot)
    finally:
        demo.close()


def test_photographs_and_map_render_in_chromium(browser, app, sample_root, space_demo_index):
    from selenium.webdriver.common.by import By

    record = bioscan5m.read_metadata(sample_root, split="test").iloc[2]
    demo = serve(app, space_demo_index)
    try:
        wait = paste_and_identify(browser, demo.local_url, record["dna_barcode"], f"Identified as {record['species']}")
        loaded = "return [...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth > 0).length"
        wait.until(lambda driver: driver.execute_script(loaded) >= 10)
        # The map (sites over the world outline) is an image made on the server: wait for it to load.
        drawn = "return [...document.querySelectorAll('#map img')].some(i => i.complete && i.naturalWidth > 200)"
        wait.until(lambda driver: driver.execute_script(drawn))
        assert browser.find_element(By.ID, "status").text.startswith("Identified as")
        assert "synthetic" in browser.find_element(By.ID, "synthetic-banner").text
        assert browser.find_element(By.ID, "photo-input").is_displayed()
    finally:
        demo.close()
