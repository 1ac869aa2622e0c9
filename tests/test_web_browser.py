"""`yoda-sr web` in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver. Without them these tests skip with the reason; under CI (CI=true) they fail instead.

Set YODA_SR_WEB_SCREENSHOT=docs/web.png to refresh the README's screenshot from the first test.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from webserver import SAMPLE, Server, chrome_or_skip, crop, leftovers, pixels, start

pytestmark = pytest.mark.slow(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tmp_path_factory.mktemp("web-server"))
    yield running
    assert running.stop() == 0, running.stderr[-20:]
    assert not leftovers(running) and running.outside_traffic() == []


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = chrome_or_skip(tmp_path / "downloads", tmp_path / "profile")
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path / "downloads")}
    )
    yield driver
    driver.quit()


def wait(condition: Callable[[], Any], seconds: float = 120, what: str = "the page") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except Exception:  # an element that is not there yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def messages(driver: Any) -> str:
    return css(driver, "#messages textarea").get_attribute("value") or ""


def requests_off_the_server(driver: Any, server: Server) -> list[str]:
    """http(s) requests the page made to anywhere but the server (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.requestWillBeSent":
            urls.append(event["params"]["request"]["url"])
    origin = server.url.rstrip("/")
    return [url for url in urls if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.startswith(origin)]


def upload(driver: Any, server: Server, *paths: Path) -> None:
    driver.get(server.url)
    wait(lambda: css(driver, "#images input[type=file]"), 60, "the upload field")
    css(driver, "#images input[type=file]").send_keys("\n".join(str(path) for path in paths))
    wait(lambda: all(path.stem in css(driver, "#images").text for path in paths), 30, "the upload")


def download(driver: Any, folder: Path, name: str) -> Path:
    """Click the Download field's link of ``name``; the file Chrome saved."""
    css(driver, f'#download a[download="{name}"]').click()
    target = folder / name
    wait(lambda: target.is_file() and not list(folder.glob("*.crdownload")), 30, f"the download of {name}")
    return target


def test_upscale_the_sample_in_a_browser(server, browser, tmp_path):
    photo = tmp_path / "astronaut.png"
    shutil.copyfile(SAMPLE, photo)
    upload(browser, server, photo)
    css(browser, "#upscale").click()
    seen: set[str] = set()

    def finished() -> bool:
        seen.update(line for line in css(browser, "body").text.splitlines() if "astronaut.png (1/1): step" in line)
        return messages(browser).startswith("astronaut.png -> astronaut_x4.png (512x512")

    wait(finished, 180, "the result")
    assert seen, "no per-step progress was shown"

    # The slider moves: its handle follows a drag, and the result's clip follows the handle.
    from selenium.webdriver.common.action_chains import ActionChains

    handle = css(browser, '#slider [data-testid="slider"]')
    clipped = css(browser, "#slider img.fixed")
    before = (handle.get_attribute("style"), clipped.get_attribute("style"))
    ActionChains(browser).click_and_hold(handle).move_by_offset(-120, 0).release().perform()
    wait(lambda: handle.get_attribute("style") != before[0], 10, "the slider to move")
    assert clipped.get_attribute("style") != before[1]
    assert "inset(0px 0px 0px 50%)" not in clipped.get_attribute("style")
    if target := os.environ.get("YODA_SR_WEB_SCREENSHOT"):
        browser.save_screenshot(str(tmp_path / "page.png"))
        shot = Image.open(tmp_path / "page.png").convert("RGB")
        shot = shot.resize((shot.width * 3 // 4, shot.height * 3 // 4), Image.Resampling.LANCZOS)
        shot.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)

    # ... and the mouse wheel zooms into both images (away from the handle, which takes the drag).
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(clipped, 100, -100), 0, -300).perform()
    wait(lambda: "scale(1)" not in clipped.get_attribute("style"), 10, "the slider to zoom")

    # The download is the file `yoda-sr upscale FILE --seed 0` writes, under the same name.
    saved = download(browser, tmp_path / "downloads", "astronaut_x4.png")
    assert cli("upscale", photo, "--seed", "0", "--quiet") == 0
    expected = photo.with_name("astronaut_x4.png")
    assert np.abs(pixels(saved).astype(int) - pixels(expected).astype(int)).max() <= 1
    assert Image.open(saved).format == "PNG"
    assert requests_off_the_server(browser, server) == []


def test_several_images_a_bad_one_and_cancel_in_a_browser(server, browser, tmp_path):
    first = crop(tmp_path / "first.png")
    second = crop(tmp_path / "second.png", (70, 60, 102, 92))
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    upload(browser, server, first, second, notes)
    css(browser, "#upscale").click()
    lines = wait(lambda: messages(browser).count("\n") == 2 and messages(browser).splitlines(), 120, "three lines")
    assert lines[0].startswith("first.png -> first_x4.png") and lines[1].startswith("second.png -> second_x4.png")
    assert lines[2].startswith("notes.png: is not an image Pillow can read") and "/" not in messages(browser)

    # The gallery holds both results; choosing the second shows its record.
    thumbnails = wait(lambda: browser.find_elements("css selector", "#gallery button.thumbnail-item"), 30, "thumbnails")
    assert len(thumbnails) == 2
    thumbnails[1].click()
    wait(lambda: "second.png → second_x4.png" in css(browser, "body").text, 30, "the second result")

    shown = css(browser, "#slider img").get_attribute("src")
    assert shown.endswith("/bicubic.png")
    css(browser, '#before input[value="input pixels"]').click()
    wait(lambda: css(browser, "#slider img").get_attribute("src").endswith("/lr.png"), 30, "the input's pixels")

    archive = download(browser, tmp_path / "downloads", "yoda-sr-upscale.zip")
    with zipfile.ZipFile(archive) as contents:
        assert contents.namelist() == ["first_x4.png", "second_x4.png", "yoda-sr-upscale.jsonl"]
        records = [json.loads(line) for line in contents.read("yoda-sr-upscale.jsonl").splitlines()]
    assert [record["input"] for record in records] == ["first.png", "second.png"]

    # Cancel: a 100-step job stops at its next step, and the page takes the next job.
    big = crop(tmp_path / "big.png", (0, 0, 96, 96))
    upload(browser, server, big)
    steps = css(browser, "#steps input")
    steps.clear()
    steps.send_keys("100")
    css(browser, "#upscale").click()
    wait(lambda: "big.png (1/1): step" in css(browser, "body").text, 120, "progress")
    css(browser, "#cancel").click()
    wait(lambda: any("cancelled big.png" in line for line in server.stderr), 60, "the job to stop")
    assert "cancelling" in messages(browser)
    stopped = next(line for line in server.stderr if "cancelled big.png" in line)
    assert "step 100/100" not in stopped
    steps.clear()
    steps.send_keys("2")
    css(browser, "#upscale").click()
    wait(lambda: messages(browser).startswith("big.png -> big_x4.png"), 120, "the next job")
    assert requests_off_the_server(browser, server) == []
