"""The web viewer in a real browser: Debian's chromium driven by Playwright (skipped when either is missing).

A screenshot at ``?az=A&t=T`` from the ``file://`` page at device scale factor 1 matches the atlas tile (A, T) at
>= 30 dB PSNR; a scripted mouse drag changes the view; the arrow keys step time; the page logs no console errors.
"""

import io
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from test_viewer import viewer_cfg, viewer_scene

from animate124.export.outputs import export

CHROMIUM = os.environ.get("ANIMATE124_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
MIN_PSNR_DB = 30.0
SIZE = 32

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/ci/install_browser.sh installs it)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e .[dev])"),
]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer")
    export(viewer_cfg(tmp, views=8, times=3, size=SIZE), viewer_scene(tmp))
    return tmp / "viewer"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, viewer, query):
    page = browser.new_page(viewport={"width": 640, "height": 400}, device_scale_factor=1)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((viewer / "index.html").as_uri() + query)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return page, errors


def _canvas(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB"))


def _tile(viewer, az_index: int, t_index: int, size: int = SIZE, cols: int = 8) -> np.ndarray:
    atlas = np.asarray(Image.open(viewer / "atlas" / f"t{t_index:03d}.jpg").convert("RGB"))
    r, c = divmod(az_index, cols)
    return atlas[r * size:(r + 1) * size, c * size:(c + 1) * size]


@pytest.mark.parametrize(("az", "t", "az_index", "t_index"), [(90, 0.5, 2, 1), (315, 1.0, 7, 2)])
def test_query_view_matches_the_atlas_tile(browser, viewer, az, t, az_index, t_index):
    page, errors = _open(browser, viewer, f"?az={az}&t={t}")
    assert page.locator("#view").get_attribute("data-az") == str(az_index)
    shot = _canvas(page)
    assert shot.shape == (SIZE, SIZE, 3)
    assert psnr(shot, _tile(viewer, az_index, t_index)) >= MIN_PSNR_DB
    assert psnr(shot, _tile(viewer, (az_index + 2) % 8, t_index)) < MIN_PSNR_DB  # the comparison can fail
    assert "a red <blob> & a green one" in page.locator("#prompt").inner_text()
    assert page.locator("#input").evaluate("img => img.complete && img.naturalWidth > 0")
    assert errors == []
    page.close()


def test_drag_orbits_and_keys_step_time(browser, viewer):
    page, errors = _open(browser, viewer, "?az=0&t=0")
    before = _canvas(page)
    box = page.locator("#view").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 9, y, steps=3)  # about a quarter of the canvas: a quarter turn
    page.mouse.up()
    az = int(page.locator("#view").get_attribute("data-az"))
    assert az != 0
    after = _canvas(page)
    assert psnr(after, _tile(viewer, az, 0)) >= MIN_PSNR_DB and psnr(after, before) < MIN_PSNR_DB
    page.keyboard.press("ArrowRight")
    assert page.locator("#view").get_attribute("data-t") == "1"
    assert page.locator("#time").input_value() == "1"
    assert errors == []
    page.close()


def test_without_query_it_plays(browser, viewer):
    page, errors = _open(browser, viewer, "")
    page.wait_for_function("document.getElementById('view').dataset.t !== '0'", timeout=30_000)
    assert page.locator("#play").inner_text() == "Pause"
    assert errors == []
    page.close()
