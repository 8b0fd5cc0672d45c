"""flawmap.runtime: scores images without torch, checks its inputs, and PatchCore's two exact
memory-bank searches agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flawmap.data import ImageTransform
from flawmap.data.io import load_image
from flawmap.errors import ConfigError, DataError
from flawmap.export import export_model
from flawmap.models.base import Detector
from flawmap.runtime import load_exported
from flawmap.runtime.model import DEFAULT_SEARCH
from tests.unit.test_export import fit_small, seeded_images

#: PatchCore (runtime search) and a single-graph model.
MODELS = ("patchcore", "padim")


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    return seeded_images(12, seed=20), seeded_images(6, seed=21)


@pytest.fixture(scope="module")
def models(images) -> dict[str, Detector]:
    return {name: fit_small(name, images[0]) for name in MODELS}


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {name: export_model(model, root / name) for name, model in models.items()}


@pytest.fixture(scope="module")
def png_files(tmp_path_factory) -> list[Path]:
    """Five seeded 80x72 RGB PNG files (resized to 64x64 by the models)."""
    folder = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(22)
    paths = []
    for i in range(5):
        pixels = rng.integers(0, 256, size=(72, 80, 3), dtype=np.uint8)
        path = folder / f"part_{i}.png"
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = ("torch", "timm", "torchvision")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"importing {name} is forbidden in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {name} through")

    from flawmap.runtime import load_exported

    folder, *paths = sys.argv[1:]
    model = load_exported(folder)
    prediction = model.predict_images(paths)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({
        "scores": prediction.scores.tolist(),
        "labels": None if prediction.labels is None else prediction.labels.tolist(),
        "paths": prediction.paths,
        "maps_shape": list(prediction.maps.shape),
        "torch_loaded": "torch" in sys.modules,
        "blocked_loaded": loaded,
    }))
    """
)


@pytest.mark.parametrize("name", MODELS)
def test_scores_without_torch(name, models, exports, png_files, tmp_path) -> None:
    model = models[name]
    paths = [str(p) for p in png_files]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(exports[name]), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["torch_loaded"] is False and child["blocked_loaded"] == []
    assert child["paths"] == paths and child["maps_shape"] == [len(paths), 64, 64]
    # the parent: the torch model on the same files, decoded and resized by flawmap.data
    transform = ImageTransform(64)
    batch = torch.stack([transform.image(load_image(p)) for p in paths])
    ref = model.predict(batch)
    np.testing.assert_allclose(np.array(child["scores"]), ref.scores, rtol=1e-4, atol=0)
    assert child["labels"] == ref.labels.tolist()


# ------------------------------------------------------------------------- input checks
@pytest.fixture(scope="module")
def padim_runtime(exports):
    return load_exported(exports["padim"])


def test_wrong_size_names_expected_size(padim_runtime) -> None:
    with pytest.raises(DataError, match="64x64"):
        padim_runtime.predict(np.zeros((2, 3, 48, 64), dtype=np.float32))
    with pytest.raises(DataError, match=r"\(N, 3, H, W\)"):
        padim_runtime.predict(np.zeros((2, 64, 64, 3), dtype=np.float32))
    with pytest.raises(DataError):
        padim_runtime.predict(np.zeros((3, 64, 64), dtype=np.float32))


@pytest.mark.parametrize("value", [1.5, -0.2, 255.0])
def test_float_out_of_range(padim_runtime, images, value) -> None:
    x = images[1].numpy().copy()
    x[0, 1, 2, 3] = value
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        padim_runtime.predict(x)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_refused(padim_runtime, images, value) -> None:
    x = images[1].numpy().copy()
    x[-1, 0, 5, 5] = value
    with pytest.raises(DataError, match="NaN"):
        padim_runtime.predict(x)


def test_empty_and_integer_input(padim_runtime) -> None:
    with pytest.raises(DataError):
        padim_runtime.predict(np.zeros((0, 3, 64, 64), dtype=np.float32))
    with pytest.raises(DataError, match="dtype"):
        padim_runtime.predict(np.zeros((1, 3, 64, 64), dtype=np.int32))


@pytest.mark.parametrize("name", MODELS)
def test_uint8_equals_float(name, exports) -> None:
    runtime = load_exported(exports[name])
    pixels = np.random.default_rng(23).integers(0, 256, size=(4, 3, 64, 64), dtype=np.uint8)
    as_uint8 = runtime.predict(pixels)
    as_float = runtime.predict(pixels.astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(as_uint8.scores, as_float.scores)
    np.testing.assert_array_equal(as_uint8.maps, as_float.maps)
    np.testing.assert_array_equal(as_uint8.labels, as_float.labels)


def test_float64_input_accepted(padim_runtime, models, images) -> None:
    test = images[1]
    ref = models["padim"].predict(test)
    got = padim_runtime.predict(test.numpy().astype(np.float64))
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=0)


def test_preprocess_and_predict_images_agree(padim_runtime, png_files) -> None:
    from_files = padim_runtime.predict_images(png_files)
    decoded = [np.asarray(Image.open(p).convert("RGB")) for p in png_files]
    from_arrays = padim_runtime.predict_images(decoded)
    batch = np.stack([padim_runtime.preprocess(Image.open(p)) for p in png_files])
    direct = padim_runtime.predict(batch)
    assert from_files.paths == [str(p) for p in png_files] and from_arrays.paths == []
    np.testing.assert_array_equal(from_files.scores, direct.scores)
    np.testing.assert_array_equal(from_arrays.scores, direct.scores)
    with pytest.raises(DataError):
        padim_runtime.predict_images([])


# ------------------------------------------------------------------------------ search
def test_pruned_and_faiss_searches_agree(exports, models, images) -> None:
    folder = exports["patchcore"]
    default = load_exported(folder)
    faiss = load_exported(folder, search="faiss")
    pruned = load_exported(folder, search="pruned")
    by_name = {"faiss": faiss, "pruned": pruned}
    assert type(faiss.search) is not type(pruned.search)
    assert type(default.search) is type(by_name[DEFAULT_SEARCH].search)
    queries = (
        np.random.default_rng(24)
        .normal(size=(500, np.load(folder / "memory_bank.npy").shape[1]))
        .astype(np.float32)
    )
    np.testing.assert_allclose(
        pruned.search.distances(queries), faiss.search.distances(queries), rtol=1e-5, atol=0
    )
    test = images[1].numpy()
    a, b = faiss.predict(test), pruned.predict(test)
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5, atol=0)
    np.testing.assert_allclose(b.maps, a.maps, rtol=1e-5, atol=1e-6 * float(np.ptp(a.maps)))
    np.testing.assert_array_equal(b.labels, a.labels)
    np.testing.assert_allclose(a.scores, models["patchcore"].predict(images[1]).scores, rtol=1e-4)


def test_unknown_search(exports) -> None:
    with pytest.raises(ConfigError, match="search"):
        load_exported(exports["patchcore"], search="annoy")


@pytest.mark.parametrize("search", ["faiss", "pruned"])
def test_search_refused_for_graph_models(exports, search) -> None:
    with pytest.raises(ConfigError, match="PatchCore"):
        load_exported(exports["padim"], search=search)
