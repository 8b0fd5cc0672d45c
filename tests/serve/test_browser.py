"""The `flawmap serve` inspection page in a real headless browser.

Debian's Chromium driven by Playwright (the ``browser`` fixture of tests/conftest.py). Each test
starts a real ``flawmap serve`` process over a PatchCore model fitted on MVTec AD bottle images
and works the page the way an inspector would: upload, read the decisions, move and save the
threshold, review, export, sign in with a token.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Milliseconds to wait for predictions (the first one also warms the model up on the CPU).
PREDICT_TIMEOUT = 60_000
#: Every image <img> of the shown rows has loaded (they come as blobs through object URLs).
IMAGES_LOADED = """() => {
  const images = [...document.querySelectorAll('[data-testid="result-row"] img')];
  return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}"""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser tab (own sessionStorage) that must raise no script error and must not
    reach beyond the service (factories are offline: no CDN, no external URL)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    script_errors: list[str] = []
    outside: list[str] = []

    def check_request(request: Any) -> None:
        if not request.url.startswith(("http://127.0.0.1:", "blob:", "data:")):
            outside.append(request.url)

    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("request", check_request)
    yield page
    context.close()
    assert not script_errors, f"the page raised: {script_errors}"
    assert not outside, f"the page requested URLs outside the service: {outside}"


def _api(server: Any, path: str) -> Any:
    """GET a JSON endpoint of the service (with the server's token when it has one)."""
    with server.client() as client:
        return client.get(path).raise_for_status().json()


def _payload(path: Path, name: str) -> dict[str, Any]:
    """A file for set_input_files under an upload name of our own (MVTec names repeat)."""
    return {"name": name, "mimeType": "image/png", "buffer": path.read_bytes()}


def _upload_bottles(page: Any, images: dict[str, Path]) -> dict[str, Any]:
    """Upload the good and the defective bottle; return their result rows by kind."""
    from playwright.sync_api import expect

    page.get_by_test_id("file-input").set_input_files(
        [_payload(images["good"], "good.png"), _payload(images["defective"], "defective.png")]
    )
    expect(page.get_by_test_id("result-row")).to_have_count(2, timeout=PREDICT_TIMEOUT)
    expect(page.get_by_test_id("busy")).to_be_hidden(timeout=PREDICT_TIMEOUT)
    return {
        kind: page.locator(f'[data-testid="result-row"][data-filename="{kind}.png"]')
        for kind in ("good", "defective")
    }


def _open(page: Any, server: Any) -> str:
    """Load the page and wait for the model list; return the (only) model's name."""
    from playwright.sync_api import expect

    (name,) = [card["name"] for card in _api(server, "/v1/models")["models"]]
    page.goto(server.url + "/")
    expect(page.get_by_test_id("model-select")).to_have_value(name)
    return name


def test_page_labels_the_good_and_the_defective_bottle(
    page: Any, server_factory: Any, bottle_model: Path, bottle_images: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from playwright.sync_api import expect

    server = server_factory([bottle_model], tmp_path / "data")
    name = _open(page, server)
    card = page.get_by_test_id("model-card")
    expect(card).to_contain_text(name)
    expect(card).to_contain_text("patchcore")

    rows = _upload_bottles(page, bottle_images)
    expect(rows["good"]).to_have_attribute("data-label", "good")
    expect(rows["defective"]).to_have_attribute("data-label", "defective")
    expect(rows["good"].get_by_test_id("result-label")).to_have_text("good")
    expect(rows["defective"].get_by_test_id("result-label")).to_have_text("defective")
    expect(page.get_by_test_id("error")).to_have_count(0)
    # Newest first: the defective image was uploaded second.
    expect(page.get_by_test_id("result-row").first).to_have_attribute(
        "data-filename", "defective.png"
    )
    # What the page shows is what the service stored.
    for kind, row in rows.items():
        stored = _api(server, f"/v1/results/{row.get_attribute('data-result-id')}")
        assert stored["filename"] == f"{kind}.png" and stored["label"] == kind
        shown = float(row.get_by_test_id("result-score").inner_text())
        assert shown == pytest.approx(stored["score"], rel=1e-3)

    page.wait_for_function(IMAGES_LOADED)
    page.screenshot(path=tmp_path / "page.png", full_page=True)
    if target := os.environ.get("FLAWMAP_SCREENSHOT_OUT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "page.png", target)

    # Client-side filter on the shown decision.
    page.get_by_test_id("filter").select_option("defective")
    expect(rows["good"]).to_be_hidden()
    expect(rows["defective"]).to_be_visible()
    page.get_by_test_id("filter").select_option("all")
    expect(rows["good"]).to_be_visible()

    # History survives a reload: the stored results of the model come back.
    page.reload()
    expect(page.get_by_test_id("result-row")).to_have_count(2)
    expect(rows["defective"]).to_have_attribute("data-label", "defective")


def test_threshold_slider_relabels_and_saves(
    page: Any, server_factory: Any, bottle_model: Path, bottle_images: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from playwright.sync_api import expect

    server = server_factory([bottle_model], tmp_path / "data")
    name = _open(page, server)
    rows = _upload_bottles(page, bottle_images)
    score = {
        kind: _api(server, f"/v1/results/{row.get_attribute('data-result-id')}")["score"]
        for kind, row in rows.items()
    }
    assert score["defective"] > score["good"]

    # Halfway between the defective score and the slider's top: above both scores.
    slider = page.get_by_test_id("threshold-slider")
    top = float(slider.get_attribute("max"))
    assert top > score["defective"], "the slider's range must span the shown scores"
    slider.fill(str((score["defective"] + top) / 2))
    value = float(slider.input_value())
    assert value > score["defective"]
    shown = float(page.get_by_test_id("threshold-value").inner_text())
    assert shown == pytest.approx(value, rel=1e-4)
    expect(rows["defective"]).to_have_attribute("data-label", "good")
    expect(rows["defective"].get_by_test_id("result-label")).to_have_text("good")
    changed = re.compile(r"\bchanged\b")  # rows whose shown label differs from the stored one
    expect(rows["defective"]).to_have_class(changed)
    expect(rows["defective"].get_by_test_id("result-stored")).to_contain_text("defective")
    expect(rows["good"]).to_have_attribute("data-label", "good")
    expect(rows["good"]).not_to_have_class(changed)
    assert _api(server, f"/v1/models/{name}")["threshold"] != pytest.approx(value)  # not saved yet

    page.get_by_test_id("save-threshold").click()
    page.get_by_test_id("save-threshold-confirm").click()
    expect(page.get_by_test_id("threshold-saved")).to_contain_text("→")
    assert _api(server, f"/v1/models/{name}")["threshold"] == pytest.approx(value, rel=1e-9)
    (change,) = _api(server, f"/v1/models/{name}/threshold-history")["changes"]
    assert change["new"] == pytest.approx(value, rel=1e-9)
    expect(page.get_by_test_id("threshold-history").locator("li")).to_have_count(1)


def test_review_is_stored_and_exported(
    page: Any, server_factory: Any, bottle_model: Path, bottle_images: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from playwright.sync_api import expect

    server = server_factory([bottle_model], tmp_path / "data")
    _open(page, server)
    rows = _upload_bottles(page, bottle_images)
    defective_id = rows["defective"].get_attribute("data-result-id")
    good_id = rows["good"].get_attribute("data-result-id")

    expect(rows["defective"].get_by_test_id("result-review")).to_have_text("Not reviewed")
    rows["defective"].get_by_test_id("review-good").click()
    expect(rows["defective"].get_by_test_id("result-review")).to_contain_text("Reviewed: good")
    assert _api(server, f"/v1/results/{defective_id}")["review"] == "good"

    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    by_id = {row["id"]: row for row in csv.DictReader(exported.splitlines())}
    assert by_id[defective_id]["review"] == "good"
    assert by_id[defective_id]["label"] == "defective"  # the model's decision is kept
    assert by_id[good_id]["review"] == ""

    page.reload()  # the stored review is shown on the stored result
    expect(rows["defective"].get_by_test_id("result-review")).to_contain_text("Reviewed: good")


def test_token_form_signs_in(
    page: Any, server_factory: Any, bottle_model: Path, bottle_images: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from playwright.sync_api import expect

    server = server_factory([bottle_model], tmp_path / "data", token="page-test-token-7f3a")
    (name,) = [card["name"] for card in _api(server, "/v1/models")["models"]]
    page.goto(server.url + "/")
    token_input = page.get_by_test_id("token-input")
    expect(token_input).to_be_visible()
    expect(page.get_by_test_id("model-select")).to_be_hidden()

    token_input.fill("not-the-token")
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("token-error")).to_be_visible()
    expect(token_input).to_be_visible()
    expect(page.get_by_test_id("model-select")).to_be_hidden()

    token_input.fill(server.token)
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("model-select")).to_have_value(name)
    expect(token_input).to_be_hidden()

    # With the token: one good image and one unreadable file, each its own request.
    page.get_by_test_id("file-input").set_input_files(
        [
            _payload(bottle_images["good"], "good.png"),
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"},
        ]
    )
    expect(page.get_by_test_id("result-row")).to_have_count(1, timeout=PREDICT_TIMEOUT)
    expect(page.get_by_test_id("error")).to_have_count(1, timeout=PREDICT_TIMEOUT)
    expect(page.get_by_test_id("error")).to_contain_text("notes.txt")
    page.wait_for_function(IMAGES_LOADED)  # images fetched with the header too

    page.reload()  # the token stays for this tab
    expect(page.get_by_test_id("model-select")).to_have_value(name)
    expect(page.get_by_test_id("result-row")).to_have_count(1)
