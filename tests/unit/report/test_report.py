"""Unit tests for flawmap.report (overlays, tables, HTML and Markdown documents); small arrays."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawmap.errors import ConfigError, DataError
from flawmap.report import (
    GT_COLOR,
    THRESHOLD_COLOR,
    colorize,
    colormap_lut,
    decision_range,
    heatmap_overlay,
    metrics_table,
    save_float_tiff,
    save_png,
    side_by_side,
    to_uint8_image,
)
from flawmap.report.document import (
    Card,
    Code,
    Document,
    Figure,
    Gallery,
    Paragraph,
    Section,
    Table,
    render_html,
    write_report,
)

WHITE = np.array(THRESHOLD_COLOR, dtype=np.uint8)
GREEN = np.array(GT_COLOR, dtype=np.uint8)


def _square_map(size: int = 40, lo: int = 10, hi: int = 20) -> np.ndarray:
    amap = np.zeros((size, size), dtype=np.float64)
    amap[lo:hi, lo:hi] = 1.0
    return amap


def _dark_image(size: int = 40) -> np.ndarray:
    return np.full((size, size, 3), 30, dtype=np.uint8)


# --------------------------------------------------------------------------- colorize


@pytest.mark.parametrize("name", ["jet", "inferno"])
def test_lut_shape_and_dtype(name: str) -> None:
    lut = colormap_lut(name)
    assert lut.shape == (256, 3)
    assert lut.dtype == np.uint8
    assert not lut.flags.writeable


def test_lut_known_endpoints() -> None:
    assert colormap_lut("jet")[0].tolist() == [0, 0, 128]
    assert colormap_lut("jet")[-1].tolist() == [128, 0, 0]
    assert colormap_lut("inferno")[0].tolist() == [0, 0, 4]
    assert colormap_lut("inferno")[-1].tolist() == [252, 255, 164]


@pytest.mark.parametrize("name", ["jet", "inferno"])
def test_colorize_endpoints_and_clipping(name: str) -> None:
    lut = colormap_lut(name)
    amap = np.array([[2.0, 5.0, -100.0, 100.0]])
    out = colorize(amap, vmin=2.0, vmax=5.0, colormap=name)
    assert out.shape == (1, 4, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], lut[0])  # vmin -> first colour
    np.testing.assert_array_equal(out[0, 1], lut[-1])  # vmax -> last colour
    np.testing.assert_array_equal(out[0, 2], lut[0])  # below vmin clipped
    np.testing.assert_array_equal(out[0, 3], lut[-1])  # above vmax clipped


def test_colorize_midpoint_and_monotone_index() -> None:
    lut = colormap_lut("jet")
    amap = np.linspace(0.0, 1.0, 256)[None, :]
    out = colorize(amap, 0.0, 1.0)
    np.testing.assert_array_equal(out[0], lut)  # one sample per LUT entry
    np.testing.assert_array_equal(colorize(np.array([[0.5]]), 0.0, 1.0)[0, 0], lut[128])


@pytest.mark.parametrize(("vmin", "vmax"), [(1.0, 1.0), (2.0, 1.0), (0.0, float("nan"))])
def test_colorize_rejects_bad_range(vmin: float, vmax: float) -> None:
    with pytest.raises(ConfigError):
        colorize(np.zeros((2, 2)), vmin, vmax)


def test_colorize_rejects_unknown_colormap_and_nan() -> None:
    with pytest.raises(ConfigError, match="colormap"):
        colorize(np.zeros((2, 2)), 0.0, 1.0, colormap="rainbow")
    with pytest.raises(DataError, match="NaN"):
        colorize(np.array([[0.0, np.nan]]), 0.0, 1.0)
    with pytest.raises(DataError):
        colorize(np.zeros((2, 2, 3)), 0.0, 1.0)


# --------------------------------------------------------------------------- overlay


def test_overlay_shape_dtype_and_blend() -> None:
    image = _dark_image()
    amap = _square_map()
    out = heatmap_overlay(image, amap, 0.0, 1.0, alpha=0.5)
    assert out.shape == (40, 40, 3)
    assert out.dtype == np.uint8
    expected = np.rint(0.5 * 30 + 0.5 * colormap_lut("jet")[0].astype(float))
    np.testing.assert_array_equal(out[0, 0], expected.astype(np.uint8))
    np.testing.assert_array_equal(heatmap_overlay(image, amap, 0.0, 1.0, alpha=0.0), image)


def test_overlay_threshold_contour_white_on_edge_only() -> None:
    out = heatmap_overlay(_dark_image(), _square_map(), 0.0, 1.0, threshold=0.5)
    for y, x in [(10, 15), (19, 15), (15, 10), (15, 19), (10, 10), (19, 19)]:
        np.testing.assert_array_equal(out[y, x], WHITE, err_msg=f"edge pixel {(y, x)}")
    for y, x in [(15, 15), (11, 11), (18, 18), (9, 15), (20, 15), (0, 0)]:
        assert not np.array_equal(out[y, x], WHITE), f"pixel {(y, x)} should not be white"
    # the outline is 1 px wide and exactly the square's boundary
    white = np.all(out == WHITE, axis=2)
    assert white.sum() == 4 * 10 - 4


def test_overlay_no_contour_without_threshold_or_when_nothing_exceeds() -> None:
    amap = _square_map()
    assert not np.all(heatmap_overlay(_dark_image(), amap, 0.0, 1.0) == WHITE, axis=2).any()
    out = heatmap_overlay(_dark_image(), amap, 0.0, 1.0, threshold=2.0)
    assert not np.all(out == WHITE, axis=2).any()


def test_overlay_resizes_map_to_image() -> None:
    amap = np.zeros((10, 10))
    amap[3:7, 3:7] = 1.0
    out = heatmap_overlay(_dark_image(40), amap, 0.0, 1.0, threshold=0.5)
    assert out.shape == (40, 40, 3)
    white = np.all(out == WHITE, axis=2)
    assert white.any()
    assert not white[20, 20]  # centre of the upscaled square is inside, not on the edge
    assert not white[0:8].any()  # far from the square


def test_overlay_gt_contour_green() -> None:
    gt = np.zeros((40, 40), dtype=bool)
    gt[25:35, 25:35] = True
    out = heatmap_overlay(_dark_image(), _square_map(), 0.0, 1.0, threshold=0.5, gt_mask=gt)
    np.testing.assert_array_equal(out[25, 30], GREEN)
    np.testing.assert_array_equal(out[34, 30], GREEN)
    assert not np.array_equal(out[30, 30], GREEN)
    assert not np.array_equal(out[24, 30], GREEN)
    np.testing.assert_array_equal(out[10, 15], WHITE)  # threshold outline still there


def test_overlay_gt_mask_at_map_resolution() -> None:
    gt = np.zeros((10, 10), dtype=bool)
    gt[5:10, 5:10] = True
    out = heatmap_overlay(_dark_image(40), np.zeros((10, 10)), 0.0, 1.0, gt_mask=gt)
    green = np.all(out == GREEN, axis=2)
    assert green[20, 30] and green[39, 30]  # top edge and image-border edge
    assert not green[30, 30]


def test_overlay_input_errors() -> None:
    image, amap = _dark_image(), _square_map()
    with pytest.raises(ConfigError):
        heatmap_overlay(image, amap, 1.0, 1.0)
    with pytest.raises(ConfigError):
        heatmap_overlay(image, amap, 0.0, 1.0, alpha=1.5)
    with pytest.raises(DataError):
        heatmap_overlay(image.astype(np.float32), amap, 0.0, 1.0)
    with pytest.raises(DataError):
        heatmap_overlay(image, amap, 0.0, 1.0, gt_mask=np.zeros((7, 7), dtype=bool))


# --------------------------------------------------------------------------- panels, files


def test_side_by_side_shapes() -> None:
    a = np.zeros((20, 30, 3), dtype=np.uint8)
    b = np.zeros((25, 10, 3), dtype=np.uint8)
    plain = side_by_side([a, b])
    assert plain.dtype == np.uint8
    assert plain.shape == (25, 30 + 4 + 10, 3)
    titled = side_by_side([a, b], titles=["image", "anomaly map (very long title)"])
    assert titled.shape[1] == 44
    band = titled.shape[0] - 25
    assert band > 5
    assert (titled[:band, :30] < 128).any()  # title text drawn above the first panel
    np.testing.assert_array_equal(titled[band:, :30][:20], a)
    with pytest.raises(ConfigError):
        side_by_side([a, b], titles=["only one"])
    with pytest.raises(ConfigError):
        side_by_side([])


def test_save_png_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    p = save_png(rgb, tmp_path / "a" / "b" / "rgb.png")
    assert isinstance(p, Path) and p.is_file()
    np.testing.assert_array_equal(np.asarray(Image.open(p)), rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(save_png(grey, tmp_path / "g.png"))), grey)
    with pytest.raises(DataError):
        save_png(rgb.astype(np.float32), tmp_path / "bad.png")


def test_float_tiff_roundtrip_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    amap = rng.normal(size=(7, 9)) * 1e3
    p = save_float_tiff(amap, tmp_path / "sub" / "000.tiff")
    with Image.open(p) as im:
        assert im.mode == "F"
        back = np.asarray(im)
    assert back.dtype == np.float32
    assert back.shape == (7, 9)
    np.testing.assert_array_equal(back, amap.astype(np.float32))


def test_to_uint8_image() -> None:
    chw = np.zeros((3, 4, 5), dtype=np.float32)
    chw[0] = 1.0
    out = to_uint8_image(chw)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 0]
    hwc = np.full((4, 5, 3), 0.5)
    assert to_uint8_image(hwc)[0, 0].tolist() == [128, 128, 128]
    u8 = np.ones((4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_image(u8), u8)
    with pytest.raises(DataError, match="normalisation"):
        to_uint8_image(np.full((3, 4, 5), -2.0))
    with pytest.raises(DataError):
        to_uint8_image(np.zeros((4, 5)))


# --------------------------------------------------------------------------- markdown


def test_metrics_table_formatting() -> None:
    rows = [
        {"model": "padim", "image_auroc": 0.98765, "aupro": None},
        {"model": "patch|core", "image_auroc": 1, "epochs": 3},
    ]
    table = metrics_table(rows, float_digits=2)
    lines = table.strip().split("\n")
    assert lines[0] == "| model | image_auroc | aupro | epochs |"
    assert lines[1] == "| --- | ---: | --- | ---: |"
    assert lines[2] == "| padim | 0.99 | – | – |"
    assert lines[3] == "| patch\\|core | 1 | – | 3 |"
    assert "0.988" in metrics_table(rows, columns=["image_auroc"])
    assert metrics_table([{"x": float("nan")}]).strip().endswith("| NaN |")
    with pytest.raises(ConfigError):
        metrics_table(rows, float_digits=-1)


# --------------------------------------------------------------------------- documents


def _document(image: np.ndarray) -> Document:
    return Document(
        "Report & <stuff>",
        [
            Section("Most anomalous", [Gallery([Card("a", image, "cell.png — score 3.21")])]),
            Section("Least <b>anomalous</b>", [Gallery([Card("b", image, "<script>x</script>")])]),
            Section("Empty", [Gallery([], empty="No defective image was missed.")]),
            Section(
                "Tables",
                [
                    Table(("metric", "value"), [("Image AUROC", "0.900"), ("a|b", "–")], (1,)),
                    Figure("curve", '<?xml version="1.0"?><svg id="s"><g/></svg>', "A curve"),
                    Code("Config", json.dumps({"note": "</pre><script>x</script>"})),
                ],
            ),
        ],
        intro=[Paragraph("a note", "note")],
    )


def test_html_report_is_self_contained_and_escaped() -> None:
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[2:5, 2:5] = (200, 10, 10)
    text = render_html(_document(img))
    assert text.startswith("<!DOCTYPE html>")
    assert "http" not in text and "<link" not in text and "<script" not in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text
    assert "Report &amp; &lt;stuff&gt;" in text and "Least &lt;b&gt;anomalous" in text
    assert '<svg id="s"><g/></svg>' in text and "<?xml" not in text  # inline SVG
    assert "No defective image was missed." in text
    assert '<a href="#most-anomalous">' in text
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == 2
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0]))))
    np.testing.assert_array_equal(decoded, img)


def test_markdown_report_links_the_same_figures_and_images(tmp_path: Path) -> None:
    img = np.full((6, 6, 3), 90, dtype=np.uint8)
    html_path, md_path = write_report(_document(img), tmp_path / "out")
    text = md_path.read_text()
    assert html_path.name == "report.html" and text.startswith("# Report & <stuff>")
    assert "![A curve](figures/curve.svg)" in text
    assert (tmp_path / "out" / "figures" / "curve.svg").read_text().startswith("<?xml")
    assert "](images/a.png)" in text and "](images/b.png)" in text
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/images/a.png")), img)
    assert "| a\\|b | – |" in text and "|---|---:|" in text
    assert "*No defective image was missed.*" in text


def test_report_rejects_a_bad_image() -> None:
    bad = np.zeros((4, 4, 3), dtype=np.float32)
    with pytest.raises(DataError):
        render_html(Document("t", [Section("s", [Gallery([Card("x", bad, "x")])])]))


def test_decision_range_puts_the_threshold_in_the_middle() -> None:
    amap = np.linspace(1.0, 3.0, 100, dtype=np.float32).reshape(10, 10)
    low, high = decision_range(amap, threshold=5.0)
    assert low == pytest.approx(float(np.percentile(amap, 1)))
    assert (low + high) / 2 == pytest.approx(5.0)
    low, high = decision_range(np.stack([amap, amap + 10.0]), threshold=2.0)
    assert (low + high) / 2 == pytest.approx(2.0)  # maps far above saturate instead
    first = float(np.percentile(amap, 1))
    assert decision_range(amap, None) == (pytest.approx(first), pytest.approx(3.0))
    low, high = decision_range(amap, threshold=0.5)  # threshold below every value
    assert low < 0.5 < high and (low + high) / 2 == pytest.approx(0.5)
