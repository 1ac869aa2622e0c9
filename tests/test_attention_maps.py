"""Attention maps (docs/method.md §4): the registry, head aggregation and the weight-free maps on photos."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoda_sr.attention import (
    DEFAULT_METHOD,
    METHODS,
    WEIGHTED_METHODS,
    MissingWeightsError,
    _cached_backbone,
    aggregate_heads,
    compute_attention,
    default_weights_path,
)
from yoda_sr.errors import YodaError
from yoda_sr.image.imaging import bicubic_degrade, to_tensor

from conftest import photo

WEIGHT_FREE = ("gaussian", "edge", "sift", "none")
FACE_BOXES = {
    # (top, bottom, left, right) of the face in HR pixels, read off the images.
    "astronaut": (30, 200, 150, 310),
    "grace_hopper": (120, 330, 160, 370),
}


def grace_hopper() -> np.ndarray:
    """matplotlib's sample portrait of Grace Hopper (600 x 512 RGB uint8)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """HR and 4x-downscaled LR tensors of two real portraits."""
    arrays = {"astronaut": photo("astronaut"), "grace_hopper": grace_hopper()}
    return {name: bicubic_degrade(to_tensor(array), 4) for name, array in arrays.items()}


@pytest.fixture(scope="module")
def lr_pair(photos) -> torch.Tensor:
    """Two different 40 x 48 LR images of the same size."""
    _, astronaut = photos["astronaut"]
    _, grace = photos["grace_hopper"]
    return torch.cat([astronaut[..., 10:50, 40:88], grace[..., 30:70, 40:88]])


@pytest.mark.parametrize("method", ["edge", "sift"])
@pytest.mark.parametrize("name", list(FACE_BOXES))
def test_weight_free_maps_attend_to_the_face(photos, name: str, method: str) -> None:
    hr, lr = photos[name]
    attention = compute_attention(lr, method, hr_size=tuple(hr.shape[-2:]))[0, 0]
    top, bottom, left, right = FACE_BOXES[name]
    inside = torch.zeros_like(attention, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    inside_mean, outside_mean = attention[inside].mean(), attention[~inside].mean()
    assert inside_mean > 1.15 * outside_mean, (float(inside_mean), float(outside_mean))


@pytest.mark.parametrize("method", WEIGHT_FREE)
def test_shape_range_dtype_and_determinism(lr_pair: torch.Tensor, method: str) -> None:
    attention = compute_attention(lr_pair, method)
    assert attention.shape == (2, 1, 40, 48)
    assert attention.dtype == torch.float32
    assert not torch.is_inference(attention)
    assert torch.isfinite(attention).all()
    assert attention.min() >= 0 and attention.max() <= 1
    assert torch.equal(attention, compute_attention(lr_pair, method))


@pytest.mark.parametrize("method", ["gaussian", "edge", "sift"])
def test_maps_are_normalised_per_image(lr_pair: torch.Tensor, method: str) -> None:
    attention = compute_attention(lr_pair, method)
    for single in attention:
        assert single.min() == 0
        assert single.max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", WEIGHT_FREE)
def test_batch_equals_each_image_alone(lr_pair: torch.Tensor, method: str) -> None:
    batch = compute_attention(lr_pair, method, hr_size=(160, 192))
    for index in range(2):
        alone = compute_attention(lr_pair[index : index + 1], method, hr_size=(160, 192))
        assert torch.equal(batch[index : index + 1], alone)


@pytest.mark.parametrize("method", ["gaussian", "edge", "sift"])
def test_hr_size_is_a_bilinear_resize_of_the_lr_map(lr_pair: torch.Tensor, method: str) -> None:
    lr_map = compute_attention(lr_pair, method)
    hr_map = compute_attention(lr_pair, method, hr_size=(100, 130))
    assert hr_map.shape == (2, 1, 100, 130)
    expected = torch.nn.functional.interpolate(lr_map, size=(100, 130), mode="bilinear", align_corners=False)
    torch.testing.assert_close(hr_map, expected.clamp(0, 1))


def test_none_is_ones_everywhere(lr_pair: torch.Tensor) -> None:
    attention = compute_attention(lr_pair, "none", hr_size=(160, 192))
    assert torch.equal(attention, torch.ones(2, 1, 160, 192))


def test_gaussian_peaks_at_the_centre() -> None:
    lr = torch.zeros(1, 3, 21, 31)
    attention = compute_attention(lr, "gaussian")[0, 0]
    assert attention[10, 15] == 1.0
    assert attention[0, 0] == 0.0
    assert attention[10, 15] > attention[10, 10] > attention[10, 5] > attention[10, 0]
    assert attention[10, 15] > attention[5, 15] > attention[0, 15]
    assert torch.allclose(attention, attention.flip(0)) and torch.allclose(attention, attention.flip(1))


@pytest.mark.parametrize("method", ["edge", "sift"])
@pytest.mark.parametrize("value", [-1.0, 0.3])
def test_constant_image_gives_zeros(method: str, value: float) -> None:
    lr = torch.full((2, 3, 48, 40), value)
    attention = compute_attention(lr, method, hr_size=(96, 80))
    assert torch.equal(attention, torch.zeros(2, 1, 96, 80))


@pytest.mark.parametrize("method", ["edge", "sift"])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 200)])
def test_tiny_images_do_not_crash(method: str, size: tuple[int, int]) -> None:
    lr = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    attention = compute_attention(lr, method, hr_size=(size[0] * 4, size[1] * 4))
    assert torch.isfinite(attention).all() and attention.min() >= 0 and attention.max() <= 1


def test_unknown_method_lists_the_methods(lr_pair: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown attention method") as raised:
        compute_attention(lr_pair, "canny")
    assert all(method in str(raised.value) for method in METHODS)


@pytest.mark.parametrize("heads", ["min", "", 6, -1, True, 2.5, "6"])
@pytest.mark.parametrize("method", ["edge", "dino-vits8"])
def test_bad_heads_raise(lr_pair: torch.Tensor, method: str, heads) -> None:
    with pytest.raises(ValueError, match="heads"):
        compute_attention(lr_pair, method, heads=heads, weights="/nonexistent/weights.safetensors")


def test_bad_inputs_raise(lr_pair: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="N x 3 x h x w"):
        compute_attention(lr_pair[0], "edge")
    with pytest.raises(ValueError, match="N x 3 x h x w"):
        compute_attention(lr_pair[:, :1], "edge")
    with pytest.raises(ValueError, match="hr_size"):
        compute_attention(lr_pair, "edge", hr_size=(0, 10))


@pytest.fixture
def no_dino(monkeypatch):
    """Replace the DINO module by one that fails if used: missing weights must not reach it."""

    def refuse(*args, **kwargs):
        raise AssertionError("dino_backbone must not be called")

    fake = types.ModuleType("yoda_sr.models.dino")
    fake.dino_backbone = refuse
    monkeypatch.setitem(sys.modules, "yoda_sr.models.dino", fake)


@pytest.mark.parametrize("method", WEIGHTED_METHODS)
def test_missing_weights_file_raises_one_actionable_line(
    lr_pair: torch.Tensor, tmp_path: Path, method: str, no_dino
) -> None:
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(MissingWeightsError) as raised:
        compute_attention(lr_pair, method, weights=missing)
    message = str(raised.value)
    assert isinstance(raised.value, YodaError)
    assert "\n" not in message
    assert method in message and str(missing) in message
    assert f"yoda-sr checkpoints download {method}" in message and "--" not in message  # the CLI adds flags
    assert all(alternative in message for alternative in ("edge", "sift", "gaussian"))


def test_missing_default_weights_name_the_default_path(
    lr_pair: torch.Tensor, tmp_path: Path, monkeypatch, no_dino
) -> None:
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="checkpoints download") as raised:
        compute_attention(lr_pair)
    assert str(tmp_path / "checkpoints" / f"{DEFAULT_METHOD}.safetensors") in str(raised.value)
    assert f"yoda-sr checkpoints download {DEFAULT_METHOD}" in str(raised.value)


def test_default_weights_path_honours_yoda_sr_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    assert default_weights_path("dino-vits16") == tmp_path / "home" / "checkpoints" / "dino-vits16.safetensors"
    monkeypatch.delenv("YODA_SR_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".cache" / "yoda-sr" / "checkpoints" / "dino-resnet50.safetensors"
    assert default_weights_path("dino-resnet50") == expected
    with pytest.raises(ValueError):
        default_weights_path("edge")


def test_aggregate_max_mean_and_index() -> None:
    heads = torch.zeros(1, 3, 2, 2)
    heads[0, 0] = torch.tensor([[0.0, 2.0], [4.0, 0.0]])  # normalised: [[0, .5], [1, 0]]
    heads[0, 1] = torch.tensor([[10.0, 30.0], [10.0, 10.0]])  # normalised: [[0, 1], [0, 0]]
    heads[0, 2] = torch.tensor([[-1.0, -1.0], [-1.0, 0.0]])  # normalised: [[0, 0], [0, 1]]
    torch.testing.assert_close(aggregate_heads(heads, "max")[0, 0], torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    mean = torch.tensor([[0.0, 1.5], [1.0, 1.0]]) / 1.5  # mean of the heads, then renormalised
    torch.testing.assert_close(aggregate_heads(heads, "mean")[0, 0], mean)
    torch.testing.assert_close(aggregate_heads(heads, 0)[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    torch.testing.assert_close(aggregate_heads(heads, "2")[0, 0], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_aggregate_normalises_each_head_per_image() -> None:
    generator = torch.Generator().manual_seed(0)
    heads = torch.rand(2, 6, 7, 9, generator=generator)
    scaled = heads * torch.tensor([1.0, 1e3]).view(2, 1, 1, 1) + torch.arange(6.0).view(1, 6, 1, 1)
    for mode in ("max", "mean", 3):
        result = aggregate_heads(scaled, mode)
        assert result.shape == (2, 1, 7, 9) and result.dtype == torch.float32
        torch.testing.assert_close(result, aggregate_heads(heads, mode))
        assert torch.all(result.amin(dim=(-2, -1)) == 0)
        torch.testing.assert_close(result.amax(dim=(-2, -1)), torch.ones(2, 1))


def test_aggregate_constant_heads_give_zeros() -> None:
    heads = torch.rand(2, 6, 5, 5, generator=torch.Generator().manual_seed(1))
    heads[0] = 3.0
    heads[1, 4] = 0.25
    result = aggregate_heads(heads, "max")
    assert torch.equal(result[0], torch.zeros(1, 5, 5))
    assert torch.equal(aggregate_heads(heads, 4)[1], torch.zeros(1, 5, 5))
    assert torch.isfinite(aggregate_heads(heads, "mean")).all()


@pytest.mark.parametrize("mode", ["median", 3, -1])
def test_aggregate_rejects_bad_modes(mode) -> None:
    with pytest.raises(ValueError, match="heads"):
        aggregate_heads(torch.rand(1, 3, 4, 4), mode)


class FakeHeads(torch.nn.Module):
    """Stands in for a DINO backbone: six per-head maps at 1/4 of the input size."""

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        grey = torch.nn.functional.avg_pool2d(lr, 4).mean(dim=1, keepdim=True)
        return torch.cat([grey.roll(k, dims=-1) * (k + 1) for k in range(6)], dim=1)


def test_dino_methods_aggregate_resize_and_load_once(lr_pair: torch.Tensor, tmp_path: Path, monkeypatch) -> None:
    loads = []

    def fake_backbone(method, weights, device):
        loads.append((method, Path(weights), torch.device(device)))
        return FakeHeads()

    fake = types.ModuleType("yoda_sr.models.dino")
    fake.dino_backbone = fake_backbone
    monkeypatch.setitem(sys.modules, "yoda_sr.models.dino", fake)
    _cached_backbone.cache_clear()
    weights = tmp_path / "resnet.safetensors"
    weights.write_bytes(b"stand-in")
    try:
        first = compute_attention(lr_pair, "dino-resnet50", hr_size=(80, 96), heads=1, weights=weights)
        second = compute_attention(lr_pair, "dino-resnet50", hr_size=(80, 96), heads=1, weights=weights)
    finally:
        _cached_backbone.cache_clear()
    assert loads == [("dino-resnet50", weights.resolve(), torch.device("cpu"))]
    expected = aggregate_heads(FakeHeads()(lr_pair), 1)
    expected = torch.nn.functional.interpolate(expected, size=(80, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(first, expected)
    assert torch.equal(first, second) and first.dtype == torch.float32
