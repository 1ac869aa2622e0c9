"""SR3: shapes, conditioning, config round trip, dtypes and Janspiry's state-dict layout."""

import json

import pytest
import torch

from yoda_sr.models import create_model, get_config
from yoda_sr.models.base import UPSTREAM_DIFFUSION_BUFFERS, Condition
from yoda_sr.models.sr3 import UPSTREAM_PREFIX, SR3UNet

from conftest import tiny_model


def inputs(batch: int = 2, size: tuple[int, int] = (32, 48), seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x_up = torch.rand(batch, 3, *size, generator=generator) * 2 - 1
    z = torch.randn(batch, 3, *size, generator=generator)
    noise_level = torch.rand(batch, generator=generator)
    return x_up, z, noise_level


def predict(model: SR3UNet, x_up: torch.Tensor, z: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
    steps = torch.zeros(z.shape[0], dtype=torch.int64)
    with torch.no_grad():
        return model(z, model.prepare(x_up, x_up), steps, noise_level)


def expected_parameter_count(hparams: dict) -> int:
    """Parameters of Janspiry's SR3 UNet, counted from its architecture description.

    Embedding MLP: Linear(C, 4C), Linear(4C, C). Input conv 3x3 in -> C. A residual block i -> o:
    Linear(C, o) for the noise level, GroupNorm(i) + conv3x3(i, o), GroupNorm(o) + conv3x3(o, o),
    conv1x1(i, o) when i != o; with attention also GroupNorm(o), 1x1 qkv (o -> 3o, no bias) and 1x1
    out (o -> o). Down/up samplers: conv3x3(c, c). Output: GroupNorm(c) + conv3x3(c, out).
    Downs: per level ``res_blocks`` blocks, a downsampler between levels; mid: two blocks at the
    last width (attention in the first); ups: per level, coarsest first, ``res_blocks + 1`` blocks
    whose input adds the matching skip (every down-path output, input conv included, popped LIFO),
    an upsampler between levels.
    """
    inner = hparams["inner_channel"]

    def conv(i: int, o: int, k: int, bias: bool = True) -> int:
        return i * o * k * k + (o if bias else 0)

    def block(i: int, o: int, attn: bool) -> int:
        count = inner * o + o + 2 * i + conv(i, o, 3) + 2 * o + conv(o, o, 3)
        count += conv(i, o, 1) if i != o else 0
        count += 2 * o + conv(o, 3 * o, 1, bias=False) + conv(o, o, 1) if attn else 0
        return count

    total = inner * 4 * inner + 4 * inner + 4 * inner * inner + inner
    total += conv(hparams["in_channel"], inner, 3)
    widths = [inner * mult for mult in hparams["channel_mults"]]
    resolution, channels, skips = hparams["image_size"], inner, [inner]
    for level, width in enumerate(widths):
        for _ in range(hparams["res_blocks"]):
            total += block(channels, width, resolution in hparams["attn_res"])
            channels = width
            skips.append(width)
        if level < len(widths) - 1:
            total += conv(channels, channels, 3)
            skips.append(channels)
            resolution //= 2
    total += block(channels, channels, True) + block(channels, channels, False)
    for level in reversed(range(len(widths))):
        for _ in range(hparams["res_blocks"] + 1):
            total += block(channels + skips.pop(), widths[level], resolution in hparams["attn_res"])
            channels = widths[level]
        if level > 0:
            total += conv(channels, channels, 3)
            resolution *= 2
    return total + 2 * channels + conv(channels, hparams["out_channel"], 3)


@pytest.fixture(scope="module")
def sr3_16_128() -> SR3UNet:
    torch.manual_seed(0)
    return create_model("sr3-16-128").eval()


@pytest.mark.parametrize("size", [(32, 48), (18, 10)])
def test_output_has_the_input_shape_for_non_square_sizes(size):
    model = tiny_model("sr3-tiny")
    assert size[0] % model.info.size_multiple == 0 and size[1] % model.info.size_multiple == 0
    x_up, z, noise_level = inputs(size=size)
    eps = predict(model, x_up, z, noise_level)
    assert eps.shape == (2, 3, *size) and eps.dtype == torch.float32
    assert torch.isfinite(eps).all()


def test_info_and_condition():
    model = tiny_model("sr3-tiny")
    info = model.info
    assert (info.arch, info.scale, info.space) == ("sr3", 4, "image")
    assert (info.in_channels, info.out_channels) == (3, 3)
    assert (info.size_multiple, info.lr_size, info.hr_size) == (2, 16, 64)
    assert model.conditioning == "noise_level"
    x_up, _, _ = inputs()
    cond = model.prepare(x_up[..., ::4, ::4], x_up)
    assert cond.x_up is x_up and cond.base is None and cond.features == {}

    face = SR3UNet.from_config({**get_config("sr3-16-128").hparams, "inner_channel": 8, "norm_groups": 8})
    info = face.info
    assert (info.scale, info.size_multiple, info.lr_size, info.hr_size) == (8, 16, 16, 128)


def test_registered_configs():
    face = get_config("sr3-16-128")
    schedule = face.schedule
    assert (schedule.kind, schedule.steps, schedule.start, schedule.end) == ("linear", 2000, 1e-6, 1e-2)
    assert get_config("sr3-64-512").schedule == face.schedule
    assert get_config("sr3-64-512").hparams["scale"] == 8
    wide = get_config("sr3-64-256")
    assert (wide.hparams["scale"], wide.hparams["image_size"]) == (4, 256)
    assert get_config("sr3-tiny").schedule.steps == 500
    for name in ("sr3-16-128", "sr3-64-512", "sr3-64-256", "sr3-tiny"):
        config = get_config(name)
        assert config.arch == "sr3" and config.description and config.sampling_steps > 0


def test_a_second_architecture_under_a_taken_name_is_refused():
    from yoda_sr.models._registry import ARCHS, register_arch

    class Impostor(SR3UNet):
        arch = "sr3"

    with pytest.raises(ValueError, match="registered twice"):
        register_arch(Impostor)
    assert ARCHS["sr3"] is SR3UNet


def test_from_config_and_state_dict_round_trip_is_bit_identical():
    model = tiny_model("sr3-tiny", seed=3)
    rebuilt = SR3UNet.from_config(json.loads(json.dumps(model.config))).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.config == model.config
    x_up, z, noise_level = inputs()
    assert torch.equal(predict(model, x_up, z, noise_level), predict(rebuilt, x_up, z, noise_level))


def test_noise_level_and_x_up_change_the_prediction():
    model = tiny_model("sr3-tiny")
    x_up, z, noise_level = inputs()
    eps = predict(model, x_up, z, noise_level)
    other_level = predict(model, x_up, z, noise_level * 0.5)
    other_condition = predict(model, torch.flip(x_up, dims=[-1]), z, noise_level)
    assert (eps - other_level).abs().mean() > 1e-3
    assert (eps - other_condition).abs().mean() > 1e-3
    assert torch.equal(eps, predict(model, x_up, z, noise_level.view(-1, 1)))


def test_the_step_number_is_ignored():
    model = tiny_model("sr3-tiny")
    x_up, z, noise_level = inputs()
    cond = Condition(x_up=x_up)
    with torch.no_grad():
        first = model(z, cond, torch.tensor([1, 2]), noise_level)
        second = model(z, cond, torch.tensor([400, 5]), noise_level)
    assert torch.equal(first, second)


def test_channels_last_inputs_give_the_same_prediction():
    model = tiny_model("sr3-tiny")
    x_up, z, noise_level = inputs()
    eps = predict(model, x_up, z, noise_level)
    channels_last = torch.channels_last
    model = model.to(memory_format=channels_last)
    x_up, z = x_up.contiguous(memory_format=channels_last), z.contiguous(memory_format=channels_last)
    eps_cl = predict(model, x_up, z, noise_level)
    torch.testing.assert_close(eps_cl, eps, rtol=1e-5, atol=1e-5)


def test_bf16_forward_is_finite():
    model = tiny_model("sr3-tiny").to(torch.bfloat16)
    x_up, z, noise_level = inputs()
    eps = predict(model, x_up.bfloat16(), z.bfloat16(), noise_level)
    assert eps.dtype == torch.bfloat16 and torch.isfinite(eps).all()
    reference = predict(tiny_model("sr3-tiny"), x_up.bfloat16().float(), z.bfloat16().float(), noise_level)
    assert (eps.float() - reference).abs().mean() < 0.05


def test_without_noise_level_embedding():
    hparams = {**get_config("sr3-tiny").hparams, "with_noise_level_emb": False}
    model = SR3UNet.from_config(hparams).eval()
    assert model.noise_level_mlp is None
    assert not any("noise_func" in key or "noise_level_mlp" in key for key in model.state_dict())
    x_up, z, noise_level = inputs()
    assert torch.equal(predict(model, x_up, z, noise_level), predict(model, x_up, z, noise_level * 0.5))


def test_sr3_16_128_parameter_count_matches_upstream(sr3_16_128):
    count = sum(parameter.numel() for parameter in sr3_16_128.parameters())
    # 97,807,491 is also what Janspiry's own UNet reports for sr_sr3_16_128.json (built with
    # norm_groups=32, the default model/networks.py fills in): 391 MB in fp32.
    assert count == expected_parameter_count(get_config("sr3-16-128").hparams) == 97_807_491
    assert sum(buffer.numel() for buffer in sr3_16_128.buffers()) == 0


def test_tiny_parameter_count_matches_the_architecture_description():
    model = tiny_model("sr3-tiny")
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == expected_parameter_count(model.config)


def test_sr3_16_128_state_dict_uses_upstream_names(sr3_16_128):
    # Upstream names and shapes, read from Janspiry's model/sr3_modules/unet.py with
    # inner_channel 64, channel_multiplier [1, 2, 4, 8, 8], attn_res [16], res_blocks 2 at 128 px:
    # downs = [conv, 2 blocks + Downsample per level (none after the last)], attention on level 3
    # (16 px) = downs.10/11 and ups.4-6; ups = 3 blocks + Upsample per level, coarsest first.
    shapes = {key: tuple(value.shape) for key, value in sr3_16_128.state_dict().items()}
    upstream = {
        "noise_level_mlp.1.weight": (256, 64),
        "noise_level_mlp.3.bias": (64,),
        "downs.0.weight": (64, 6, 3, 3),
        "downs.1.res_block.noise_func.noise_func.0.weight": (64, 64),
        "downs.1.res_block.block1.block.0.weight": (64,),
        "downs.1.res_block.block1.block.3.weight": (64, 64, 3, 3),
        "downs.1.res_block.block2.block.3.bias": (64,),
        "downs.3.conv.weight": (64, 64, 3, 3),
        "downs.4.res_block.res_conv.weight": (128, 64, 1, 1),
        "downs.10.attn.norm.weight": (512,),
        "downs.10.attn.qkv.weight": (1536, 512, 1, 1),
        "downs.10.attn.out.bias": (512,),
        "mid.0.attn.qkv.weight": (1536, 512, 1, 1),
        "mid.1.res_block.block2.block.3.weight": (512, 512, 3, 3),
        "ups.0.res_block.block1.block.0.weight": (1024,),
        "ups.0.res_block.res_conv.weight": (512, 1024, 1, 1),
        "ups.3.conv.weight": (512, 512, 3, 3),
        "ups.6.attn.qkv.weight": (1536, 512, 1, 1),
        "ups.6.res_block.res_conv.weight": (512, 768, 1, 1),
        "ups.18.res_block.res_conv.weight": (64, 128, 1, 1),
        "final_conv.block.0.weight": (64,),
        "final_conv.block.3.weight": (3, 64, 3, 3),
    }
    assert {key: shapes.get(key) for key in upstream} == upstream
    assert len(shapes) == 362
    assert "mid.1.attn.qkv.weight" not in shapes and "downs.13.attn.qkv.weight" not in shapes
    assert max(int(key.split(".")[1]) for key in shapes if key.startswith("downs.")) == 14
    assert max(int(key.split(".")[1]) for key in shapes if key.startswith("ups.")) == 18


def test_an_upstream_checkpoint_loads_strictly_after_stripping_prefix_and_buffers():
    model = tiny_model("sr3-tiny", seed=5)
    checkpoint = {UPSTREAM_PREFIX + key: value.clone() for key, value in model.state_dict().items()}
    checkpoint.update({name: torch.zeros(500) for name in UPSTREAM_DIFFUSION_BUFFERS})
    stripped = {
        key.removeprefix(UPSTREAM_PREFIX): value
        for key, value in checkpoint.items()
        if key not in UPSTREAM_DIFFUSION_BUFFERS
    }
    assert all(key.startswith(UPSTREAM_PREFIX) for key in checkpoint if key not in UPSTREAM_DIFFUSION_BUFFERS)
    rebuilt = SR3UNet.from_config(model.config).eval()
    rebuilt.load_state_dict(stripped, strict=True)
    x_up, z, noise_level = inputs()
    assert torch.equal(predict(model, x_up, z, noise_level), predict(rebuilt, x_up, z, noise_level))
