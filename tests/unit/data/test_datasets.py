"""Unit tests of flawmap.data on tiny synthetic images written to tmp_path."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import flawmap.data.elpv as elpv_module
from flawmap.data import (
    IMAGE_EXTENSIONS,
    ElpvDataset,
    FolderDataset,
    ImageTransform,
    MVTecDataset,
    PathsDataset,
    SampleRecord,
    list_images,
    load_image,
    load_mask,
    split_holdout,
)
from flawmap.errors import ConfigError, DataError

H, W = 32, 40  # synthetic image size (rows, columns)
BOX = (8, 16, 20, 32)  # planted defect: rows 8..15, columns 20..31
SMALL = ImageTransform(image_size=(16, 20))  # exact 2x downscale


# --------------------------------------------------------------------------- helpers


def write_image(path: Path, *, mode: str = "RGB", box: tuple[int, int, int, int] | None = None):
    """A dark noisy image with an optional bright rectangle (rows r0:r1, cols c0:c1)."""
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    arr = rng.integers(20, 60, size=(H, W, 3), dtype=np.uint8)
    if box is not None:
        r0, r1, c0, c1 = box
        arr[r0:r1, c0:c1] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    im = im.convert("L") if mode == "L" else im
    im.save(path)
    return path


def write_mask(path: Path, box: tuple[int, int, int, int] = BOX, size: tuple[int, int] = (H, W)):
    """A 0/255 mask of ``size`` (H, W) with the rectangle ``box`` set."""
    arr = np.zeros(size, dtype=np.uint8)
    r0, r1, c0, c1 = box
    arr[r0:r1, c0:c1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def expected_small_mask() -> torch.Tensor:
    """BOX after the exact 2x nearest downscale of SMALL: rows 4..7, columns 10..15."""
    m = torch.zeros(1, 16, 20)
    m[:, 4:8, 10:16] = 1.0
    return m


def make_mvtec(root: Path, *, with_gt: bool = True) -> Path:
    """train/good (3), test/good (2), test/crack (2, `_mask` masks), test/hole (1, plain mask)."""
    for i in range(3):
        write_image(root / "train" / "good" / f"{i:03d}.png")
    for i in range(2):
        write_image(root / "test" / "good" / f"{i:03d}.png")
    for i in range(2):
        write_image(root / "test" / "crack" / f"{i:03d}.png", box=BOX)
        if with_gt:
            write_mask(root / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    write_image(root / "test" / "hole" / "000.jpg", mode="L", box=BOX)
    if with_gt:
        write_mask(root / "ground_truth" / "hole" / "000.png")
    return root


def check_item(item: dict, size: tuple[int, int] = (16, 20)) -> None:
    assert set(item) == {
        "image",
        "mask",
        "label",
        "has_mask",
        "path",
        "defect_type",
        "original_size",
    }
    assert item["image"].shape == (3, *size) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == (1, *size) and item["mask"].dtype == torch.float32
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
    assert isinstance(item["label"], int) and isinstance(item["has_mask"], bool)
    assert isinstance(item["path"], str) and isinstance(item["defect_type"], str)
    assert item["original_size"].dtype == torch.long
    assert item["original_size"].tolist() == [H, W]


# --------------------------------------------------------------------------- io


def test_image_extensions():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == IMAGE_EXTENSIONS


def test_list_images_sorted_case_insensitive_non_recursive(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.Tiff", ".hidden.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.Tiff"]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"nope"):
        list_images(tmp_path / "nope")


def test_load_image_grayscale_and_rgba_become_rgb(tmp_path):
    gray = write_image(tmp_path / "g.png", mode="L")
    im = load_image(gray)
    assert im.mode == "RGB" and im.size == (W, H)
    arr = np.asarray(im)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
    Image.new("RGBA", (20, 16), (10, 20, 30, 0)).save(tmp_path / "a.png")
    assert np.asarray(load_image(tmp_path / "a.png"))[0, 0].tolist() == [10, 20, 30]
    Image.new("P", (20, 16)).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").mode == "RGB"


def test_load_image_16_bit_is_scaled(tmp_path):
    arr = np.tile(np.array([[0, 65535], [32896, 257]], dtype=np.uint16), (8, 8))
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = np.asarray(load_image(tmp_path / "deep.png"))
    assert out.shape == (16, 16, 3)
    assert out[:2, :2, 0].tolist() == [[0, 255], [128, 1]]


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing.png"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken.png"):
        load_image(bad)
    with pytest.raises(DataError, match=r"broken.png"):
        load_mask(bad)


def test_load_mask_binarises_at_half(tmp_path):
    Image.fromarray(np.array([[0, 127, 128, 255]], dtype=np.uint8)).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.dtype == bool and m.shape == (1, 4)
    assert m.tolist() == [[False, False, True, True]]
    deep = np.array([[0, 32767, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png").tolist() == [[False, False, True, True]]
    Image.fromarray(np.array([[0, 1]], dtype=bool)).save(tmp_path / "m1.png")
    assert load_mask(tmp_path / "m1.png").tolist() == [[False, True]]
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1, 0] = 255  # a red mark counts as foreground
    Image.fromarray(rgb).save(tmp_path / "mrgb.png")
    assert load_mask(tmp_path / "mrgb.png").tolist() == [[False, True]]


# --------------------------------------------------------------------------- transforms


def test_transform_sizes_and_range():
    pil = Image.fromarray(np.full((H, W, 3), 255, dtype=np.uint8))
    assert ImageTransform().output_size == (256, 256)
    assert ImageTransform(24).output_size == (24, 24)
    x = ImageTransform((12, 18)).image(pil)
    assert x.shape == (3, 12, 18) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))
    g = ImageTransform(8).image(pil.convert("L"))
    assert g.shape == (3, 8, 8)


def test_transform_mask_nearest_then_binarised():
    m = np.zeros((H, W), dtype=bool)
    r0, r1, c0, c1 = BOX
    m[r0:r1, c0:c1] = True
    out = SMALL.mask(m)
    assert out.shape == (1, 16, 20) and out.dtype == torch.float32
    assert torch.equal(out, expected_small_mask())
    soft = np.array([[0.2, 0.5], [0.49, 1.0]], dtype=np.float32)
    assert ImageTransform(2).mask(soft)[0].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    up = ImageTransform(4).mask(np.array([[1, 0], [0, 0]], dtype=bool))
    assert up[0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_center_crop_is_opt_in_and_matches_mask():
    arr = np.zeros((20, 20, 3), dtype=np.uint8)
    arr[5:15, 5:15] = 255
    pil = Image.fromarray(arr)
    mask = arr[..., 0] > 0
    plain = ImageTransform(20)
    assert plain.center_crop is None and plain.image(pil).shape == (3, 20, 20)
    crop = ImageTransform(20, center_crop=10)
    assert crop.output_size == (10, 10)
    x, m = crop.image(pil), crop.mask(mask)
    assert x.shape == (3, 10, 10) and m.shape == (1, 10, 10)
    assert torch.all(x == 1.0) and torch.all(m == 1.0)
    assert ImageTransform((20, 30), center_crop=(10, 12)).output_size == (10, 12)


def test_transform_validation():
    for bad in [0, -3, (4,), (4, 0), 2.5, True, "256"]:
        with pytest.raises(ConfigError):
            ImageTransform(image_size=bad)
    with pytest.raises(ConfigError, match=r"center_crop"):
        ImageTransform(16, center_crop=20)
    with pytest.raises(AttributeError):
        ImageTransform().image_size = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- MVTec layout


def test_mvtec_train_and_test_items(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    train = MVTecDataset(root, "train", transform=SMALL)
    assert train.category == "widget" and len(train) == 3
    assert train.labels.tolist() == [0, 0, 0] and not train.has_pixel_labels
    item = train[0]
    check_item(item)
    assert item["label"] == 0 and item["defect_type"] == "good" and not item["has_mask"]

    test = MVTecDataset(root, "test", transform=SMALL)
    assert [s.defect_type for s in test.samples] == ["crack", "crack", "good", "good", "hole"]
    assert test.labels.tolist() == [1, 1, 0, 0, 1]
    assert test.has_pixel_labels
    assert [s.has_mask for s in test.samples] == [True] * 5
    assert test.samples[0].mask_path == root / "ground_truth" / "crack" / "000_mask.png"
    assert test.samples[4].mask_path == root / "ground_truth" / "hole" / "000.png"
    for i in range(len(test)):
        item = test[i]
        check_item(item)
        if item["label"] == 1:
            assert torch.equal(item["mask"], expected_small_mask())
            inside = item["image"][:, item["mask"][0] > 0].mean()
            outside = item["image"][:, item["mask"][0] == 0].mean()
            assert inside > 0.8 > 0.3 > outside
        else:
            assert item["has_mask"] and item["mask"].sum() == 0
    grey = test[4]["image"]  # the grayscale JPEG became 3 identical channels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])


def test_mvtec_without_ground_truth_is_image_level(tmp_path):
    root = make_mvtec(tmp_path / "widget", with_gt=False)
    test = MVTecDataset(root, "test", transform=SMALL)
    assert len(test) == 5 and not test.has_pixel_labels
    assert not any(s.has_mask for s in test.samples)
    assert test[0]["mask"].sum() == 0


def test_mvtec_defect_without_gt_folder_is_image_level(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    for f in (root / "ground_truth" / "hole").iterdir():
        f.unlink()
    (root / "ground_truth" / "hole").rmdir()
    test = MVTecDataset(root, "test", transform=SMALL)
    by_type = {s.defect_type: s.has_mask for s in test.samples}
    assert by_type == {"crack": True, "good": True, "hole": False}


def test_mvtec_structure_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"absent"):
        MVTecDataset(tmp_path / "absent", "train")
    root = tmp_path / "cat"
    root.mkdir()
    with pytest.raises(DataError, match=r"train/"):
        MVTecDataset(root, "train")
    with pytest.raises(DataError, match=r"test/"):
        MVTecDataset(root, "test")
    (root / "train").mkdir()
    with pytest.raises(DataError, match=r"train/good"):
        MVTecDataset(root, "train")
    (root / "train" / "good").mkdir()
    with pytest.raises(DataError, match=r"no training images.*good"):
        MVTecDataset(root, "train")
    (root / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty test split.*test"):
        MVTecDataset(root, "test")
    with pytest.raises(ConfigError):
        MVTecDataset(root, "val")  # type: ignore[arg-type]


def test_mvtec_dataset_root_hint(tmp_path):
    make_mvtec(tmp_path / "widget")
    with pytest.raises(DataError, match=r"category folder"):
        MVTecDataset(tmp_path, "train")


def test_mvtec_missing_mask_names_image_and_expected_path(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DataError) as err:
        MVTecDataset(root, "test")
    msg = str(err.value)
    assert str(root / "test" / "crack" / "001.png") in msg
    assert str(root / "ground_truth" / "crack" / "001_mask.png") in msg


def test_mvtec_mask_without_image(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    write_mask(root / "ground_truth" / "crack" / "007_mask.png")
    with pytest.raises(DataError, match=r"mask without image.*007_mask.png"):
        MVTecDataset(root, "test")


def test_mvtec_mask_folder_without_test_folder(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    write_mask(root / "ground_truth" / "dent" / "000_mask.png")
    with pytest.raises(DataError, match=r"mask without image.*dent"):
        MVTecDataset(root, "test")


def test_mvtec_ambiguous_masks(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    write_mask(root / "ground_truth" / "crack" / "000.png")
    with pytest.raises(DataError, match=r"ambiguous.*000.png"):
        MVTecDataset(root, "test")


def test_mask_size_mismatch_is_reported_at_load_time(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    mask = write_mask(root / "ground_truth" / "crack" / "001_mask.png", size=(H + 2, W))
    test = MVTecDataset(root, "test", transform=SMALL)  # construction does not read pixels
    test[0]
    with pytest.raises(DataError) as err:
        test[1]
    msg = str(err.value)
    assert str(mask) in msg and str(root / "test" / "crack" / "001.png") in msg
    assert str((H + 2, W)) in msg and str((H, W)) in msg


def test_dataloader_default_collate(tmp_path):
    test = MVTecDataset(make_mvtec(tmp_path / "widget"), "test", transform=SMALL)
    batch = next(iter(DataLoader(test, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 3, 16, 20) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 16, 20)
    assert batch["label"].tolist() == [1, 1, 0, 0]
    assert batch["has_mask"].dtype == torch.bool and batch["has_mask"].all()
    assert batch["original_size"].tolist() == [[H, W]] * 4
    assert batch["defect_type"] == ["crack", "crack", "good", "good"]
    assert len(batch["path"]) == 4 and all(isinstance(p, str) for p in batch["path"])


def test_sample_record_is_frozen_and_defaults():
    rec = SampleRecord(Path("a.png"), 1, "crack", Path("m.png"))
    assert rec.has_mask is True
    assert SampleRecord("a.png", 0, "good", None).has_mask is False  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        rec.label = 0  # type: ignore[misc]


# --------------------------------------------------------------------------- plain folders


def test_folder_dataset_with_masks(tmp_path):
    good = tmp_path / "ok"
    write_image(good / "g1.png")
    write_image(good / "g2.bmp")
    write_image(tmp_path / "scratch" / "s1.png", box=BOX)
    write_image(tmp_path / "dent" / "d1.png", box=BOX)
    masks = tmp_path / "masks"
    write_mask(masks / "s1.png")
    write_mask(masks / "d1_mask.png")
    ds = FolderDataset(good, [tmp_path / "scratch", tmp_path / "dent"], masks, transform=SMALL)
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert [s.defect_type for s in ds.samples] == ["good", "good", "scratch", "dent"]
    assert ds.has_pixel_labels and all(s.has_mask for s in ds.samples)
    for i in range(len(ds)):
        check_item(ds[i])
    assert torch.equal(ds[2]["mask"], expected_small_mask())
    assert torch.equal(ds[3]["mask"], expected_small_mask())
    assert ds[0]["mask"].sum() == 0


def test_folder_dataset_mask_subfolders_and_no_masks(tmp_path):
    write_image(tmp_path / "a" / "000.png", box=BOX)
    write_image(tmp_path / "b" / "000.png", box=BOX)
    write_mask(tmp_path / "gt" / "a" / "000_mask.png")
    write_mask(tmp_path / "gt" / "b" / "000_mask.png", box=(0, 2, 0, 2))
    ds = FolderDataset(None, [tmp_path / "a", tmp_path / "b"], tmp_path / "gt", transform=SMALL)
    assert [s.mask_path.parent.name for s in ds.samples] == ["a", "b"]  # type: ignore[union-attr]
    plain = FolderDataset(tmp_path / "a", transform=SMALL)
    assert plain.labels.tolist() == [0] and not plain.has_pixel_labels


def test_folder_dataset_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images found.*empty"):
        FolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match=r"missing_dir"):
        FolderDataset(tmp_path / "missing_dir")
    write_image(tmp_path / "bad" / "x1.png", box=BOX)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"x1.png.*no mask"):
        FolderDataset(tmp_path / "empty", [tmp_path / "bad"], tmp_path / "masks")
    with pytest.raises(DataError, match=r"nomasks"):
        FolderDataset(tmp_path / "empty", [tmp_path / "bad"], tmp_path / "nomasks")
    write_mask(tmp_path / "masks" / "x1.png", size=(H, W + 1))
    ds = FolderDataset(tmp_path / "empty", [tmp_path / "bad"], tmp_path / "masks")
    with pytest.raises(DataError, match=r"x1.png.*x1.png"):
        ds[0]


# --------------------------------------------------------------------------- arbitrary paths


def test_paths_dataset_files_and_recursive_folders(tmp_path):
    single = write_image(tmp_path / "single.png")
    folder = tmp_path / "batch"
    write_image(folder / "b.png")
    write_image(folder / "a.JPG", mode="L")
    write_image(folder / "nested" / "deeper" / "c.png")
    write_image(folder / ".cache" / "hidden.png")
    (folder / "readme.txt").write_text("x")
    ds = PathsDataset([single, str(folder)], transform=SMALL)
    names = [s.path.name for s in ds.samples]
    assert names == ["single.png", "a.JPG", "b.png", "c.png"]
    assert ds.labels.tolist() == [-1] * 4 and not ds.has_pixel_labels
    assert [s.defect_type for s in ds.samples] == [tmp_path.name, "batch", "batch", "deeper"]
    item = ds[1]
    check_item(item)
    assert item["label"] == -1 and not item["has_mask"] and item["mask"].sum() == 0
    assert len(PathsDataset(folder)) == 3  # a single path need not be wrapped in a list


def test_paths_dataset_errors(tmp_path):
    with pytest.raises(DataError, match=r"ghost.png"):
        PathsDataset([tmp_path / "ghost.png"])
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match=r"void"):
        PathsDataset([tmp_path / "void"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes.txt"):
        PathsDataset([tmp_path / "notes.txt"])
    with pytest.raises(DataError):
        PathsDataset([])


# --------------------------------------------------------------------------- holdout split


def test_split_holdout_deterministic_and_disjoint():
    fit, hold = split_holdout(20, 0.25, seed=3)
    fit2, hold2 = split_holdout(20, 0.25, seed=3)
    assert np.array_equal(fit, fit2) and np.array_equal(hold, hold2)
    assert len(hold) == 5 and len(fit) == 15
    assert sorted(np.concatenate([fit, hold]).tolist()) == list(range(20))
    assert fit.dtype == np.int64 and np.all(np.diff(fit) > 0)
    other = split_holdout(20, 0.25, seed=4)[1]
    assert not np.array_equal(hold, other)


def test_split_holdout_edges():
    fit, hold = split_holdout(7, 0.0, seed=0)
    assert fit.tolist() == list(range(7)) and hold.size == 0
    assert len(split_holdout(10, 0.01, seed=0)[1]) == 1  # min_holdout
    assert len(split_holdout(10, 0.01, seed=0, min_holdout=3)[1]) == 3
    for fraction in [-0.1, 1.0, 1.5, float("nan")]:
        with pytest.raises(ConfigError):
            split_holdout(10, fraction, seed=0)
    with pytest.raises(ConfigError, match=r"no images to fit"):
        split_holdout(1, 0.5, seed=0)
    with pytest.raises(ConfigError):
        split_holdout(0, 0.0, seed=0)


# --------------------------------------------------------------------------- ELPV


def make_elpv(root: Path) -> Path:
    """labels.csv + 16x16 PNGs.

    mono: 10 normal, 2 at 1/3, 2 at 2/3, 4 at 1; poly: 4 normal, 2 at 1.
    """
    rows = [("mono", 0.0)] * 10 + [("mono", 1 / 3)] * 2 + [("mono", 2 / 3)] * 2
    rows += [("mono", 1.0)] * 4 + [("poly", 0.0)] * 4 + [("poly", 1.0)] * 2
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (kind, prob) in enumerate(rows, start=1):
        Image.new("L", (16, 16), color=i * 5).save(root / "images" / f"cell{i:04d}.png")
        lines.append(f"images/cell{i:04d}.png  {prob!r:<20}{kind}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_elpv_splits(tmp_path):
    data = make_elpv(tmp_path / "elpv")
    t = ImageTransform(8)
    train = ElpvDataset("train", data_dir=data, transform=t)
    test = ElpvDataset("test", data_dir=data, transform=t)
    assert len(train) == 7 and train.labels.tolist() == [0] * 7
    assert len(test) == 3 + 8 and int(test.labels.sum()) == 8
    train_paths = {s.path for s in train.samples}
    assert train_paths.isdisjoint(s.path for s in test.samples)
    assert {s.defect_type for s in test.samples} == {"good", "defective"}
    assert not test.has_pixel_labels
    item = test[0]
    assert item["image"].shape == (3, 8, 8) and not item["has_mask"] and item["label"] in (0, 1)
    assert item["original_size"].tolist() == [16, 16]
    again = ElpvDataset("train", data_dir=data, transform=t)
    assert [s.path for s in again.samples] == [s.path for s in train.samples]
    strict = ElpvDataset("test", defect_min_probability=2 / 3, data_dir=data)
    assert int(strict.labels.sum()) == 6
    both = ElpvDataset("test", cell_type=None, data_dir=data)
    assert len(both) == 3 + 8 + 1 + 2
    poly = ElpvDataset("train", cell_type="poly", data_dir=data)
    assert len(poly) == 3


def test_elpv_max_images_keeps_both_classes(tmp_path):
    data = make_elpv(tmp_path / "elpv")
    capped = ElpvDataset("test", max_images=4, data_dir=data)
    assert len(capped) == 4 and 0 < int(capped.labels.sum()) < 4
    again = ElpvDataset("test", max_images=4, data_dir=data)
    assert [s.path for s in again.samples] == [s.path for s in capped.samples]
    assert len(ElpvDataset("train", max_images=2, data_dir=data)) == 2


def test_elpv_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError):
        ElpvDataset("val", data_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ElpvDataset("train", train_fraction=1.0, data_dir=tmp_path)
    with pytest.raises(DataError, match=r"labels.csv"):
        ElpvDataset("train", data_dir=tmp_path)
    (tmp_path / "labels.csv").write_text("images/cell0001.png oops mono\n")
    with pytest.raises(DataError, match=r"labels.csv:1"):
        ElpvDataset("train", data_dir=tmp_path)
    monkeypatch.setattr(elpv_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install elpv-dataset"):
        ElpvDataset("train")
