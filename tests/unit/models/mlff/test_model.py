"""MLFF (seed paper 004): QCO quantisation, losses (eq. 3-7), modules, ablation variants,
training with confetti / CutPaste pseudo-anomalies, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flawmap.errors import ConfigError, DataError, NotFittedError
from flawmap.models import MLFF, create_model, load_model
from flawmap.models.base import seed_everything
from flawmap.models.mlff import VARIANTS, MLFFModule
from flawmap.models.mlff.losses import (
    ANOMALOUS,
    IGNORED,
    NORMAL,
    consistency_kl,
    consistency_loss,
    downsample_mask,
    feature_constraint_loss,
    hypersphere_distance,
    score_constraint_loss,
)
from flawmap.models.mlff.modules import (
    PTFEM,
    TEM,
    SelfCalibratedConv,
    STLNet,
    cooccurrence_2d,
    count_levels,
    level_centres,
    quantize_1d,
)
from flawmap.synth import ConfettiNoise, CutPaste
from tests.synthetic import textured_image

FAST = {"weights": "random", "image_size": 64, "threshold_holdout": 0.0}


def toy_images(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = np.stack([textured_image(rng, size) for _ in range(n)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def random_labels(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Labels in {-1, 0, 1}, every image with normal and anomalous pixels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 2, shape, generator=g)
    labels[:, 0, 0], labels[:, 0, 1] = NORMAL, ANOMALOUS
    return labels


# --------------------------------------------------------------------------- QCO
def test_levels_are_bin_centres() -> None:
    torch.testing.assert_close(level_centres(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    with pytest.raises(ConfigError, match="levels"):
        level_centres(1)


def test_quantize_1d_on_a_hand_made_vector() -> None:
    # similarities in [-1, 1] -> s = (S + 1) / 2 = [0, 0.1, 0.5, 0.9, 1, 0.3]
    sim = torch.tensor([[-1.0, -0.8, 0.0, 0.8, 1.0, -0.4]], dtype=torch.float64)
    e, values = quantize_1d(sim, 4)
    assert e.shape == (1, 6, 4) and values.shape == (1, 4)
    expected = torch.zeros(6, 4, dtype=torch.float64)
    # level, 1 - |L_n - s_i| (L = 0.125, 0.375, 0.625, 0.875)
    for i, (level, value) in enumerate(
        [(0, 0.875), (0, 0.975), (2, 0.875), (3, 0.975), (3, 0.875), (1, 0.925)]
    ):
        expected[i, level] = value
    torch.testing.assert_close(e[0], expected)
    # the level values are in similarity units: min + (max - min) L_n
    torch.testing.assert_close(values[0], torch.tensor([-0.75, -0.25, 0.25, 0.75]).double())


@pytest.mark.parametrize("n_levels", [2, 8, 128])
def test_quantize_1d_encodings_and_the_half_bin_cut_off(n_levels: int) -> None:
    sim = torch.rand(3, 200, generator=torch.Generator().manual_seed(n_levels)) * 2 - 1
    e, _ = quantize_1d(sim, n_levels)
    assert (e >= 0).all()
    # exactly one level per position, with an encoding in [1 - 0.5/N, 1] (the minimum sits on
    # the lower edge of level 1)
    assert ((e > 0).sum(dim=-1) == 1).all()
    row_sums = e.sum(dim=-1)
    assert (row_sums >= 1 - 0.5 / n_levels - 1e-6).all() and (row_sums <= 1).all()
    # E(i, n) > 0 exactly when |L_n - s_i| < 0.5 / N (s = min-max normalised similarity)
    lo, hi = sim.amin(1, keepdim=True), sim.amax(1, keepdim=True)
    s = (sim - lo) / (hi - lo)
    distance = (level_centres(n_levels)[None, None] - s[..., None]).abs()
    inside = distance < 0.5 / n_levels - 1e-6
    outside = distance > 0.5 / n_levels + 1e-6
    assert (e[inside] > 0).all() and (e[outside] == 0).all()
    torch.testing.assert_close(e[inside], 1 - distance[inside])
    # counting (eq. 2): a normalised histogram
    torch.testing.assert_close(count_levels(e).sum(-1), torch.ones(3))


def test_quantize_1d_boundaries_and_constant_input() -> None:
    # N = 4: 0.5 is the boundary between levels 2 and 3 (0-based 1 and 2): the upper one
    e, _ = quantize_1d(torch.tensor([[0.0, 0.5, 1.0]]), 4)
    assert e[0].argmax(-1).tolist() == [0, 2, 3]
    # just beyond the cut-off of level 0 (0.125 + 0.125 + 1e-3): level 1, not 0
    e, _ = quantize_1d(torch.tensor([[0.0, 0.251, 1.0]]), 4)
    assert e[0, 1, 0] == 0 and e[0, 1, 1] > 0
    e, values = quantize_1d(torch.full((1, 5), 0.3), 4)
    assert torch.isfinite(e).all() and (e[0, :, 0] > 0).all() and (e[0, :, 1:] == 0).all()
    torch.testing.assert_close(values, torch.full((1, 4), 0.3))


def test_cooccurrence_counts_neighbouring_pairs() -> None:
    # 2 x 2 grid, levels [[0, 1], [1, 1]] (one-hot, N = 2)
    levels = torch.tensor([[0, 1], [1, 1]])
    e = torch.nn.functional.one_hot(levels, 2).float()[None]
    cooc = cooccurrence_2d(e)[0]
    # pairs: horizontal (0,1), (1,1); vertical (0,1), (1,1) -> C(0,1) = 2, C(1,1) = 2
    torch.testing.assert_close(cooc, torch.tensor([[0.0, 0.5], [0.0, 0.5]]))


# --------------------------------------------------------------------------- modules
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (32, 32)])
def test_module_shapes(size: tuple[int, int]) -> None:
    x = torch.randn(2, 16, *size)
    assert TEM(16, 32)(x).shape == x.shape
    assert PTFEM(16, (1, 2, 4, 8), 8)(x).shape == x.shape
    assert STLNet(16, 32, 4)(x).shape == x.shape
    assert SelfCalibratedConv(16)(x).shape == x.shape


def test_self_calibration_pool_is_capped_for_small_maps() -> None:
    sc = SelfCalibratedConv(8, pool=4).train()
    out = sc(torch.randn(1, 8, 2, 2))  # pooled to 1 x 1 would break BatchNorm with one image
    assert out.shape == (1, 8, 2, 2) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="sc_pool"):
        SelfCalibratedConv(8, pool=0)


def test_tem_rebuilds_positions_from_their_level() -> None:
    tem = TEM(8, 16).eval()
    x = torch.randn(1, 8, 6, 6)
    out = tem(x).flatten(2)[0].T  # (K, C)
    with torch.no_grad():
        pre = tem.pre(x)
        sim = torch.nn.functional.cosine_similarity(pre, pre.mean(dim=(2, 3), keepdim=True), dim=1)
        e, _ = quantize_1d(sim.flatten(1), 16)
    level = e[0].argmax(-1)
    # two positions in the same level differ only by their encoding factor 1 - |L - s|
    for n in level.unique():
        rows = out[level == n] / e[0][level == n, n][:, None]
        torch.testing.assert_close(rows, rows[:1].expand_as(rows), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- losses
def a_direct(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v) + 1) - 1


def test_hypersphere_distance_is_eq3_and_smooth_at_the_centre() -> None:
    psi = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    a = hypersphere_distance(psi)
    for b, i, j in [(0, 0, 0), (1, 3, 4), (1, 2, 1)]:
        assert a[b, i, j].item() == pytest.approx(a_direct(psi[b, :, i, j].tolist()), rel=1e-12)
    zero = torch.zeros(1, 3, 2, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(hypersphere_distance(zero).sum(), zero)
    assert torch.isfinite(grad).all()


def feature_direct(psi: torch.Tensor, labels: torch.Tensor) -> float:
    normal, anomalous = [], []
    b, _, h, w = psi.shape
    for n in range(b):
        for i in range(h):
            for j in range(w):
                a = a_direct(psi[n, :, i, j].tolist())
                if labels[n, i, j] == NORMAL:
                    normal.append(a)
                elif labels[n, i, j] == ANOMALOUS:
                    anomalous.append(-math.log(1 - math.exp(-a)))
    return sum(normal) / len(normal) + sum(anomalous) / len(anomalous)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_feature_loss_is_eq4(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)
    labels = random_labels((2, 3, 4), seed)
    got = feature_constraint_loss(psi, labels).item()
    assert got == pytest.approx(feature_direct(psi, labels), rel=1e-9)


def test_feature_loss_edge_cases() -> None:
    psi = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    normal_only = torch.zeros(2, 2, 2, dtype=torch.int64)
    expected = hypersphere_distance(psi).mean().item()
    assert feature_constraint_loss(psi, normal_only).item() == pytest.approx(expected)
    # anomalous pixels at the centre: finite loss and gradient
    zero = torch.zeros(1, 3, 2, 2, requires_grad=True)
    value = feature_constraint_loss(zero, torch.ones(1, 2, 2, dtype=torch.int64))
    (grad,) = torch.autograd.grad(value, zero)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    with pytest.raises(DataError, match="shape"):
        feature_constraint_loss(psi, torch.zeros(2, 3, 3, dtype=torch.int64))
    with pytest.raises(DataError, match="only 0"):
        feature_constraint_loss(psi, torch.full((2, 2, 2), 2))


def score_direct(scores: torch.Tensor, labels: torch.Tensor, gamma: float, lam: float) -> float:
    normal_terms, anomalous_terms = [], []
    for n in range(len(scores)):
        s, y = scores[n].flatten().tolist(), labels[n].flatten().tolist()
        normals = [v for v, t in zip(s, y, strict=True) if t == NORMAL]
        mean_n = sum(normals) / len(normals)
        normal_terms += [max(0.0, v - gamma) for v in normals]
        anomalous_terms += [
            max(0.0, lam - (v - mean_n)) for v, t in zip(s, y, strict=True) if t == ANOMALOUS
        ]
    return sum(normal_terms) / len(normal_terms) + sum(anomalous_terms) / len(anomalous_terms)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_loss_is_eq5(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * 4
    labels = random_labels((3, 4, 4), seed)
    got = score_constraint_loss(scores, labels, gamma=2.5, margin=5.0).item()
    assert got == pytest.approx(score_direct(scores, labels, 2.5, 5.0), rel=1e-9)
    got = score_constraint_loss(scores, labels, gamma=0.5, margin=1.0).item()
    assert got == pytest.approx(score_direct(scores, labels, 0.5, 1.0), rel=1e-9)


def test_score_loss_zero_when_margins_hold_and_fallbacks() -> None:
    labels = torch.tensor([[[NORMAL, NORMAL, ANOMALOUS, IGNORED]]])
    scores = torch.tensor([[[1.0, 2.0, 7.0, -50.0]]])  # normal <= 2.5, 7 - 1.5 >= 5
    assert score_constraint_loss(scores, labels).item() == 0.0
    # an image without normal pixels compares with the batch's mean normal score (1.5)
    labels = torch.tensor([[[NORMAL, NORMAL]], [[ANOMALOUS, ANOMALOUS]]])
    scores = torch.tensor([[[1.0, 2.0]], [[4.0, 6.0]]])
    expected = ((5 - (4 - 1.5)) + (5 - (6 - 1.5))) / 2
    assert score_constraint_loss(scores, labels).item() == pytest.approx(expected)
    # ... and a batch without any with gamma
    only = torch.ones(1, 1, 2, dtype=torch.int64)
    expected = ((5 - (4 - 2.5)) + (5 - (6 - 2.5))) / 2
    assert score_constraint_loss(scores[1:], only).item() == pytest.approx(expected)


def kl_direct(features: torch.Tensor, scores: torch.Tensor) -> float:
    k = len(features)

    def dist(x: torch.Tensor) -> list[list[float]]:
        return [[math.dist(x[i].tolist(), x[j].tolist()) for j in range(k)] for i in range(k)]

    def softmax(row: list[float]) -> list[float]:
        z = [math.exp(v) for v in row]
        return [v / sum(z) for v in z]

    p, q = dist(features), dist(scores)
    total = 0.0
    for i in range(k):
        pi, qi = softmax(p[i]), softmax(q[i])
        total += sum(qj * math.log(qj / pj) for qj, pj in zip(qi, pi, strict=True))
    return total / k


@pytest.mark.parametrize("seed", [0, 1])
def test_consistency_kl_is_eq6(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(6, 4, generator=g, dtype=torch.float64)
    scores = torch.randn(6, 1, generator=g, dtype=torch.float64) * 2
    got = consistency_kl(features, scores).item()
    assert got == pytest.approx(kl_direct(features, scores), rel=1e-9)
    assert got > 0


def test_consistency_is_zero_when_score_distances_equal_feature_distances() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(8, 1, generator=g, dtype=torch.float64)
    direction = torch.tensor([[0.6, 0.0, -0.8]], dtype=torch.float64)  # unit vector
    features = scores * direction + 3.0  # same pairwise distances, in 3-D
    assert consistency_kl(features, scores).item() == pytest.approx(0.0, abs=1e-12)
    features.requires_grad_(True)
    (grad,) = torch.autograd.grad(consistency_kl(features, scores), features)
    assert torch.isfinite(grad).all()  # the zero diagonal has a finite gradient


def test_consistency_gradient_is_finite_when_two_patches_coincide() -> None:
    # flat, saturated image regions give identical patch features and scores; the backward
    # pass of sqrt at a zero distance must not turn them into NaN (it did, on magnetic tile)
    g = torch.Generator().manual_seed(2)
    features = torch.randn(6, 4, generator=g, dtype=torch.float64)
    scores = torch.randn(6, 1, generator=g, dtype=torch.float64)
    features[3], scores[5] = features[1], scores[0]
    features.requires_grad_(True)
    scores.requires_grad_(True)
    loss = consistency_kl(features, scores)
    assert loss.item() == pytest.approx(kl_direct(features.detach(), scores.detach()), rel=1e-9)
    loss.backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(scores.grad).all()


def test_consistency_loss_uses_normal_patches_only_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(1)
    psi = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    scores = torch.randn(2, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.zeros(2, 8, 8, dtype=torch.int64)
    labels[0, :4, :4] = ANOMALOUS
    labels[1, 5, 5] = IGNORED

    def run(p: torch.Tensor, s: torch.Tensor, seed: int = 0, positions: int = 64) -> float:
        gen = torch.Generator().manual_seed(seed)
        return consistency_loss(p, s, labels, gen, patch_size=2, positions=positions).item()

    base = run(psi, scores)
    assert base > 0 and run(psi, scores) == base
    # changing pixels outside normal patches changes nothing
    p2, s2 = psi.clone(), scores.clone()
    p2[0, :, :4, :4] += 10.0
    s2[1, 4:6, 4:6] -= 7.0
    assert run(p2, s2) == pytest.approx(base, rel=1e-12)
    # with all patches (K >= patches) it is the mean over images of eq. 6 on pooled patches
    pooled_f = torch.nn.functional.avg_pool2d(psi, 2).flatten(2)
    pooled_s = torch.nn.functional.avg_pool2d(scores[:, None], 2).flatten(2)
    keep0 = [i for i in range(16) if not (i // 4 < 2 and i % 4 < 2)]
    keep1 = [i for i in range(16) if i != 2 * 4 + 2]
    expected = (
        kl_direct(pooled_f[0, :, keep0].T, pooled_s[0, :, keep0].T)
        + kl_direct(pooled_f[1, :, keep1].T, pooled_s[1, :, keep1].T)
    ) / 2
    assert base == pytest.approx(expected, rel=1e-9)
    # K positions sampled with the generator: different seeds, different subsets
    assert run(psi, scores, 0, 4) != run(psi, scores, 1, 4)
    none = torch.ones(2, 8, 8, dtype=torch.int64)
    gen = torch.Generator().manual_seed(0)
    assert consistency_loss(psi, scores, none, gen).item() == 0.0


def test_downsample_mask() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, 4:5] = 1  # cell (0, 1): 4 / 16 = 0.25
    mask[0, 0, 4:8, 0:2] = 1  # cell (1, 0): 0.5
    mask[0, 0, 4:, 4:] = 1  # cell (1, 1): 1
    labels = downsample_mask(mask, (2, 2), 0.5)
    assert labels.tolist() == [[[NORMAL, IGNORED], [ANOMALOUS, ANOMALOUS]]]
    assert downsample_mask(mask, (2, 2), 0.25)[0, 0, 1] == ANOMALOUS
    with pytest.raises(ConfigError, match="mask_fraction"):
        downsample_mask(mask, (2, 2), 0.0)
    with pytest.raises(DataError, match="shape"):
        downsample_mask(mask[0], (2, 2))


# --------------------------------------------------------------------------- variants
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_and_parts_through_every_ablation(variant: str) -> None:
    seed_everything(0)
    model = MLFF(**FAST, variant=variant)
    module = model._build_module("random")
    spec = VARIANTS[variant]
    net = module.net
    assert (net.sc is not None) == spec.self_calibration
    assert (net.stl is not None) == spec.stl
    assert (net.score is not None) == spec.score
    images = toy_images(3)
    module.train()
    psi, scores = net(module.extractor(images))
    assert psi.shape == (3, model.feature_dim, 8, 8)  # stride 8 at 64 px
    if spec.score:
        assert scores is not None and scores.shape == (3, 8, 8)
    else:
        assert scores is None
    labels = random_labels((3, 8, 8), 0)
    loss = model.loss(psi, scores, labels, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for name, p in net.named_parameters()
        if "score" not in name or spec.score
    )
    module.eval()
    with torch.no_grad():
        raw = module.patch_scores(images)
        image_scores, maps = module(images)
    assert raw.shape == (3, 1, 8, 8) and maps.shape == (3, 64, 64) and image_scores.shape == (3,)
    if not spec.score:  # distance as score: A >= 0
        assert (raw >= 0).all()


def test_loss_terms_follow_the_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    import flawmap.models.mlff.model as mlff_model

    psi = torch.randn(2, 4, 4, 4)
    scores = torch.randn(2, 4, 4)
    labels = random_labels((2, 4, 4), 0)
    g = torch.Generator().manual_seed(0)
    f = feature_constraint_loss(psi, labels)
    s = score_constraint_loss(scores, labels)
    c = consistency_loss(psi, scores, labels, torch.Generator().manual_seed(0))
    full = MLFF(variant="full", alpha=0.5, beta=2.0, xi=3.0).loss(psi, scores, labels, g)
    assert full.item() == pytest.approx((0.5 * f + 2 * s + 3 * c).item())
    score = MLFF(variant="+score").loss(psi, scores, labels, g)
    assert score.item() == pytest.approx((f + s).item())
    assert MLFF(variant="+stl").loss(psi, None, labels, g).item() == pytest.approx(f.item())
    monkeypatch.setattr(mlff_model, "consistency_loss", None)  # never called below "full"
    MLFF(variant="+score").loss(psi, scores, labels, g)


# --------------------------------------------------------------------------- training
def test_training_draws_the_pseudo_anomaly_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"confetti": 0, "cutpaste": 0}
    for cls, key in ((ConfettiNoise, "confetti"), (CutPaste, "cutpaste")):
        original = cls.__call__

        def spy(self, image, generator, _original=original, _key=key):  # type: ignore[no-untyped-def]
            calls[_key] += 1
            return _original(self, image, generator)

        monkeypatch.setattr(cls, "__call__", spy)
    model = MLFF(**FAST, variant="full", epochs=2, repeats=3, anomaly_fraction=0.5)
    model.fit(toy_images(6))
    # 2 epochs x round(0.5 x 3 x 6) = 9 pseudo-anomalies each, about half of each kind
    assert calls["confetti"] + calls["cutpaste"] == 18
    assert calls["confetti"] > 3 and calls["cutpaste"] > 3
    assert len(model.history_.epoch_losses) == 2 and len(model.history_.epoch_seconds) == 2
    assert all(math.isfinite(v) for v in model.history_.epoch_losses)


def test_frozen_backbone_stays_and_fusion_network_changes() -> None:
    model = MLFF(**FAST, variant="full", epochs=1, repeats=2, seed=3)
    seed_everything(3)
    initial = model._build_module("random").state_dict()
    model.fit(toy_images(6))
    fitted = model.module_.state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], fitted[k])}
    assert not any(k.startswith("extractor.") for k in changed)
    assert any(k.startswith("net.stl.") for k in changed)
    assert any(k.startswith("net.sc.") for k in changed)
    assert "net.score.weight" in changed


def test_fine_tuning_the_last_stage() -> None:
    model = MLFF(**FAST, variant="+sc", epochs=1, repeats=1, finetune_stages=1, seed=1)
    seed_everything(1)
    initial = model._build_module("random").state_dict()
    model.fit(toy_images(4))
    fitted = model.module_.state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], fitted[k])}
    stages = {k.split(".")[3] for k in changed if k.startswith("extractor.net.blocks.")}
    assert stages and stages <= {"3", "4"}  # the blocks between stride 8 and 16 only


def test_predict_before_fit_and_save_load_round_trip(tmp_path: Path) -> None:
    model = create_model("mlff", **FAST, epochs=1, repeats=1, variant="full")
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(toy_images(1))
    model.fit(toy_images(4))
    assert isinstance(model.module_, MLFFModule)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MLFF) and loaded.get_params() == model.get_params()
    assert loaded.get_params()["ptfem_scales"] == (1, 2, 4, 8)  # a tuple, as annotated
    test = toy_images(3, seed=7)
    a, b = model.predict(test), loaded.predict(test)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)


def test_baseline_save_load_round_trip(tmp_path: Path) -> None:
    model = MLFF(**FAST, epochs=1, repeats=1, variant="baseline").fit(toy_images(4))
    loaded = load_model(model.save(tmp_path / "b"))
    test = toy_images(2, seed=3)
    np.testing.assert_array_equal(model.predict(test).maps, loaded.predict(test).maps)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"variant": "+all"}, "variant must be one of"),
        ({"layers": (1, 2)}, "three backbone stages"),
        ({"layers": (3, 2, 1)}, "increasing strides"),
        ({"anomaly_fraction": 1.5}, "anomaly_fraction"),
        ({"epochs": 0}, "epochs"),
        ({"tem_levels": 1}, "tem_levels"),
        ({"mask_fraction": 0.0}, "mask_fraction"),
        ({"consistency_positions": 1}, "consistency_positions"),
        ({"ptfem_scales": (0, 2)}, "ptfem_scales"),
        ({"xi": -1.0}, "xi"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_parameters_are_validated(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_model("mlff", **FAST, **params).fit(toy_images(2))
