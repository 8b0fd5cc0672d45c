"""FCDD: losses (eq. 4 and 5), push function, receptive-field upsampling, pre-processing,
partial fine-tuning, training and the semi-supervised folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flawmap.backbones import FeatureExtractor
from flawmap.data import ImageTransform
from flawmap.errors import ConfigError, DataError
from flawmap.models import FCDD, create_model
from flawmap.models.base import seed_everything
from flawmap.models.fcdd import (
    LOSSES,
    ReceptiveField,
    ReceptiveUpsample,
    augment,
    fcdd_loss,
    gaussian_kernel,
    hsc_pixel_loss,
    local_contrast_normalization,
    pseudo_huber,
    push,
    receptive_field,
)
from flawmap.models.losses import PUSH_EPS
from flawmap.synth import ConfettiNoise, load_anomaly_folder
from tests.synthetic import plant_defect, textured_image

FAST = {"weights": "random", "image_size": 64, "threshold_holdout": 0.0}


def toy_images(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = np.stack([textured_image(rng, size) for _ in range(n)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def random_maps(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (4, 5, 6) >= 0 and Y in {0, 1}; image 0 has no anomalous pixel."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(4, 5, 6, generator=g, dtype=torch.float64) * 3
    masks = (torch.rand(4, 5, 6, generator=g) < 0.3).double()
    masks[0] = 0
    masks[1, 0, 0] = 1
    return scores, masks


def p_direct(x: float) -> float:
    return -math.log(1.0 - math.exp(-x))


# --------------------------------------------------------------------------- push, h
def test_push_matches_the_formula() -> None:
    xs = [1e-3, 0.05, 0.5, 0.69, 0.7, 1.0, 3.0, 10.0]
    got = push(torch.tensor(xs, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), [p_direct(x) for x in xs], rtol=1e-12)


def test_push_is_stable_near_zero_and_for_large_arguments() -> None:
    x = torch.tensor([0.0, 1e-12, PUSH_EPS, 1e-5, 30.0, 100.0, 1e4], requires_grad=True)
    p = push(x)
    assert torch.isfinite(p).all() and (p >= 0).all()
    # clamped at PUSH_EPS: p(0) = p(1e-12) = p(eps), finite
    assert p[0] == p[1] == p[2]
    assert p[0].item() == pytest.approx(-math.log(PUSH_EPS), rel=1e-5)
    # asymptotes: p(x) ~ -log(x) near 0, ~ exp(-x) for large x (float32 accurate)
    assert p[3].item() == pytest.approx(-math.log(1e-5), rel=1e-5)
    assert p[4].item() == pytest.approx(math.exp(-30.0), rel=1e-5)
    assert p[5].item() == pytest.approx(math.exp(-100.0), rel=1e-4)
    p.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[3].item() == pytest.approx(-1e5, rel=1e-3)  # p'(x) ~ -1/x near 0


def test_pseudo_huber() -> None:
    x = torch.tensor([-3.0, -1e-3, 0.0, 2.0])
    expected = [math.sqrt(v * v + 1) - 1 for v in x.tolist()]
    np.testing.assert_allclose(pseudo_huber(x).numpy(), expected, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------- losses
def fcdd_direct(a: torch.Tensor, y: torch.Tensor) -> float:
    """Eq. 4 by loops (an image without anomalous pixels has no push term)."""
    n, m = a.shape[0], a[0].numel()
    total = 0.0
    for i in range(n):
        ai, yi = a[i].flatten().tolist(), y[i].flatten().tolist()
        normal = sum((1 - yij) * aij for aij, yij in zip(ai, yi, strict=True)) / m
        anomalous_mean = sum(yij * aij for aij, yij in zip(ai, yi, strict=True)) / m
        total += normal + (p_direct(anomalous_mean) if sum(yi) > 0 else 0.0)
    return total / n


def hsc_direct(a: torch.Tensor, y: torch.Tensor) -> float:
    """Eq. 5 by loops."""
    av, yv = a.flatten().tolist(), y.flatten().tolist()
    j1 = sum(1 for v in yv if v == 1)
    j0 = len(yv) - j1
    total = 0.0
    for aij, yij in zip(av, yv, strict=True):
        total += (1 - yij) * aij
        if yij == 1:
            total += j0 / j1 * p_direct(aij)
    return total / len(yv)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fcdd_loss_is_eq4(seed: int) -> None:
    scores, masks = random_maps(seed)
    assert fcdd_loss(scores, masks).item() == pytest.approx(fcdd_direct(scores, masks), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hsc_pixel_loss_is_eq5(seed: int) -> None:
    scores, masks = random_maps(seed)
    got = hsc_pixel_loss(scores, masks).item()
    assert got == pytest.approx(hsc_direct(scores, masks), rel=1e-12)


def test_hsc_weighting_balances_normal_and_anomalous_pixels() -> None:
    # A = 0 on normal pixels, c on anomalous ones: L = |J0| / (n m) * p(c) whatever |J1| is
    c, nm = 0.7, 2 * 4 * 4
    for n_anomalous in (1, 3, 8):
        masks = torch.zeros(2, 4, 4, dtype=torch.float64)
        masks.view(-1)[:n_anomalous] = 1
        scores = c * masks
        expected = (nm - n_anomalous) / nm * p_direct(c)
        assert hsc_pixel_loss(scores, masks).item() == pytest.approx(expected, rel=1e-12)
    # and eq. 4 instead averages per image: p of the per-image mean over all m pixels
    masks = torch.zeros(1, 4, 4, dtype=torch.float64)
    masks[0, 0, :2] = 1
    assert fcdd_loss(c * masks, masks).item() == pytest.approx(p_direct(2 * c / 16), rel=1e-12)


def test_loss_edge_cases() -> None:
    scores = torch.rand(3, 4, 4, dtype=torch.float64)
    none = torch.zeros_like(scores)
    # no anomalous pixel in the batch: both losses are the mean score
    assert fcdd_loss(scores, none).item() == pytest.approx(scores.mean().item(), rel=1e-12)
    assert hsc_pixel_loss(scores, none).item() == pytest.approx(scores.mean().item(), rel=1e-12)
    # every pixel anomalous: eq. 5's weight |J0| / |J1| is 0; eq. 4 is the mean of p(mean A_i)
    every = torch.ones_like(scores)
    assert hsc_pixel_loss(scores, every).item() == 0.0
    expected = np.mean([p_direct(scores[i].mean().item()) for i in range(3)])
    assert fcdd_loss(scores, every).item() == pytest.approx(expected, rel=1e-12)
    # anomalous pixels at score 0: finite loss and gradients
    zero = torch.zeros(2, 4, 4, requires_grad=True)
    masks = torch.zeros(2, 4, 4)
    masks[0, :2] = 1
    for loss in (fcdd_loss, hsc_pixel_loss):
        value = loss(zero, masks)
        (grad,) = torch.autograd.grad(value, zero)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_loss_input_errors() -> None:
    with pytest.raises(DataError, match="same shape"):
        fcdd_loss(torch.rand(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(DataError, match="only 0"):
        hsc_pixel_loss(torch.rand(2, 4, 4), torch.full((2, 4, 4), 0.5))


# --------------------------------------------------------------------------- upsampling
def test_receptive_field_of_known_backbones() -> None:
    lite = FeatureExtractor("tf_efficientnet_lite0", (2,), "random", truncate=True)
    assert receptive_field(lite) == ReceptiveField(size=67, stride=8, start=-26)
    assert receptive_field(lite).center == 7.0
    resnet = FeatureExtractor("resnet18", (2,), "random")
    # ResNet-18 layer2: the textbook 99 px field, centred on pixel 8p (symmetric padding)
    assert receptive_field(resnet) == ReceptiveField(size=99, stride=8, start=-49)


def test_gaussian_kernel_shape_and_normalisation() -> None:
    k = gaussian_kernel(67, 10.0)
    assert k.shape == (67, 67)
    assert k[33, 33].item() == 1.0 and k.max().item() == 1.0  # peak 1 (FCDD's gkern)
    torch.testing.assert_close(k, k.T)
    torch.testing.assert_close(k, k.flip(0))
    assert k[33, 33 + 10].item() == pytest.approx(math.exp(-0.5), rel=1e-6)  # std 10
    even = gaussian_kernel(62, 10.0)
    torch.testing.assert_close(even, even.flip(0).flip(1))


@pytest.mark.parametrize("size", [(64, 64), (224, 224), (61, 75)])
def test_upsampling_size_gain_and_alignment(size: tuple[int, int]) -> None:
    field = ReceptiveField(size=67, stride=8, start=-26)
    up = ReceptiveUpsample(field, std=10.0)
    h, w = math.ceil(size[0] / 8), math.ceil(size[1] / 8)
    out = up(torch.ones(2, 1, h, w), size)
    assert out.shape == (2, 1, *size)
    # a constant map comes out as ~ constant * sum(K) / stride^2 inside the image
    gain = up.kernel.sum().item() / 64
    assert gain == pytest.approx(9.80, abs=0.01)
    if min(size) >= 200:
        inner = out[0, 0, 90:130, 90:130]
        torch.testing.assert_close(inner, torch.full_like(inner, gain), rtol=2e-3, atol=0)
    # one cell spreads a Gaussian centred on its receptive-field centre (8 p + 7)
    impulse = torch.zeros(1, 1, h, w)
    impulse[0, 0, 3, 4] = 1.0
    out = up(impulse, size)[0, 0]
    peak = divmod(int(out.argmax()), size[1])
    assert peak == (3 * 8 + 7, 4 * 8 + 7)
    assert out.max().item() == pytest.approx(1.0)


@pytest.mark.parametrize(("start", "size"), [(-26, (64, 64)), (-27, (61, 75)), (3, (40, 40))])
def test_upsampling_is_fcdds_shifted_transposed_convolution(
    start: int, size: tuple[int, int]
) -> None:
    field = ReceptiveField(size=62 if start == -27 else 67, stride=8, start=start)
    up = ReceptiveUpsample(field, std=10.0)
    low = torch.rand(2, 1, 8, 10, dtype=torch.float64)
    reference = torch.nn.functional.conv_transpose2d(low, up.kernel[None, None].double(), stride=8)
    th, tw = reference.shape[-2:]
    reference = torch.nn.functional.pad(
        reference, (start, size[1] - tw - start, start, size[0] - th - start)
    )
    torch.testing.assert_close(up(low, size), reference)


def test_default_stage_is_stride_16() -> None:
    module = FCDD(**FAST)._build_module("random")
    assert module.extractor.strides == (16,)
    assert module.upsample.kernel.shape == (339, 339) and int(module.upsample.start) == -154


def test_module_maps_are_the_upsampled_pseudo_huber_scores() -> None:
    model = FCDD(**{**FAST, "layers": (2,)})  # the stride-8 stage: r = 67
    module = model._build_module("random").eval()
    assert module.upsample.kernel.shape == (67, 67) and int(module.upsample.start) == -26
    images = toy_images(2)
    with torch.no_grad():
        low = module.patch_scores(images)
        maps = module.anomaly_maps(images)
        scores, smoothed = module(images)
    assert low.shape == (2, 1, 8, 8) and (low >= 0).all()
    assert maps.shape == (2, 64, 64) and (maps >= 0).all()
    torch.testing.assert_close(maps, module.upsample(low, (64, 64))[:, 0])
    torch.testing.assert_close(scores, smoothed.flatten(1).amax(1))


# --------------------------------------------------------------------------- pre-processing
def test_local_contrast_normalisation() -> None:
    images = toy_images(3)
    out = local_contrast_normalization(images)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.abs().mean(dim=(1, 2, 3)), torch.ones(3))
    # invariant to a global brightness / contrast change
    torch.testing.assert_close(
        local_contrast_normalization(0.5 * images + 0.2), out, atol=1e-4, rtol=0
    )
    assert torch.isfinite(local_contrast_normalization(torch.full((1, 3, 8, 8), 0.3))).all()


def test_min_max_constants_are_fitted_on_training_images() -> None:
    module = FCDD(**FAST)._build_module("random")
    images = toy_images(5)
    module.fit_input_range(images)
    x = module.backbone_input(images)
    torch.testing.assert_close(x.amin(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(x.amax(dim=(0, 2, 3)), torch.ones(3), atol=1e-6, rtol=0)


def test_augmentation_is_seeded_and_keeps_masks_binary() -> None:
    images = toy_images(4)
    noise = ConfettiNoise()
    images, masks = noise.synthesize_batch(images, torch.Generator().manual_seed(0), 1.0)
    a = augment(images, masks, torch.Generator().manual_seed(1))
    b = augment(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == images.shape and a[1].shape == masks.shape
    assert set(a[1].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a[0], images)
    # without jitter and noise only the crop remains: masks follow their images
    _, plain_masks = augment(images, masks, torch.Generator().manual_seed(1), jitter=(0, 0))
    crop, crop_masks = augment(
        images, masks, torch.Generator().manual_seed(1), jitter=(0, 0), noise=0.0
    )
    assert torch.equal(plain_masks, crop_masks)
    for i in range(4):
        if torch.equal(crop_masks[i], masks[i]):
            torch.testing.assert_close(crop[i], images[i])
        else:
            assert not torch.equal(crop[i], images[i])


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("layers", "tuned_blocks"),
    [
        ((2,), (".blocks.2.",)),  # stride 8: the fine-tuned stage is exactly blocks.2
        (None, (".blocks.3.", ".blocks.4.")),  # default stride 16: blocks after stride 8's output
    ],
)
def test_frozen_stages_stay_and_fine_tuned_stage_and_head_change(
    layers: tuple[int, ...] | None, tuned_blocks: tuple[str, ...]
) -> None:
    model = FCDD(**FAST, layers=layers, epochs=1, passes_per_epoch=2, seed=3)
    seed_everything(3)
    initial = model._build_module("random").state_dict()
    model.fit(toy_images(8))
    fitted = model.module_.state_dict()
    assert initial.keys() == fitted.keys()
    changed = {k for k in initial if not torch.equal(initial[k], fitted[k])}
    in_tuned = [k for k in initial if any(b in k for b in tuned_blocks)]
    frozen = [k for k in initial if k.startswith("extractor.net.") and k not in in_tuned]
    assert frozen and not changed & set(frozen)  # weights and BatchNorm statistics
    tuned = [k for k in in_tuned if k.endswith("weight")]
    assert tuned and set(tuned) <= changed
    assert {"head.weight", "head.bias", "input_min", "input_max"} <= changed
    assert not {"upsample.kernel1d", "upsample.start"} & changed


@pytest.mark.parametrize("loss", ["hsc_pixel", "fcdd"])
def test_training_lowers_the_loss_and_finds_a_planted_defect(loss: str) -> None:
    train = toy_images(12)
    # 64 px toy images: the stride-8 stage (r = 67 px); the default stride-16 stage's 339 px
    # receptive field spans the whole image, so its 4 x 4 map cannot localise here
    model = FCDD(**FAST, layers=(2,), loss=loss, epochs=8, passes_per_epoch=4, train_batch_size=4)
    seed_everything(model.seed)
    initial = model._build_module("random").eval()  # the module fit starts from
    initial.fit_input_range(train)
    model.fit(train)
    assert len(model.history_.epoch_losses) == 8
    # the loss on a fixed batch of confetti images (half of them) goes down
    images, masks = ConfettiNoise().synthesize_batch(
        toy_images(8, seed=5), torch.Generator().manual_seed(0), probability=0.5
    )
    with torch.no_grad():
        before = LOSSES[loss](initial.anomaly_maps(images), masks[:, 0]).item()
        after = LOSSES[loss](model.module_.anomaly_maps(images), masks[:, 0]).item()
    assert after < 0.85 * before
    rng = np.random.default_rng(0)
    bad, _ = plant_defect(textured_image(rng), rng)
    bad_score = model.predict(torch.from_numpy(bad).permute(2, 0, 1)[None].float() / 255).scores
    assert bad_score[0] > model.predict(toy_images(4, seed=9)).scores.max()


def test_sgd_schedule_and_an_epoch_is_ten_passes() -> None:
    seen: dict[str, object] = {}

    class Spy(FCDD):  # records what FCDD hands to the shared training loop
        def _train(self, module, step, optimizers, n_items, progress, **kwargs):
            seen.update(n_items=n_items, optimizers=optimizers, schedules=kwargs["schedules"])
            return super()._train(module, step, optimizers, n_items, progress, **kwargs)

    Spy(**FAST, epochs=2, train_batch_size=32).fit(toy_images(3))
    assert seen["n_items"] == 30  # 10 passes over the 3 training images
    (schedule,) = seen["schedules"]
    assert schedule.every == "epoch"
    assert isinstance(schedule.scheduler, torch.optim.lr_scheduler.ExponentialLR)
    (optimizer,) = seen["optimizers"]
    np.testing.assert_allclose(optimizer.param_groups[0]["lr"], 1e-3 * 0.985**2)  # 2 epochs
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 1e-4


def test_parameters_are_validated() -> None:
    images = toy_images(2)
    with pytest.raises(ConfigError, match="loss must be one of"):
        create_model("fcdd", **FAST, loss="hinge").fit(images)
    with pytest.raises(ConfigError, match="exactly one"):
        create_model("fcdd", **FAST, layers=(1, 2)).fit(images)
    with pytest.raises(ConfigError, match="epochs"):
        create_model("fcdd", **FAST, epochs=0).fit(images)
    with pytest.raises(ConfigError, match="anomaly_probability"):
        create_model("fcdd", **FAST, anomaly_probability=1.5).fit(images)


# --------------------------------------------------------------------------- semi-supervised
def write_anomaly_folder(root: Path, with_masks: bool = True, empty_mask: bool = False) -> Path:
    rng = np.random.default_rng(5)
    for defect in ("spot", "scratch"):
        (root / defect).mkdir(parents=True)
        (root / "ground_truth" / defect).mkdir(parents=True)
        image, mask = plant_defect(textured_image(rng, 80), rng)
        Image.fromarray(image).save(root / defect / "000.png")
        if empty_mask:
            mask[:] = False
        if with_masks:
            Image.fromarray((mask * 255).astype(np.uint8)).save(
                root / "ground_truth" / defect / "000_mask.png"
            )
    return root


def test_semi_supervised_uses_the_real_anomalies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_anomaly_folder(tmp_path / "anomalies")
    images, masks = load_anomaly_folder(folder, ImageTransform(64))
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 1, 64, 64)
    assert set(masks.unique().tolist()) == {0.0, 1.0}

    def no_confetti(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("confetti used in the semi-supervised setting")

    monkeypatch.setattr(ConfettiNoise, "__call__", no_confetti)
    model = FCDD(**FAST, epochs=1, passes_per_epoch=2, anomaly_dir=str(folder))
    model.fit(toy_images(6))
    assert model.get_params()["anomaly_dir"] == str(folder)
    assert len(model.history_.epoch_losses) == 1


def test_anomaly_folder_errors(tmp_path: Path) -> None:
    transform = ImageTransform(64)
    with pytest.raises(DataError, match="does not exist"):
        load_anomaly_folder(tmp_path / "missing", transform)
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="ground_truth"):
        load_anomaly_folder(tmp_path / "bare", transform)
    (tmp_path / "bare" / "ground_truth").mkdir()
    with pytest.raises(DataError, match="no defect subfolders"):
        load_anomaly_folder(tmp_path / "bare", transform)
    with pytest.raises(DataError, match="has no mask"):
        load_anomaly_folder(write_anomaly_folder(tmp_path / "nomask", with_masks=False), transform)
    with pytest.raises(DataError, match="empty"):
        load_anomaly_folder(write_anomaly_folder(tmp_path / "empty", empty_mask=True), transform)
    with pytest.raises(DataError, match="does not exist"):
        create_model("fcdd", **FAST, anomaly_dir=str(tmp_path / "missing")).fit(toy_images(2))
