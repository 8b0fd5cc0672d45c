"""The evaluation report (report.html) of a demo-sized evaluation in headless Chromium.

The report is built the way ``flawmap evaluate`` builds it (:func:`write_evaluation`) from
PatchCore (the demo's EfficientNet-Lite0 weights where installed) on a synthetic MVTec-layout
category about the size of the demo's test set: a couple of hundred test images, bold "spot"
defects and faint, small ones (some of which the model misses). The page is opened as a
``file://`` URL with every other request blocked: it must load nothing from anywhere, raise no
error, and render every section, figure and image.

Screenshots of the whole page and of each section go to the test's tmp_path; when
``FLAWMAP_SCREENSHOT_OUT`` names a folder they are also copied there as
``report-<section id>.png`` (``report-header.png`` for the title and notes): the README's
pictures of the report are made with ``FLAWMAP_SCREENSHOT_OUT=docs``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from flawmap.data import MVTecDataset
from flawmap.demo import N_SHOWN
from flawmap.evaluation import evaluate, write_evaluation
from flawmap.models import create_model
from tests.synthetic import SIZE, lite0_weights_installed, textured_image, write_mvtec_category

pytestmark = pytest.mark.slow

#: The report's sections: (id, heading), in page order.
SECTIONS = [
    ("model", "Model"),
    ("metrics", "Metrics"),
    ("score-distributions", "Score distributions"),
    ("curves", "Curves"),
    ("decisions-at-the-threshold", "Decisions at the threshold"),
    ("missed-defects", "Missed defects"),
    ("false-alarms", "False alarms"),
    ("most-anomalous-images", "Most anomalous images"),
    ("configuration", "Configuration"),
]
GALLERIES = ("missed-defects", "false-alarms", "most-anomalous-images")
#: The figures of a test set with masks, of a model with held-out training scores.
FIGURES = {"scores_test", "scores_holdout", "roc", "precision_recall", "pro"}
#: Sized like the demo's test set (a few hundred cells), small enough for a CPU test.
N_TRAIN, N_GOOD, N_SPOT, N_FAINT = 40, 120, 80, 20
#: The demo's ImageNet weights where their (offline) package is installed: their anomaly maps
#: find the planted defects, as the README's pictures should show; random ones elsewhere.
WEIGHTS = "pretrained" if lite0_weights_installed() else "random"
VIEWPORT = {"width": 1100, "height": 900}
#: Pixels of page around each section's screenshot.
MARGIN = 16
#: An element's box in page (not viewport) coordinates.
PAGE_BOX = """(element) => {
  const r = element.getBoundingClientRect();
  return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height};
}"""
#: Every <img> of the page has been decoded.
IMAGES_DECODED = """() => [...document.images].map((img) => ({
  complete: img.complete, width: img.naturalWidth, src: img.src.slice(0, 22)
}))"""


def _write_faint_defects(root: Path, n: int, seed: int) -> None:
    """A second defect type: small, low-contrast bright patches (with masks), hard to detect."""
    rng = np.random.default_rng(seed)
    (root / "test/faint").mkdir()
    (root / "ground_truth/faint").mkdir()
    for i in range(n):
        image = textured_image(rng).astype(np.int16)
        box = int(rng.integers(2, 6))
        top, left = rng.integers(8, SIZE - box - 8, size=2)
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        mask[top : top + box, left : left + box] = True
        image[mask] += int(rng.integers(20, 70))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            root / "test/faint" / f"{i:03d}.png"
        )
        Image.fromarray((mask * 255).astype(np.uint8)).save(
            root / "ground_truth/faint" / f"{i:03d}_mask.png"
        )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``report.html`` of PatchCore evaluated on a demo-sized synthetic category."""
    data = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(data)  # the model card names the data "widget", not a temporary folder
        root = write_mvtec_category(
            Path("widget"), n_train=N_TRAIN, n_test_good=N_GOOD, n_test_bad=N_SPOT, seed=0
        )
        _write_faint_defects(root, N_FAINT, seed=1)
        detector = create_model(
            "patchcore", image_size=SIZE, weights=WEIGHTS, coreset_ratio=0.2, threshold_holdout=0.25
        )
        detector.fit(MVTecDataset(root, "train", transform=detector.transform))
        test = MVTecDataset(root, "test", transform=detector.transform)
        assert len(test) == N_GOOD + N_SPOT + N_FAINT
        result = evaluate(detector, test, latency_runs=2)
        write_evaluation(result, detector, out, "PatchCore on widget", N_SHOWN)
    return out / "report.html"


@dataclass
class Opened:
    """The report open in a tab, with what it tried to fetch and the errors it raised."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def opened(browser: Any, report: Path) -> Iterator[Opened]:
    """The report as a file:// URL in a tab that can reach no network: every request that is
    not for a file: or data: URL is recorded and aborted."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Opened(page)

    def route(route: Any) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            tab.requests.append(route.request.url)
            route.abort()

    def on_request(request: Any) -> None:
        url = request.url
        if not url.startswith(("file:", "data:")) and url not in tab.requests:
            tab.requests.append(url)

    def on_console(message: Any) -> None:
        if message.type == "error":
            tab.errors.append(f"console: {message.text}")

    context.route("**/*", route)
    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
    page.goto(report.as_uri(), wait_until="load")
    yield tab
    context.close()


def test_report_opens_with_no_network_and_no_errors(opened: Opened) -> None:
    page = opened.page
    assert page.title() == "PatchCore on widget"
    assert page.evaluate("() => document.readyState") == "complete"
    assert not opened.requests, f"the report tried to fetch: {opened.requests}"
    assert not opened.errors, f"the report raised: {opened.errors}"


def test_report_renders_every_section_figure_and_image(opened: Opened) -> None:
    from playwright.sync_api import expect

    page = opened.page
    ids = page.eval_on_selector_all("section", "sections => sections.map((s) => s.id)")
    assert ids == [anchor for anchor, _ in SECTIONS]
    for anchor, heading in SECTIONS:
        title = page.locator(f"section#{anchor} > h2")
        expect(title).to_be_visible()
        expect(title).to_have_text(heading)
        expect(page.locator(f'nav.toc a[href="#{anchor}"]')).to_be_visible()

    figures = page.locator("figure.plot")
    names = {figures.nth(i).get_attribute("data-figure") for i in range(figures.count())}
    assert names == FIGURES
    for i in range(figures.count()):
        svg = figures.nth(i).locator("svg")
        expect(svg).to_be_visible()
        box = svg.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50, box
        # the figure draws something: axes, bars or curves
        assert svg.locator("path, line, rect, polyline").count() > 3

    images = page.evaluate(IMAGES_DECODED)
    assert images, "the report shows no image"
    for image in images:
        assert image["src"] == "data:image/png;base64,", image
        assert image["complete"] and image["width"] > 0, image

    for anchor in GALLERIES:
        section = page.locator(f"section#{anchor}")
        cards = section.locator("figure.card")
        if cards.count() == 0:  # a gallery with nothing to show says why
            expect(section.locator("p.empty")).to_be_visible()
            continue
        assert cards.count() <= N_SHOWN
        for i in range(cards.count()):
            card = cards.nth(i)
            expect(card.locator("img")).to_be_visible()
            box = card.locator("img").bounding_box()
            assert box is not None and box["width"] > 50 and box["height"] > 50, box
            expect(card.locator("figcaption")).to_contain_text("score")
    top = page.locator("section#most-anomalous-images figure.card")
    expect(top).to_have_count(N_SHOWN)

    config = page.locator("section#configuration details")
    expect(config.locator("pre")).to_be_hidden()
    config.locator("summary").click()
    expect(config.locator("pre")).to_contain_text('"model": "patchcore"')

    assert not opened.requests, f"the report tried to fetch: {opened.requests}"
    assert not opened.errors, f"the report raised: {opened.errors}"


def test_report_screenshots(opened: Opened, tmp_path: Path) -> None:
    """The whole page and each section, as pictures (copied for the README on request)."""
    page = opened.page
    shots = {"report": tmp_path / "report.png"}
    page.screenshot(path=shots["report"], full_page=True)
    # the title, the notes and the table of contents: everything above the first section
    first = page.eval_on_selector("section", PAGE_BOX)
    shots["report-header"] = tmp_path / "report-header.png"
    page.screenshot(
        path=shots["report-header"],
        clip={
            "x": first["x"] - MARGIN,
            "y": MARGIN,
            "width": first["width"] + 2 * MARGIN,
            "height": first["y"] - 2 * MARGIN,
        },
        full_page=True,
    )
    for anchor, _ in SECTIONS:
        # the section with a margin of page around it (the body's margin is wider)
        box = page.eval_on_selector(f"section#{anchor}", PAGE_BOX)
        clip = {
            "x": box["x"] - MARGIN,
            "y": box["y"] - MARGIN,
            "width": box["width"] + 2 * MARGIN,
            "height": box["height"] + 2 * MARGIN,
        }
        shots[f"report-{anchor}"] = tmp_path / f"report-{anchor}.png"
        page.screenshot(path=shots[f"report-{anchor}"], clip=clip, full_page=True)
    for name, path in shots.items():
        with Image.open(path) as picture:
            width, height = picture.size
            colours = picture.convert("L").getextrema()
        assert width > 200 and height > 40, (name, picture.size)
        assert colours[0] < colours[1], f"{name} is blank"
    assert not opened.requests, f"the report tried to fetch: {opened.requests}"
    assert not opened.errors, f"the report raised: {opened.errors}"

    if target := os.environ.get("FLAWMAP_SCREENSHOT_OUT"):
        folder = Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in shots.items():
            if name != "report":  # the full page is long: the sections tell the same
                shutil.copyfile(path, folder / f"{name}.png")
