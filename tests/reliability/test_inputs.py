"""Image and mask inputs: EXIF orientation, mask encodings, empty masks, pixel limit, small lies.

Every test builds its own small inputs (64 px or less, ``--weights random``) and asserts one
specific outcome: the exit status and a message naming the offending file or value, or the
documented correct behaviour.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flawmap.cli import main
from flawmap.data import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIDE,
    ElpvDataset,
    FolderDataset,
    ImageTransform,
    MVTecDataset,
    load_image,
    load_mask,
    max_pixels,
    set_max_pixels,
)
from flawmap.errors import ConfigError, DataError, FlawmapWarning
from flawmap.evaluation import evaluate, write_evaluation
from flawmap.models import create_model
from flawmap.report import heatmap_overlay
from tests.synthetic import plant_defect, textured_image

H, W = 48, 80  # non-square displayed size (rows, columns) of the EXIF test set
ORIENTATION = 0x0112
# EXIF orientation -> np.rot90 turns that give the *stored* pixels of a displayed image.
STORED_TURNS = {6: 1, 8: -1, 3: 2}
FIT = ["--model", "patchcore", "--image-size", "64", "--weights", "random", "--quiet"]
FIT += ["--param", "coreset_ratio=0.2", "--param", "threshold_holdout=0.25"]
QUALITY = ("image_auroc", "image_f1", "pixel_auroc", "pixel_ap", "pixel_f1", "aupro")


@pytest.fixture(autouse=True)
def _default_pixel_limit(monkeypatch: pytest.MonkeyPatch):
    """Every test starts and ends with the default pixel limit (no env var, no override)."""
    monkeypatch.delenv("FLAWMAP_MAX_PIXELS", raising=False)
    set_max_pixels(None)
    yield
    set_max_pixels(None)


# ------------------------------------------------------------------------------ helpers


def surface(rng: np.random.Generator) -> np.ndarray:
    """A good non-square surface, uint8 (H, W, 3)."""
    return np.ascontiguousarray(textured_image(rng, W)[:H])


def save_oriented(array: np.ndarray, path: Path, orientation: int, **kwargs) -> Path:
    """Save ``array`` (as displayed) stored rotated, with the EXIF tag that displays it upright."""
    stored = np.ascontiguousarray(np.rot90(array, k=STORED_TURNS[orientation]))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif, **kwargs)
    return path


def write_category(root: Path, *, n_train: int = 8, seed: int = 0) -> Path:
    """Upright non-square MVTec-layout category: train/good, test/{good,spot}, 0/255 masks."""
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(surface(rng)).save(root / "train/good" / f"{i:03d}.png")
    for i in range(3):
        Image.fromarray(surface(rng)).save(root / "test/good" / f"{i:03d}.png")
    for i in range(4):
        image, mask = plant_defect(surface(rng), rng)
        Image.fromarray(image).save(root / "test/spot" / f"{i:03d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(
            root / "ground_truth/spot" / f"{i:03d}_mask.png"
        )
    return root


def exif_copy(upright: Path, root: Path) -> Path:
    """The same category with every test image stored rotated plus EXIF tag 6 or 8; the masks
    stay upright (as a viewer shows the images)."""
    for sub in ("train/good", "ground_truth/spot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for f in (upright / sub).iterdir():
            (root / sub / f.name).write_bytes(f.read_bytes())
    for k, f in enumerate(sorted((upright / "test").rglob("*.png"))):
        displayed = np.asarray(Image.open(f))
        save_oriented(displayed, root / f.relative_to(upright), (6, 8)[k % 2])
    return root


def metrics_of(report_dir: Path) -> dict:
    return json.loads((report_dir / "metrics.json").read_text())


def png_with_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` 8-bit gray pixels (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def black_png(path: Path, side: int) -> Path:
    """A real, valid black 8-bit gray PNG of ``side`` x ``side`` written row by row (a few KB)."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    parts = [packer.compress(row) for _ in range(side)]
    data = b"".join(parts) + packer.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


@pytest.fixture(scope="module")
def exif_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An upright category, its EXIF-rotated copy, and a model fitted (CLI) on the upright one."""
    base = tmp_path_factory.mktemp("exif")
    upright = write_category(base / "upright" / "widget")
    rotated = exif_copy(upright, base / "rotated" / "widget")
    model = base / "model"
    assert main(["fit", "--data", str(upright), *FIT, "--out", str(model)]) == 0
    return {"upright": upright, "rotated": rotated, "model": model}


# ------------------------------------------------------------------------------ EXIF orientation


def test_exif_rotated_test_set_gives_the_metrics_of_its_upright_copy(exif_sets, tmp_path):
    metrics = {}
    for name in ("upright", "rotated"):
        out = tmp_path / name
        args = ["evaluate", str(exif_sets["model"]), "--data", str(exif_sets[name])]
        assert main([*args, "--out", str(out), "--latency-runs", "0", "--quiet"]) == 0
        metrics[name] = {k: metrics_of(out)[k] for k in QUALITY}
    assert all(isinstance(v, float) for v in metrics["upright"].values())
    assert metrics["rotated"] == metrics["upright"]


def test_exif_overlays_and_tiff_maps_come_out_displayed(exif_sets, tmp_path):
    outputs = {}
    for name in ("upright", "rotated"):
        out = tmp_path / name
        test_dir = exif_sets[name] / "test"
        argv = ["predict", str(exif_sets["model"]), str(test_dir), "--out", str(out)]
        assert main([*argv, "--save-maps", "--quiet"]) == 0
        overlays = {p.relative_to(out): np.asarray(Image.open(p)) for p in out.rglob("*.png")}
        maps = {p.relative_to(out): np.asarray(Image.open(p)) for p in out.rglob("*.tiff")}
        outputs[name] = (overlays, maps)
    (overlays, maps), (up_overlays, up_maps) = outputs["rotated"], outputs["upright"]
    assert len(overlays) == len(maps) == 7
    assert {a.shape for a in overlays.values()} == {(H, W, 3)}
    assert {a.shape for a in maps.values()} == {(H, W)}
    assert sorted(overlays) == sorted(up_overlays) and sorted(maps) == sorted(up_maps)
    for key in overlays:
        np.testing.assert_array_equal(overlays[key], up_overlays[key])
    for key in maps:
        np.testing.assert_array_equal(maps[key], up_maps[key])


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_jpeg_is_read_as_displayed(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    displayed = surface(rng)
    path = save_oriented(displayed, tmp_path / "photo.jpg", orientation, quality=95)
    # Independent reference: Pillow's raw decode of the stored pixels, turned with numpy.
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))
    expected = np.rot90(stored, k=-STORED_TURNS[orientation])
    got = np.asarray(load_image(path))
    assert got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, expected)


def test_exif_tagged_mask_is_read_as_displayed(tmp_path):
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[5:20, 50:70] = 255
    upright = tmp_path / "up.png"
    Image.fromarray(mask).save(upright)
    rotated = save_oriented(mask, tmp_path / "rot.png", 6)
    np.testing.assert_array_equal(load_mask(rotated), load_mask(upright))
    # A TIFF carries the orientation as a tag of its own.
    stored = np.ascontiguousarray(np.rot90(mask, k=STORED_TURNS[8]))
    Image.fromarray(stored).save(tmp_path / "rot.tiff", tiffinfo={ORIENTATION: 8})
    np.testing.assert_array_equal(load_mask(tmp_path / "rot.tiff"), load_mask(upright))


def test_damaged_exif_warns_naming_the_file_and_keeps_stored_pixels(tmp_path):
    stored = surface(np.random.default_rng(2))
    truncated = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12"  # cut-off IFD
    Image.fromarray(stored).save(tmp_path / "cam.jpg", exif=truncated, quality=95)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own complaint, outside flawmap
        with Image.open(tmp_path / "cam.jpg") as raw:
            expected = np.asarray(raw.convert("RGB"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = np.asarray(load_image(tmp_path / "cam.jpg"))
    np.testing.assert_array_equal(got, expected)
    assert [w.category for w in record] == [FlawmapWarning]
    assert "cam.jpg: Corrupt EXIF data" in str(record[0].message)


def test_folder_dataset_reads_exif_image_with_its_upright_mask(tmp_path):
    rng = np.random.default_rng(5)
    image, mask = plant_defect(surface(rng), rng)
    save_oriented(image, tmp_path / "bad" / "x.png", 8)
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "masks" / "x.png")  # 0/1, upright
    ds = FolderDataset(None, [tmp_path / "bad"], tmp_path / "masks", ImageTransform((H, W)))
    item = ds[0]
    assert item["original_size"].tolist() == [H, W]
    np.testing.assert_array_equal(item["mask"][0].numpy().astype(bool), mask)
    inside = item["image"][:, item["mask"][0] > 0].mean(dim=1)
    np.testing.assert_allclose(inside.numpy(), np.array([20, 200, 20]) / 255, atol=1e-6)


# ------------------------------------------------------------------------------ mask encodings


def _mask_file(tmp_path: Path, name: str, values: np.ndarray, **kwargs) -> Path:
    path = tmp_path / name
    Image.fromarray(values).save(path, **kwargs)
    return path


BOX = (slice(4, 12), slice(6, 14))


def _encoded(encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(file values, expected defect mask) of one mask encoding, 16 x 20 px."""
    truth = np.zeros((16, 20), dtype=bool)
    truth[BOX] = True
    if encoding == "0/1":
        return truth.astype(np.uint8), truth
    if encoding == "0/255":
        return truth.astype(np.uint8) * 255, truth
    if encoding == "0/100":
        return truth.astype(np.uint8) * 100, truth
    if encoding == "labels 0/1/2":
        values = truth.astype(np.uint8)
        values[4:8, 6:14] = 2
        return values, truth
    if encoding == "0/128/255":  # 128 = uncertain border, counted as defect
        values = truth.astype(np.uint8) * 255
        values[4, 6:14] = 128
        return values, truth
    if encoding == "anti-aliased":  # soft edges below half are background
        values = truth.astype(np.uint8) * 255
        values[3, 6:14] = 60
        values[12, 6:14] = 127
        return values, truth
    if encoding == "16-bit 0/1":
        return truth.astype(np.uint16), truth
    if encoding == "16-bit 0/255":
        return truth.astype(np.uint16) * 255, truth
    if encoding == "16-bit 0/65535":
        return truth.astype(np.uint16) * 65535, truth
    raise AssertionError(encoding)


ENCODINGS = [
    "0/1",
    "0/255",
    "0/100",
    "labels 0/1/2",
    "0/128/255",
    "anti-aliased",
    "16-bit 0/1",
    "16-bit 0/255",
    "16-bit 0/65535",
]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_mask_encodings_read_as_documented(tmp_path, encoding):
    values, truth = _encoded(encoding)
    path = _mask_file(tmp_path, "m.png", values)
    np.testing.assert_array_equal(load_mask(path), truth)


def test_jpeg_mask_and_palette_label_mask(tmp_path):
    truth = np.zeros((32, 32), dtype=bool)
    truth[5:21, 7:23] = True  # not on the 8 x 8 JPEG block grid: ringing around the edges
    jpeg = _mask_file(tmp_path, "m.jpg", truth.astype(np.uint8) * 255, quality=75)
    noisy = np.asarray(Image.open(jpeg))
    assert ((noisy > 0) & ~truth).sum() > 50  # faint non-zero background that is no defect
    np.testing.assert_array_equal(load_mask(jpeg), truth)
    palette = Image.fromarray(truth.astype(np.uint8), mode="L").convert("P")  # indices 0/1
    palette.putpalette([0, 0, 0, 1, 1, 1] + [0] * 762)  # index 1 is almost black
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png"), truth)


def test_zero_one_masks_give_the_metrics_of_zero_255_masks(exif_sets, tmp_path):
    """0/1 masks used to be read as all background, silently dropping every pixel metric."""
    zero_one = tmp_path / "widget"
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (zero_one / sub).mkdir(parents=True)
        for f in (exif_sets["upright"] / sub).iterdir():
            if sub == "ground_truth/spot":
                Image.fromarray((np.asarray(Image.open(f)) > 0).astype(np.uint8)).save(
                    zero_one / sub / f.name
                )
            else:
                (zero_one / sub / f.name).write_bytes(f.read_bytes())
    results = {}
    for name, data in (("0-255", exif_sets["upright"]), ("0-1", zero_one)):
        out = tmp_path / f"report-{name}"
        argv = ["evaluate", str(exif_sets["model"]), "--data", str(data), "--out", str(out)]
        assert main([*argv, "--latency-runs", "0", "--quiet"]) == 0
        results[name] = {k: metrics_of(out)[k] for k in QUALITY}
    assert results["0-1"]["pixel_auroc"] is not None
    assert results["0-1"] == results["0-255"]


# ------------------------------------------------------------------------------ empty masks


def _category_with_empty_mask(root: Path, empty: tuple[int, ...]) -> Path:
    write_category(root, n_train=4)
    for i in empty:
        mask = root / "ground_truth" / "spot" / f"{i:03d}_mask.png"
        Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(mask)
    return root


def test_empty_mask_warns_once_per_file_and_is_counted(exif_sets, tmp_path):
    data = _category_with_empty_mask(tmp_path / "widget", empty=(2,))
    out = tmp_path / "report"
    argv = ["evaluate", str(exif_sets["model"]), "--data", str(data), "--out", str(out)]
    with pytest.warns(FlawmapWarning, match=r"002_mask\.png.*marks no defect pixel") as record:
        assert main([*argv, "--latency-runs", "0", "--quiet"]) == 0
    empty_warnings = [w for w in record if "marks no defect pixel" in str(w.message)]
    assert len(empty_warnings) == 1
    assert "spot/002.png" in str(empty_warnings[0].message)
    metrics = metrics_of(out)
    assert metrics["info"]["n_empty_defect_masks"] == 1
    assert metrics["info"]["empty_defect_masks"] == [str(data / "test" / "spot" / "002.png")]
    for key in ("pixel_auroc", "pixel_ap", "pixel_f1", "aupro"):
        assert isinstance(metrics[key], float), key  # still computed over all images
    report = (out / "report.md").read_text()
    assert "1 of 4 defective images with a mask have an empty ground-truth mask" in report
    assert "(spot/002.png; full list in metrics.json)" in report


def test_empty_mask_warning_is_not_repeated_per_epoch(tmp_path):
    data = _category_with_empty_mask(tmp_path / "widget", empty=(0, 3))
    test = MVTecDataset(data, "test", transform=ImageTransform(32))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _epoch in range(3):
            for i in range(len(test)):
                test[i]
    messages = sorted(str(w.message) for w in record if issubclass(w.category, FlawmapWarning))
    assert len(messages) == 2
    assert "000_mask.png" in messages[0] and "003_mask.png" in messages[1]


def test_defect_lost_by_resizing_warns_and_says_why(tmp_path):
    good = tmp_path / "bad"
    good.mkdir()
    Image.fromarray(surface(np.random.default_rng(0))).save(good / "x.png")
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[21, 41] = 255  # one pixel: nearest resizing to 8 x 8 drops it
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "x.png")
    ds = FolderDataset(None, [good], tmp_path / "masks", ImageTransform(8))
    with pytest.warns(FlawmapWarning, match=r"x\.png marks 1 defect pixel.*resizing.*8x8"):
        ds[0]


def test_all_masks_empty_leaves_pixel_metrics_undefined_and_says_so(tmp_path):
    data = _category_with_empty_mask(tmp_path / "widget", empty=(0, 1, 2, 3))
    detector = create_model(
        "patchcore", image_size=64, weights="random", coreset_ratio=0.2, threshold_holdout=0.25
    )
    detector.fit(MVTecDataset(data, "train", transform=detector.transform))
    test = MVTecDataset(data, "test", transform=detector.transform)
    with pytest.warns(FlawmapWarning, match="marks no defect pixel"):
        result = evaluate(detector, test, latency_runs=0)
    assert result.info["n_empty_defect_masks"] == 4
    assert result.metrics["pixel_auroc"] is None and result.metrics["aupro"] is None
    assert result.metrics["image_auroc"] is not None
    report = (write_evaluation(result, detector, tmp_path / "r", "t", 0) / "report.md").read_text()
    assert "4 of 4 defective images with a mask have an empty ground-truth mask" in report
    assert "pixel metrics (pixel AUROC, pixel AP, pixel F1, AUPRO) are not defined" in report


# ------------------------------------------------------------------------------ pixel limit


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A valid 12000 x 12000 PNG of a few KB: refused before decoding, fast, with little memory."""
    bomb = black_png(tmp_path / "bomb.png", 12000)
    assert bomb.stat().st_size < 300_000
    script = (
        "import resource, sys, time\n"
        "from flawmap.data.io import load_image\n"
        "from flawmap.errors import DataError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    load_image(sys.argv[1])\n"
        "except DataError as exc:\n"
        "    print(exc)\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(f'KB={grown} S={time.perf_counter() - start:.3f}')\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    env.pop("FLAWMAP_MAX_PIXELS", None)
    done = subprocess.run(
        [sys.executable, "-c", script, str(bomb)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    message, stats = done.stdout.strip().splitlines()
    assert "bomb.png is 12000x12000 pixels" in message and "FLAWMAP_MAX_PIXELS" in message
    grown_kb, seconds = (float(part.split("=")[1]) for part in stats.split())
    assert grown_kb < 40_000  # decoding would need 144 MB
    assert seconds < 1.0


def test_pixel_bomb_beyond_pillows_own_guard_gives_flawmaps_error(tmp_path):
    huge = png_with_header_only(tmp_path / "huge.png", 30000, 30000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape either
        with pytest.raises(DataError, match=r"huge\.png is .*FLAWMAP_MAX_PIXELS"):
            load_image(huge)
        with pytest.raises(DataError, match=r"mask file .*huge\.png is "):
            load_mask(huge)


def test_pixel_limit_from_env_var_applies_to_fit(tmp_path, monkeypatch, capsys):
    data = write_category(tmp_path / "widget", n_train=4)
    monkeypatch.setenv("FLAWMAP_MAX_PIXELS", "1000")
    code = main(["fit", "--data", str(data), *FIT, "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert "train/good/000.png is 80x48 pixels" in err and "limit of 1000 pixels" in err
    assert not (tmp_path / "m").exists()


def test_bad_pixel_limit_env_var_names_the_variable(tmp_path, monkeypatch):
    Image.fromarray(surface(np.random.default_rng(0))).save(tmp_path / "x.png")
    monkeypatch.setenv("FLAWMAP_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match=r"FLAWMAP_MAX_PIXELS.*'lots'"):
        load_image(tmp_path / "x.png")
    with pytest.raises(ConfigError, match="positive"):
        set_max_pixels(0)


def test_raised_limit_above_pillows_guard_reads_the_image(tmp_path, monkeypatch):
    Image.fromarray(surface(np.random.default_rng(0))).save(tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse 80 x 48
    set_max_pixels(10_000)
    assert max_pixels() == 10_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "x.png").size == (W, H)
    set_max_pixels(1000)
    with pytest.raises(DataError, match=r"x\.png is 80x48 pixels.*limit of 1000 pixels"):
        load_image(tmp_path / "x.png")


def test_overlay_of_a_large_image_allocates_no_float64_copy():
    height, width = 1500, 2000
    image = np.zeros((height, width, 3), dtype=np.uint8)
    amap = np.random.default_rng(0).random((height, width), dtype=np.float32)
    tracemalloc.start()
    try:
        out = heatmap_overlay(image, amap, 0.0, 1.0, threshold=0.9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (height, width, 3)
    assert peak / (height * width) < 8  # one float64 copy alone would be 8 bytes per pixel


# ------------------------------------------------------------------------------ small lies


def test_tiny_training_image_is_refused_by_fit(tmp_path, capsys):
    data = write_category(tmp_path / "widget", n_train=4)
    Image.new("RGB", (1, 1)).save(data / "train" / "good" / "tiny.png")
    code = main(["fit", "--data", str(data), *FIT, "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert "tiny.png is only 1x1 pixels" in err and f"at least {MIN_IMAGE_SIDE} pixels" in err


def test_tiny_elpv_cell_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (300, 300), 90).save(tmp_path / "images" / "cell0001.png")
    Image.new("L", (12, 300), 90).save(tmp_path / "images" / "cell0002.png")
    (tmp_path / "labels.csv").write_text(
        "images/cell0001.png 0.0 mono\nimages/cell0002.png 0.0 mono\n"
    )
    train = ElpvDataset("train", train_fraction=0.5, seed=0, data_dir=tmp_path)
    test = ElpvDataset("test", train_fraction=0.5, seed=0, data_dir=tmp_path)
    tiny = next(d for d in (train, test) if d.samples[0].path.name == "cell0002.png")
    with pytest.raises(DataError, match=r"cell0002\.png is only 12x300 pixels"):
        tiny[0]


@pytest.mark.parametrize(
    ("option", "value"),
    [("image_size", MAX_IMAGE_SIZE + 1), ("image_size", (64, 100_000)), ("center_crop", 5000)],
)
def test_sizes_above_the_maximum_are_refused(option, value):
    kwargs = {"image_size": 64, option: value} if option == "center_crop" else {option: value}
    with pytest.raises(ConfigError, match=rf"{option} .* above the largest supported size"):
        ImageTransform(**kwargs)


def test_cli_image_size_above_the_maximum_exits_2_before_reading_data(tmp_path, capsys):
    start = time.perf_counter()
    code = main(
        ["fit", "--data", str(tmp_path / "absent"), "--model", "padim", "--weights", "random",
         "--image-size", "10000", "--out", str(tmp_path / "m"), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "10000" in err and str(MAX_IMAGE_SIZE) in err and "Traceback" not in err
    assert time.perf_counter() - start < 30


@pytest.fixture(scope="module")
def tiny_model():
    """A PatchCore fitted on four random 32 px tensors, and those tensors."""
    detector = create_model(
        "patchcore", image_size=32, weights="random", coreset_ratio=0.5, threshold_holdout=0.0
    )
    good = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return detector.fit(good), good


def _unfitted():
    return create_model("patchcore", image_size=32, weights="random")


def test_arrays_of_0_to_255_floats_are_refused_with_a_hint():
    detector = _unfitted()
    images = np.random.default_rng(0).uniform(0, 255, (4, 3, 32, 32)).astype(np.float32)
    with pytest.raises(DataError, match=r"\[0, 1\].*divide by 255"):
        detector.fit(images)
    assert not detector.is_fitted


def test_normalised_arrays_are_refused_with_a_hint(tiny_model):
    detector, _ = tiny_model
    images = np.random.default_rng(0).normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
    with pytest.raises(DataError, match="without mean/std normalisation"):
        detector.predict(images)


def test_uint8_arrays_are_divided_by_255(tiny_model):
    detector, good = tiny_model
    as_uint8 = (good * 255).round().to(torch.uint8)
    expected = detector.predict(as_uint8.float() / 255).scores
    np.testing.assert_array_equal(detector.predict(as_uint8.numpy()).scores, expected)
    np.testing.assert_array_equal(detector.predict(as_uint8).scores, expected)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.full((2, 3, 32, 32), np.nan, dtype=np.float32), r"6144 NaN/inf value"),
        (np.zeros((2, 32, 32, 3), dtype=np.float32), r"\(2, 32, 32, 3\); channel-last"),
        (np.zeros((3, 32, 32), dtype=np.float32), r"\(3, 32, 32\); one image"),
        (np.zeros((2, 1, 32, 32), dtype=np.float32), r"\(2, 1, 32, 32\); grayscale"),
        (np.zeros((2, 3, 32, 32), dtype=np.uint16), r"dtype torch.uint16"),
    ],
    ids=["nan", "channel-last", "single-image", "grayscale", "uint16"],
)
def test_bad_image_arrays_are_refused(images, message):
    detector = _unfitted()
    with pytest.raises(DataError, match=message):
        detector.fit(images)
    assert not detector.is_fitted
