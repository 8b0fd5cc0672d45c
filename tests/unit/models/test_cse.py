"""CSE: loss values, the frozen decoder, the k-means bank, checkpoint selection, seeds."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import flawmap.models.cse as cse_module
from flawmap.errors import ConfigError, DataError, NotFittedError
from flawmap.models import create_model, load_model
from flawmap.models.cse import (
    CSE,
    CSEDecoder,
    contrastive_cosine_loss,
    decoder_loss,
    spherical_kmeans,
)
from tests.synthetic import lite0_weights_installed, plant_defect, textured_image

FAST = {
    "weights": "random",
    "image_size": 64,
    "epochs": 2,
    "threshold_holdout": 0.0,
    "batch_size": 8,
}


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return to_tensor([textured_image(rng) for _ in range(n)])


def fit(images: torch.Tensor, **params: object) -> CSE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no texture folder: procedural textures
        model = create_model("cse", **{**FAST, **params})
        return model.fit(images)  # type: ignore[return-value]


def emb(*vectors: tuple[float, ...]) -> torch.Tensor:
    """Embeddings (B=1, D, h=1, w=len(vectors)) from one D-vector per position."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :]


# ----------------------------------------------------------------------------- losses
def test_contrastive_loss_good_pair() -> None:
    a = emb((1.0, 2.0, 3.0))
    assert contrastive_cosine_loss(a, 2 * a, torch.zeros(1, 1, 1)).item() == pytest.approx(
        0, abs=1e-6
    )
    assert contrastive_cosine_loss(a, -a, torch.zeros(1, 1, 1)).item() == pytest.approx(2.0)
    ortho = contrastive_cosine_loss(emb((1.0, 0.0)), emb((0.0, 5.0)), torch.zeros(1, 1, 1))
    assert ortho.item() == pytest.approx(1.0)


def test_contrastive_loss_damaged_pair() -> None:
    a = emb((1.0, -2.0, 0.5))
    ones = torch.ones(1, 1, 1)
    assert contrastive_cosine_loss(a, -3 * a, ones).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive_cosine_loss(a, a, ones).item() == pytest.approx(1.0)
    assert contrastive_cosine_loss(emb((1.0, 0.0)), emb((0.0, 1.0)), ones).item() == (
        pytest.approx(0.5)
    )


def test_contrastive_loss_is_a_mean_of_per_position_terms() -> None:
    # positions: identical, opposite, orthogonal, 60 degrees
    e1 = emb((1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (1.0, 0.0))
    e2 = emb((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.5, math.sqrt(3) / 2))
    good = contrastive_cosine_loss(e1, e2, torch.zeros(1, 1, 4)).item()
    assert good == pytest.approx((0 + 2 + 1 + 0.5) / 4)
    labels = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]])  # per-position labels ("mask" reading)
    mixed = contrastive_cosine_loss(e1, e2, labels).item()
    assert mixed == pytest.approx((1 + 0 + 1 + 0.75) / 4)


def test_decoder_loss_is_one_minus_cos_averaged() -> None:
    f = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    g = torch.randn(2, 7, 1, 1, generator=torch.Generator().manual_seed(1))
    assert decoder_loss([3 * f], [f]).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert decoder_loss([-f], [f]).item() == pytest.approx(2.0)
    # orthogonal at every position: 0.5 * ||u - v||^2 = 1
    u = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    v = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    assert decoder_loss([u], [v]).item() == pytest.approx(1.0)
    # stages are averaged: 0 (stage 1) and 2 (stage 2) -> 1
    assert decoder_loss([f, -g], [f, g]).item() == pytest.approx(1.0)
    with pytest.raises(DataError):
        decoder_loss([f], [f, g])


# ----------------------------------------------------------------------------- decoder
def test_decoder_is_seeded_frozen_and_stays_in_eval_mode() -> None:
    a, b = CSEDecoder(8, (4, 6), seed=3), CSEDecoder(8, (4, 6), seed=3)
    for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y)
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training and not any(m.training for m in a.modules())
    out = a(torch.randn(2, 8, 4, 4), [(4, 4), (2, 2)])
    assert [tuple(o.shape) for o in out] == [(2, 4, 4, 4), (2, 6, 2, 2)]


def test_decoder_unchanged_by_fit_and_not_optimised(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots: list[dict[str, torch.Tensor]] = []

    class Recording(CSEDecoder):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            snapshots.append({k: v.clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(cse_module, "CSEDecoder", Recording)
    model = fit(toy_images(10), epochs=2)
    used = model.decoder_
    assert isinstance(used, Recording) and len(snapshots) == 1
    after = used.state_dict()
    assert after.keys() == snapshots[0].keys()
    for key, before in snapshots[0].items():  # weights, biases and BatchNorm statistics
        assert torch.equal(before, after[key]), key
    assert all(p.grad is None and not p.requires_grad for p in used.parameters())
    # the embedder did change (the comparison above is not vacuous)
    assert model.history_.epoch_losses[0] != model.history_.epoch_losses[1]


def test_embedder_is_trained() -> None:
    images = toy_images(10)
    with torch.random.fork_rng(devices=[]):
        untrained = create_model("cse", **FAST)._build_module("random")
    model = fit(images, validation_fraction=0.0)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            untrained.embedder.state_dict().values(),
            model.module_.embedder.state_dict().values(),
            strict=True,
        )
    ]
    assert all(changed)


# ----------------------------------------------------------------------------- bank
def test_kmeans_one_cluster_is_the_mean_direction() -> None:
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) + 2.0
    centre = spherical_kmeans(x, 1, seed=0)
    assert centre.shape == (1, 16)
    expected = F.normalize(F.normalize(x, dim=1).mean(0), dim=0)
    torch.testing.assert_close(centre[0], expected, atol=1e-5, rtol=1e-5)


def test_kmeans_finds_separated_directions_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    dirs = torch.eye(8)[:3]
    x = torch.cat([d + 0.05 * torch.randn(100, 8, generator=g) for d in dirs])
    centres = spherical_kmeans(x, 3, seed=1)
    assert centres.shape == (3, 8)
    torch.testing.assert_close(centres.norm(dim=1), torch.ones(3))
    # every true direction has a centre within a few degrees
    assert (dirs @ centres.T).amax(dim=1).min() > 0.99
    torch.testing.assert_close(centres, spherical_kmeans(x, 3, seed=1), rtol=0, atol=0)
    with pytest.raises(DataError, match="lower n_clusters"):
        spherical_kmeans(x[:2], 3, seed=0)


def test_bank_shapes_and_one_cluster_equals_mean_training_embedding() -> None:
    images = toy_images(10)
    model = fit(images, n_clusters=1)
    module = model.module_
    assert module.centres.shape == (1, model.embed_dim)
    with torch.inference_mode():
        pooled = module.embeddings(images)
    flat = F.normalize(pooled.permute(0, 2, 3, 1).reshape(-1, pooled.shape[1]), dim=1)
    torch.testing.assert_close(
        module.centres[0], F.normalize(flat.mean(0), dim=0), atol=1e-5, rtol=1e-4
    )
    three = fit(images, n_clusters=3)
    assert three.module_.centres.shape == (3, model.embed_dim)
    torch.testing.assert_close(three.module_.centres.norm(dim=1), torch.ones(3))


def test_scores_are_mean_distance_to_nearest_centre() -> None:
    images = toy_images(10)
    model = fit(images, n_clusters=2)
    module = model.module_
    with torch.inference_mode():
        pooled = module.embeddings(images[:3])
        unit = F.normalize(pooled, dim=1)
        sim = torch.einsum("bdhw,kd->bkhw", unit, module.centres).amax(dim=1)
        expected = (1 - sim).mean(dim=(1, 2))
    np.testing.assert_allclose(model.predict(images[:3]).scores, expected.numpy(), rtol=1e-5)
    maxed = fit(images, n_clusters=2, image_score="max").predict(images[:3])
    np.testing.assert_allclose(maxed.scores, maxed.maps.reshape(3, -1).max(1), rtol=1e-6)


# ----------------------------------------------------------------------------- fitting
def test_predict_before_fit_raises() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        create_model("cse", **FAST).predict(torch.rand(1, 3, 64, 64))


def test_same_seed_same_result_other_seed_differs() -> None:
    images = toy_images(10)
    a = fit(images, seed=5).predict(images).scores
    b = fit(images, seed=5).predict(images).scores
    c = fit(images, seed=6).predict(images).scores
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_checkpoint_is_the_epoch_with_lowest_validation_loss() -> None:
    images = toy_images(12)
    model = fit(images, epochs=5, lr=3e-3)
    history = model.history_
    assert history is not None
    assert len(history.epoch_losses) == len(history.val_losses) == 5
    assert history.best_epoch == int(np.argmin(history.val_losses))
    # the kept embedder reproduces the best validation loss (fixed, seeded validation pairs)
    module = model.module_
    from flawmap.data import split_holdout
    from flawmap.synth import DefectSynthesizer

    _, val_idx = split_holdout(len(images), model.validation_fraction, model.seed)
    val_images = images[torch.from_numpy(val_idx)]

    def extract(x: torch.Tensor) -> list[torch.Tensor]:
        return list(module.extractor(x.float()))

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)
        pairs = model._validation_pairs(
            extract, extract(val_images), val_images.half(), DefectSynthesizer(None)
        )
    loss = model._validation_loss(module, model.decoder_, pairs)
    assert loss == pytest.approx(history.val_losses[history.best_epoch], rel=1e-5)


def test_no_validation_keeps_last_epoch() -> None:
    model = fit(toy_images(6), epochs=3, validation_fraction=0.0)
    assert model.history_.val_losses == [] and model.history_.best_epoch == 2


def test_mask_reading_trains_and_save_load_round_trip(tmp_path: Path) -> None:
    images = toy_images(10)
    model = fit(images, damaged_positions="mask", threshold_holdout=0.2)
    assert math.isfinite(model.history_.epoch_losses[-1])
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    a, b = model.predict(images), loaded.predict(images)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, a.scores >= a.threshold)
    assert a.threshold == b.threshold and loaded.get_params() == model.get_params()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"n_clusters": 1.5}, "n_clusters"),
        ({"damage_probability": 1.5}, "damage_probability"),
        ({"damaged_positions": "some"}, "damaged_positions"),
        ({"image_score": "median"}, "image_score"),
        ({"betas": (0.5, 1.0)}, "betas"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"image_size": 16}, "image_size >= 32"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_model("cse", **{**FAST, **params}).fit(toy_images(4))


def test_one_image_needs_no_validation() -> None:
    with pytest.raises(DataError, match="validation_fraction=0"):
        fit(toy_images(1))
    assert fit(toy_images(1), validation_fraction=0.0).is_fitted


def test_paper_schedule_values() -> None:
    schedule = CSE.PAPER_SCHEDULE
    assert schedule["epochs"] == 100 and schedule["train_batch_size"] == 8
    assert schedule["lr"] == 4e-4 and schedule["betas"] == (0.5, 0.999)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.skipif(not lite0_weights_installed(), reason="needs the EfficientNet-Lite0 weights")
def test_planted_defect_scores_higher() -> None:
    rng = np.random.default_rng(1)
    train = to_tensor([textured_image(rng, 128) for _ in range(16)])
    good = to_tensor([textured_image(rng, 128) for _ in range(4)])
    bad = to_tensor([plant_defect(textured_image(rng, 128), rng, box=24)[0] for _ in range(4)])
    model = fit(train, weights="pretrained", image_size=128, epochs=5)
    assert model.predict(bad).scores.min() > model.predict(good).scores.max()
