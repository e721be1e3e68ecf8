"""The slice viewer: grouping, the mask encoding, the page's controls, and the page driven in headless Chromium.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` and the ``selenium``
package (``.ci/run`` installs the browser); they skip, saying which is missing, only where
the browser cannot be found or started, and fail instead when FLEXUNET_REQUIRE_BROWSER=1
(set by ``.ci/run`` once the browser is installed).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from flexunet.model.metrics import image_scores
from flexunet.report.viewer import (FALSE_NEGATIVE, FALSE_POSITIVE, ViewerSlice, group_slices, label_png,
                                    viewer_group_html, viewer_page_parts)

CLASSES = ("background", "bright", "dark")


def write_viewer_page(path: Path, groups: dict[str, list[ViewerSlice]], notes: dict[str, str] | None = None) -> Path:
    """A page of viewers built as the report's viewer section is (images in ``<path stem>_files/g<i>/``)."""
    files = f"{path.stem}_files"
    parts = [viewer_group_html(i, name, slices, CLASSES, path.parent / files / f"g{i}", f"{files}/g{i}",
                               (notes or {}).get(name))
             for i, (name, slices) in enumerate(groups.items())]
    extra = next((k for s in groups.values() for x in s for k in x.layers), None)
    path.write_text(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>slices</title></head>'
                    f"<body>{viewer_page_parts(parts, CLASSES, extra)}</body></html>\n", encoding="utf-8")
    return path


def _slices(n: int = 6, size: int = 32, seed: int = 0) -> list[ViewerSlice]:
    """Slices with a square of class 1 growing with k and a prediction shifted by 1 or 2 pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        truth = np.zeros((size, size), np.uint8)
        truth[4:8 + 2 * k, 4:8 + 2 * k] = 1
        truth[20:26, 20:26] = 2 if k % 2 else 0
        pred = np.roll(truth, 1 + k % 2, axis=1)
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        dice = image_scores(truth, pred, 3)["dice"]
        out.append(ViewerSlice(f"p1_{k:03d}.png", image, truth, pred,
                               {n: float(dice[c]) for c, n in enumerate(CLASSES) if c > 0}))
    return out


def test_group_slices_by_name_prefix_then_runs():
    kind, groups = group_slices(["p2_010.png", "p1_2.png", "p1_10.png", "p2_001.png"])
    assert kind == "name" and groups == {"p1": ["p1_2.png", "p1_10.png"], "p2": ["p2_001.png", "p2_010.png"]}
    kind, groups = group_slices([f"{10000 + i}.png" for i in range(5)], chunk=2)
    assert kind == "run" and list(groups.values()) == [["10000.png", "10001.png"], ["10002.png", "10003.png"],
                                                       ["10004.png"]]


def test_group_slices_by_patient_from_the_manifest(tmp_path):
    master = tmp_path / "master"
    master.mkdir()
    items = [{"image": f"images/{n}.png", "group": g, "group_kind": "patient", "instance_number": i}
             for n, g, i in (("10001", "A", 3), ("10002", "B", 1), ("10003", "A", 1), ("10004", "A", 2))]
    (master / "manifest.json").write_text(json.dumps({"items": items}))
    split = tmp_path / "split" / "Stroke"
    (split / "test" / "images").mkdir(parents=True)
    (split / "split.json").write_text(json.dumps({"master_dir": str(master)}))
    names = ["10001.png", "10002.png", "10003.png", "10004.png"]
    kind, groups = group_slices(names, split / "test" / "images")
    assert kind == "patient" and groups == {"A": ["10003.png", "10004.png", "10001.png"], "B": ["10002.png"]}


def test_label_png_holds_truth_prediction_and_layer():
    from PIL import Image

    truth = np.array([[0, 1], [2, 0]], np.uint8)
    pred = np.array([[1, 1], [0, 2]], np.uint8)
    rgb = np.asarray(Image.open(io.BytesIO(label_png(truth, pred, np.array([[0, 0.5], [1, 2.0]])))))
    assert rgb[..., 0].tolist() == truth.tolist() and rgb[..., 1].tolist() == pred.tolist()
    assert rgb[..., 2].tolist() == [[0, 128], [255, 255]]
    with pytest.raises(ValueError):
        label_png(truth, pred[:1])


class Controls(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.inputs: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.open_labels = 0
        self.srcs: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.srcs += [a[k] for k in ("src", "href") if k in a]
        if tag == "label":
            self.open_labels += 1
            if "for" in a:
                self.label_for.add(a["for"])
        if tag == "input":
            self.inputs.append({**a, "wrapped": str(self.open_labels > 0)})

    def handle_endtag(self, tag):
        if tag == "label":
            self.open_labels -= 1


def test_page_controls_are_labelled_and_nothing_is_fetched(tmp_path):
    page = write_viewer_page(tmp_path / "viewer.html", {"p1": _slices(3)})
    text = page.read_text()
    parsed = Controls(text)
    kinds = [(i.get("type"), i.get("class")) for i in parsed.inputs]
    assert ("range", "fv-slider") in kinds and ("range", "fv-opacity") in kinds
    assert sum(1 for i in parsed.inputs if i.get("class") == "fv-class") == 2
    for i in parsed.inputs:                       # every control has a label
        assert i["wrapped"] == "True" or i.get("id") in parsed.label_for, i
    assert not parsed.srcs                        # images are set by the script, from files beside the page
    images = sorted((tmp_path / "viewer_files" / "g0").iterdir())
    assert [p.name for p in images] == ["0000_p1_000.png", "0001_p1_001.png", "0002_p1_002.png"]
    assert FALSE_POSITIVE in text and FALSE_NEGATIVE in text and "false negative" in text
    assert "http://" not in text and "https://" not in text


# --------------------------------------------------------------------------- the browser


def _no_browser(reason: str) -> None:
    """Skip, unless .ci/run found the browser installed (FLEXUNET_REQUIRE_BROWSER=1): then it is a failure."""
    if os.environ.get("FLEXUNET_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but FLEXUNET_REQUIRE_BROWSER=1 says the browser is installed")
    pytest.skip(reason)


def _chromium():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _no_browser("selenium is not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        _no_browser("no chromium / chromedriver on PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as exc:   # noqa: BLE001 - any failure to start the browser is a reason to skip
        _no_browser(f"chromium did not start: {str(exc).splitlines()[0]}")


@pytest.fixture(scope="module")
def browser():
    driver = _chromium()
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def overlay_pixels(driver, viewer) -> list[int]:
    """The overlay canvas' RGBA bytes (the canvas holds only data: images, so it can be read back)."""
    return driver.execute_script(
        "var c = arguments[0].querySelector('canvas.fv-overlay');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", viewer)


def wait_drawn(driver, viewer, k: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: viewer.get_attribute("data-drawn") == str(k))


def shown_dice(viewer) -> dict[str, float | None]:
    from selenium.webdriver.common.by import By

    return {c.get_attribute("data-class"): json.loads(c.get_attribute("data-value"))
            for c in viewer.find_elements(By.CSS_SELECTOR, ".fv-dice")}


def check_slice(viewer, k: int, expected: ViewerSlice, count: int) -> None:
    from selenium.webdriver.common.by import By

    assert viewer.find_element(By.CSS_SELECTOR, ".fv-index").text == f"{k} / {count}"
    assert viewer.find_element(By.CSS_SELECTOR, ".fv-name").text == expected.name
    for name, value in shown_dice(viewer).items():
        want = expected.dice[name]
        assert (value is None and np.isnan(want)) or value == pytest.approx(want, abs=1e-9), name


def test_browser_scrolls_toggles_and_draws(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slices = _slices(6)
    page = write_viewer_page(tmp_path / "viewer.html", {"p1": slices})
    browser.get(page.as_uri())
    viewer = browser.find_element(By.CSS_SELECTOR, "div.fv-viewer")
    wait_drawn(browser, viewer, 1)
    check_slice(viewer, 1, slices[0], 6)
    # every control is reached with Tab, in page order from the view, and a check box toggles with Space
    controls = viewer.find_elements(By.CSS_SELECTOR, ".fv-stage, button, input")
    assert len(controls) == 1 + 2 + 1 + 3 + 2 + 1          # view, prev/next, slider, 3 layers, 2 classes, opacity
    browser.execute_script("arguments[0].focus();", controls[0])
    reached = []
    for _ in controls:
        reached.append(browser.switch_to.active_element)
        ActionChains(browser).send_keys(Keys.TAB).perform()
    assert reached == controls
    box = viewer.find_element(By.CSS_SELECTOR, '.fv-class[data-class="1"]')
    box.send_keys(Keys.SPACE)
    assert not box.is_selected()
    box.send_keys(Keys.SPACE)
    assert box.is_selected()
    # keyboard: the slider takes the focus and arrow keys move it
    slider = viewer.find_element(By.CSS_SELECTOR, ".fv-slider")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait_drawn(browser, viewer, 4)
    check_slice(viewer, 4, slices[3], 6)
    # the view itself: focus it, End / arrow keys
    stage = viewer.find_element(By.CSS_SELECTOR, ".fv-stage")
    stage.send_keys(Keys.END)
    wait_drawn(browser, viewer, 6)
    stage.send_keys(Keys.ARROW_UP)
    wait_drawn(browser, viewer, 5)
    check_slice(viewer, 5, slices[4], 6)
    # the slider set by the mouse: value + input event; the wheel over the view
    browser.execute_script("arguments[0].value = 3; arguments[0].dispatchEvent(new Event('input'));", slider)
    wait_drawn(browser, viewer, 3)
    check_slice(viewer, 3, slices[2], 6)
    browser.execute_script("arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: 100, bubbles: true,"
                           " cancelable: true}));", stage)
    wait_drawn(browser, viewer, 4)
    check_slice(viewer, 4, slices[3], 6)
    assert viewer.find_element(By.CSS_SELECTOR, ".fv-image").get_attribute("src").endswith("0003_p1_003.png")
    # slice 4 holds both classes: hiding "dark" removes its pixels, then "bright" too leaves nothing drawn
    before = np.array(overlay_pixels(browser, viewer)).reshape(32, 32, 4)
    assert (before[..., 3] > 0).sum() > 0
    viewer.find_element(By.CSS_SELECTOR, '.fv-class[data-class="2"]').click()
    after = np.array(overlay_pixels(browser, viewer)).reshape(32, 32, 4)
    truth, pred = slices[3].truth, slices[3].pred
    dark = (truth == 2) | (pred == 2)
    assert (before[dark, 3] > 0).any() and not (after[dark, 3] > 0).any()
    assert np.array_equal(before[~dark], after[~dark])
    viewer.find_element(By.CSS_SELECTOR, '.fv-class[data-class="1"]').click()
    assert not (np.array(overlay_pixels(browser, viewer)).reshape(32, 32, 4)[..., 3] > 0).any()
    viewer.find_element(By.CSS_SELECTOR, '.fv-class[data-class="1"]').click()
    # difference: false positives in vermillion, false negatives in blue, where the masks say
    viewer.find_element(By.CSS_SELECTOR, '.fv-layer[data-layer="diff"]').click()
    diff = np.array(overlay_pixels(browser, viewer)).reshape(32, 32, 4)[..., :3]
    fp, fn = (pred == 1) & (truth != 1), (truth == 1) & (pred != 1)
    assert fp.any() and fn.any()
    assert (diff[fp] == [0xD5, 0x5E, 0x00]).all() and (diff[fn] == [0x00, 0x72, 0xB2]).all()
    assert console_errors(browser) == []
    shot = tmp_path / "viewer.png"
    viewer.screenshot(str(shot))
    assert shot.stat().st_size > 1000
    print(f"viewer screenshot: {shot}")


def test_browser_shows_the_uncertainty_layer_when_given(browser, tmp_path):
    from selenium.webdriver.common.by import By

    base = _slices(2)
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    slices = [ViewerSlice(s.name, s.image, s.truth, s.pred, s.dice, {"uncertainty": ramp}) for s in base]
    page = write_viewer_page(tmp_path / "viewer.html", {"p1": slices}, notes={"p1": "volume bright 12 ml"})
    browser.get(page.as_uri())
    viewer = browser.find_element(By.CSS_SELECTOR, "div.fv-viewer")
    wait_drawn(browser, viewer, 1)
    assert "volume bright 12 ml" in viewer.text
    for box in viewer.find_elements(By.CSS_SELECTOR, ".fv-layer:checked"):
        box.click()                                          # nothing drawn ...
    assert not (np.array(overlay_pixels(browser, viewer)).reshape(32, 32, 4)[..., 3] > 0).any()
    viewer.find_element(By.CSS_SELECTOR, '.fv-layer[data-layer="extra"]').click()   # ... but the layer
    alpha = np.array(overlay_pixels(browser, viewer)).reshape(32, 32, 4)[..., 3]
    assert alpha[:, 0].max() == 0 and alpha[:, -1].min() == 255 and (np.diff(alpha[0].astype(int)) >= 0).all()
    assert console_errors(browser) == []
