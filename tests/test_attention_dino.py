"""DINO attention backbones: weight formats, strict loading, the input-size rule, maps on a photo."""

from __future__ import annotations

import math
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from yoda_sr.image.imaging import resize_bicubic, to_tensor
from yoda_sr.models.dino import (
    ATTENTION_HEADS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    METHODS,
    DinoResNet50Attention,
    DinoViTAttention,
    attention_input_size,
    attention_pooling,
    build_attention_module,
    dino_backbone,
    prepare_input,
)

from conftest import photo


def save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path))
    return path


@cache
def _torchvision_trunk_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    image = resize_bicubic(to_tensor(photo("astronaut")), size=(224, 224))
    with torch.no_grad():
        model.train()(prepare_input(image, 224, 16, torch.device("cpu"), torch.float32))
    state = model.state_dict()
    return {key: tensor for key, tensor in state.items() if not key.startswith("fc.")}


@cache
def _timm_vit_state(patch_size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    name = f"vit_small_patch{patch_size}_224"
    return timm.create_model(name, pretrained=False, num_classes=0).state_dict()


def torchvision_trunk_state() -> dict[str, torch.Tensor]:
    """A random torchvision ResNet-50 state dict without the classifier (a copy).

    Its BatchNorm statistics are measured on a photo, as in a trained net, so that layer4 features
    are O(1) and the heads' maps are not one-hot (with the default init they reach ~100).
    """
    return dict(_torchvision_trunk_state())


def timm_vit_state(patch_size: int) -> dict[str, torch.Tensor]:
    """A randomly initialised timm ViT-S state dict, keyed as timm's ``.dino`` safetensors (a copy)."""
    return dict(_timm_vit_state(patch_size))


@pytest.fixture(scope="module")
def astronaut_lr() -> torch.Tensor:
    """A non-square 120 x 96 LR photo and its mirror image, 2 x 3 x 120 x 96 in [-1, 1]."""
    image = resize_bicubic(to_tensor(photo("astronaut"))[..., 32:512, 0:384], size=(120, 96))
    return torch.cat([image, image.flip(-1)])


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_state(torchvision_trunk_state(), tmp_path_factory.mktemp("rn50") / "rn50.safetensors")


@pytest.fixture(scope="module")
def vit16_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_state(timm_vit_state(16), tmp_path_factory.mktemp("vit16") / "vits16.safetensors")


def test_resnet_trunk_keys_are_torchvision_keys_without_fc() -> None:
    backbone_state = DinoResNet50Attention().backbone.state_dict()
    trunk_state = torchvision_trunk_state()
    assert list(backbone_state) == list(trunk_state)
    assert all(backbone_state[key].shape == trunk_state[key].shape for key in trunk_state)


@pytest.mark.parametrize(
    ("height", "width", "attention_size", "multiple", "expected"),
    [
        (120, 96, 448, 16, (560, 448)),
        (300, 512, 448, 16, (448, 768)),
        (100, 37, 64, 8, (176, 64)),
        (37, 100, 64, 8, (64, 176)),
        (120, 96, 96, 16, (128, 96)),
        (3, 1000, 10, 16, (16, 3328)),
    ],
)
def test_input_size_short_side_to_attention_size_rounded_to_multiple(
    height: int, width: int, attention_size: int, multiple: int, expected: tuple[int, int]
) -> None:
    size = attention_input_size(height, width, attention_size, multiple)
    assert size == expected
    assert all(side % multiple == 0 and side >= multiple for side in size)
    scale = attention_size / min(height, width)
    for side, lr_side in zip(size, (height, width), strict=True):
        assert abs(side - lr_side * scale) <= multiple / 2 or side == multiple


def test_prepare_input_normalises_with_imagenet_statistics() -> None:
    grey = torch.zeros(1, 3, 20, 30)
    x = prepare_input(grey, 32, 16, torch.device("cpu"), torch.float64)
    assert x.shape == (1, 3, 32, 48) and x.dtype == torch.float64
    expected = [(0.5 - mean) / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.tensor(expected, dtype=torch.float64))


def test_attention_pooling_splits_channels_342_342_341_341_341_341() -> None:
    features = torch.randn(2, 2048, 3, 4, generator=torch.Generator().manual_seed(0)).relu()
    maps = attention_pooling(features, ATTENTION_HEADS)
    bounds = [0, 342, 684, 1025, 1366, 1707, 2048]
    for head, (start, stop) in enumerate(pairwise(bounds)):
        keys = features[:, start:stop].flatten(2)
        query = keys.mean(dim=2)
        logits = torch.einsum("nc,ncp->np", query, keys) / math.sqrt(stop - start)
        assert torch.allclose(maps[:, head].flatten(1), logits.softmax(dim=-1), atol=1e-6)


def test_resnet_heads_on_a_photo(resnet_weights: Path, astronaut_lr: torch.Tensor) -> None:
    torch.manual_seed(1)
    module = DinoResNet50Attention(attention_size=224)
    module.load_weights(resnet_weights)
    trunk_state = torchvision_trunk_state()
    assert torch.equal(module.backbone.layer4[2].conv3.weight, trunk_state["layer4.2.conv3.weight"])
    assert not module.training
    with torch.inference_mode():
        maps = module(astronaut_lr)
        again = module(astronaut_lr)
        single = module(astronaut_lr[1:])
    height, width = attention_input_size(120, 96, 224, 16)
    assert maps.shape == (2, ATTENTION_HEADS, height // 16, width // 16) == (2, 6, 18, 14)
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(2, ATTENTION_HEADS), atol=1e-5)
    assert torch.equal(maps, again)
    assert torch.allclose(single, maps[1:], atol=1e-6)
    assert maps.flatten(2).std(dim=-1).min() > 0

    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True])
    classifier = {k: v for k, v in reference.state_dict().items() if k.startswith("fc.")}
    reference.load_state_dict(trunk_state | classifier)
    trunk = torch.nn.Sequential(*list(reference.children())[:-2]).eval()
    with torch.inference_mode():
        features = trunk(prepare_input(astronaut_lr, 224, 16, torch.device("cpu"), torch.float32))
    assert features.shape == (2, 2048, 18, 14)
    difference = (attention_pooling(features) - maps).abs().max()
    assert difference < 1e-3 * maps.max(), difference


@pytest.mark.parametrize(("patch_size", "attention_size"), [(16, 96), (8, 64)])
def test_vit_cls_attention_on_a_photo(
    tmp_path: Path, astronaut_lr: torch.Tensor, patch_size: int, attention_size: int
) -> None:
    weights = save_state(timm_vit_state(patch_size), tmp_path / "vit.safetensors")
    torch.manual_seed(1)
    module = DinoViTAttention(patch_size, attention_size=attention_size)
    module.load_weights(weights)
    last_block_input: list[torch.Tensor] = []
    handle = module.backbone.blocks[-1].attn.register_forward_pre_hook(
        lambda _module, inputs: last_block_input.append(inputs[0])
    )
    with torch.inference_mode():
        rows = module.cls_attention(astronaut_lr)
        maps = module(astronaut_lr)
        again = module(astronaut_lr)
    handle.remove()
    grid = module.grid_size(120, 96)
    height, width = attention_input_size(120, 96, attention_size, patch_size)
    assert grid == (height // patch_size, width // patch_size)
    assert rows.shape == (2, ATTENTION_HEADS, 1 + grid[0] * grid[1])
    assert maps.shape == (2, ATTENTION_HEADS, *grid)
    assert torch.isfinite(rows).all() and (rows >= 0).all()
    assert torch.allclose(rows.sum(dim=-1), torch.ones(2, ATTENTION_HEADS), atol=1e-5)
    assert torch.equal(maps.flatten(2), rows[:, :, 1:])
    assert (maps.sum(dim=(-2, -1)) <= 1 + 1e-6).all()
    assert torch.equal(maps, again)

    attention = module.backbone.blocks[-1].attn
    qkv = attention.qkv(last_block_input[0]).unflatten(-1, (3, ATTENTION_HEADS, -1))
    query, key = qkv[:, :1, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
    logits = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    assert torch.allclose(rows, logits.softmax(dim=-1)[:, :, 0], atol=1e-5)


def test_resnet_rejects_fc_and_missing_keys(tmp_path: Path) -> None:
    module = DinoResNet50Attention()
    with_fc = torchvision_trunk_state() | {"fc.weight": torch.zeros(1000, 2048)}
    with pytest.raises(ValueError, match="unexpected keys: fc.weight"):
        module.load_weights(save_state(with_fc, tmp_path / "with_fc.safetensors"))
    missing = torchvision_trunk_state()
    del missing["layer4.2.bn3.running_var"]
    with pytest.raises(ValueError, match="missing keys: layer4.2.bn3.running_var"):
        module.load_weights(save_state(missing, tmp_path / "missing.safetensors"))
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        module.load_weights(tmp_path / "nothing.safetensors")


def test_vit_rejects_other_patch_size_and_extra_keys(tmp_path: Path, vit16_weights: Path) -> None:
    with pytest.raises(ValueError, match="wrong shapes: .*patch_embed.proj.weight"):
        DinoViTAttention(8).load_weights(vit16_weights)
    with_head = timm_vit_state(16) | {"head.weight": torch.zeros(1000, 384)}
    with pytest.raises(ValueError, match="unexpected keys: head.weight"):
        DinoViTAttention(16).load_weights(save_state(with_head, tmp_path / "head.safetensors"))
    with pytest.raises(ValueError, match="patch_size"):
        DinoViTAttention(14)


def test_dino_backbone_loads_by_method_name(tmp_path: Path, resnet_weights: Path, vit16_weights: Path) -> None:
    resnet = dino_backbone("dino-resnet50", resnet_weights, attention_size=224)
    assert isinstance(resnet, DinoResNet50Attention) and not resnet.training
    assert resnet.attention_size == 224
    vit = dino_backbone("dino-vits16", str(vit16_weights), device=torch.device("cpu"))
    assert isinstance(vit, DinoViTAttention) and vit.patch_size == 16 and not vit.training
    assert torch.equal(vit.backbone.cls_token, timm_vit_state(16)["cls_token"])
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        dino_backbone("dino-vits8", tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="unknown DINO attention method"):
        dino_backbone("dino-vitb16", vit16_weights)


def test_build_attention_module_by_method_name() -> None:
    """The public builder the converters use: one untrained module per method, ValueError otherwise."""
    assert METHODS == ("dino-resnet50", "dino-vits8", "dino-vits16")
    vit = build_attention_module("dino-vits8", attention_size=224)
    assert isinstance(vit, DinoViTAttention) and vit.patch_size == 8 and vit.attention_size == 224
    with pytest.raises(ValueError, match="unknown DINO attention method 'dino-vitb16'"):
        build_attention_module("dino-vitb16")


@pytest.mark.parametrize("method", ["dino-resnet50", pytest.param("dino-vits8", marks=pytest.mark.slow), "dino-vits16"])
def test_every_dino_method_runs_end_to_end_from_safetensors(method, tmp_path):
    """Random weights in the official layouts, saved as safetensors, through the public registry."""
    from skimage import data

    from yoda_sr.attention import compute_attention
    from yoda_sr.image.imaging import resize_bicubic, to_tensor
    from yoda_sr.models.dino import write_random_weights

    weights = write_random_weights(method, tmp_path / f"{method}.safetensors")

    lr = resize_bicubic(to_tensor(data.astronaut()), size=(96, 128))
    first = compute_attention(lr, method, hr_size=(384, 512), weights=weights)
    second = compute_attention(lr, method, hr_size=(384, 512), weights=weights)
    assert first.shape == (1, 1, 384, 512)
    assert first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert float(first.max() - first.min()) > 0.5  # normalised on the grid, then resized bilinearly
    assert torch.equal(first, second)
