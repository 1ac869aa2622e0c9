"""SRDiff: shapes, precomputed conditions, residual space and the upstream state-dict layout."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoda_sr.image.imaging import resize_bicubic
from yoda_sr.models import create_model, get_config
from yoda_sr.models.base import UPSTREAM_DIFFUSION_BUFFERS
from yoda_sr.models.rrdb import RRDBNet
from yoda_sr.models.srdiff import UPSTREAM_PREFIXES, SRDiff

from conftest import tiny_model

FULL_FEATURED = {
    "hidden_size": 16,
    "dim_mults": [1, 2, 2],
    "rrdb_num_feat": 8,
    "rrdb_num_block": 5,
    "rrdb_growth": 4,
    "use_attn": True,
    "up_input": True,
    "sr_scale": 4,
}
"""A small SRDiff with every optional branch on (attention, up_proj, two selected features)."""


def upstream_keys(model: SRDiff) -> dict[str, tuple[int, ...]]:
    """Our state dict renamed to upstream's top-level prefixes, with shapes."""
    renamed = {}
    for key, value in model.state_dict().items():
        prefix = next(ours for ours in UPSTREAM_PREFIXES if key.startswith(ours))
        renamed[UPSTREAM_PREFIXES[prefix] + key[len(prefix) :]] = tuple(value.shape)
    return renamed


def randomise_rezero(model: SRDiff) -> None:
    """Rezero starts at 0, which would hide the attention branch from the comparisons."""
    with torch.no_grad():
        model.unet.mid_attn.fn.g.fill_(0.7)


def inputs(batch: int = 2, lr_size: tuple[int, int] = (8, 12), scale: int = 4, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, *lr_size, generator=generator) * 2 - 1
    x_up = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
    z = torch.randn(batch, 3, lr_size[0] * scale, lr_size[1] * scale, generator=generator)
    return lr, x_up, z


def test_shapes_for_an_8x12_lr_image_at_scale_4():
    model = tiny_model("srdiff-tiny")
    lr, x_up, z = inputs()
    with torch.no_grad():
        cond = model.prepare(lr, x_up)
        eps = model(z, cond, torch.tensor([10, 90]), torch.zeros(2))
    assert cond.x_up.shape == cond.base.shape == (2, 3, 32, 48)
    assert set(cond.features) == {"cond"}
    assert cond.features["cond"].shape == (2, 16, 32, 48)
    assert eps.shape == (2, 3, 32, 48) and eps.dtype == torch.float32
    info = model.info
    assert (info.arch, info.scale, info.space, info.size_multiple) == ("srdiff", 4, "residual", 4)

    with_up = SRDiff(**FULL_FEATURED).eval()
    with torch.no_grad():
        cond = with_up.prepare(lr, x_up)
    assert {name: tuple(value.shape) for name, value in cond.features.items()} == {
        "cond": (2, 16, 32, 48),
        "up": (2, 16, 32, 48),
    }
    assert with_up.info.size_multiple == 4


def test_sizes_must_fit_the_unet_and_the_scale():
    model = tiny_model("srdiff-tiny")
    lr, x_up, _ = inputs()
    with pytest.raises(ValueError, match="expected LR size"):
        model.prepare(lr, x_up[..., :-4])
    cond = model.prepare(lr, x_up)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.zeros(2, 3, 31, 48), cond.crop(0, 0, 31, 48), torch.tensor([1, 1]), torch.zeros(2))
    assert create_model("srdiff-div2k-4x").info.size_multiple == 8
    assert create_model("srdiff-celeba-8x").info.size_multiple == 8


def test_from_config_and_strict_load_reproduce_the_output_bit_for_bit():
    model = SRDiff(**FULL_FEATURED).eval()
    randomise_rezero(model)
    config = json.loads(json.dumps(model.config))
    assert config == model.config
    rebuilt = SRDiff.from_config(config).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    lr, x_up, z = inputs()
    t = torch.tensor([3, 77])
    with torch.no_grad():
        first = model(z, model.prepare(lr, x_up), t, torch.zeros(2))
        second = rebuilt(z, rebuilt.prepare(lr, x_up), t, torch.zeros(2))
    assert torch.equal(first, second)
    assert rebuilt.config == model.config


def upstream_style_forward(model: SRDiff, lr, x_up, z, t_ours):
    """Upstream's GaussianDiffusion + Unet.forward, step by step, with the conditions inline."""
    unet = model.unet
    _, trunk = model.encoder(lr, return_features=True)
    time = unet.mlp(unet.time_pos_emb(t_ours - 1))
    cond = unet.cond_proj(torch.cat(trunk[2::3], 1))
    x, skips = z, []
    for level, (resnet, resnet2, downsample) in enumerate(unet.downs):
        x = resnet2(resnet(x, time), time)
        if level == 0:
            x = x + cond
            x = x + unet.up_proj(x_up)
        skips.append(x)
        x = downsample(x)
    x = unet.mid_block2(unet.mid_attn(unet.mid_block1(x, time)), time)
    for resnet, resnet2, upsample in unet.ups:
        x = torch.cat((x, skips.pop()), dim=1)
        x = upsample(resnet2(resnet(x, time), time))
    return unet.final_conv(x)


def test_precomputed_conditions_match_an_inline_computation_bit_for_bit():
    torch.manual_seed(0)
    model = SRDiff(**FULL_FEATURED).eval()
    randomise_rezero(model)
    lr, x_up, z = inputs()
    t = torch.tensor([1, 100])
    with torch.no_grad():
        ours = model(z, model.prepare(lr, x_up), t, torch.zeros(2))
        inline = upstream_style_forward(model, lr, x_up, z, t)
    assert torch.equal(ours, inline)


def test_rrdb_encoder_matches_upstream_computation():
    torch.manual_seed(0)
    encoder = RRDBNet(3, 3, nf=8, nb=2, gc=4, scale=4).eval()
    lr, _, _ = inputs()
    with torch.no_grad():
        sr, features = encoder(lr, return_features=True)
        first = feature = encoder.conv_first((lr + 1) / 2)
        for block in encoder.RRDB_trunk:
            rdb_in = feature
            for rdb in (block.RDB1, block.RDB2, block.RDB3):
                x1 = F.leaky_relu(rdb.conv1(feature), 0.2)
                x2 = F.leaky_relu(rdb.conv2(torch.cat((feature, x1), 1)), 0.2)
                x3 = F.leaky_relu(rdb.conv3(torch.cat((feature, x1, x2), 1)), 0.2)
                x4 = F.leaky_relu(rdb.conv4(torch.cat((feature, x1, x2, x3), 1)), 0.2)
                feature = rdb.conv5(torch.cat((feature, x1, x2, x3, x4), 1)) * 0.2 + feature
            feature = feature * 0.2 + rdb_in
        trunk = first + encoder.trunk_conv(feature)
        up = trunk
        for upconv in (encoder.upconv1, encoder.upconv2):
            up = F.leaky_relu(upconv(F.interpolate(up, scale_factor=2, mode="nearest")), 0.2)
        expected = encoder.conv_last(F.leaky_relu(encoder.HRconv(up), 0.2)).clamp(0, 1) * 2 - 1
    assert len(features) == 3
    assert torch.equal(features[-1], trunk)
    assert torch.equal(sr, expected)
    assert sr.shape == (2, 3, 32, 48) and sr.min() >= -1 and sr.max() <= 1


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_encoder_and_condition_sizes_at_each_scale(scale):
    model = SRDiff(hidden_size=8, dim_mults=[1, 2], rrdb_num_feat=8, rrdb_num_block=2, sr_scale=scale).eval()
    lr, x_up, z = inputs(batch=1, lr_size=(4, 6), scale=scale)
    with torch.no_grad():
        cond = model.prepare(lr, x_up)
        eps = model(z, cond, torch.tensor([5]), torch.zeros(1))
    hr_size = (4 * scale, 6 * scale)
    assert model.encoder(lr).shape[-2:] == hr_size
    assert cond.features["cond"].shape[-2:] == hr_size
    assert eps.shape[-2:] == hr_size
    assert hasattr(model.encoder, "upconv3") == (scale == 8)


def test_step_and_lr_image_matter_noise_level_does_not():
    model = tiny_model("srdiff-tiny")
    lr, x_up, z = inputs()
    t = torch.tensor([20, 20])
    with torch.no_grad():
        cond = model.prepare(lr, x_up)
        reference = model(z, cond, t, torch.zeros(2))
        other_level = model(z, cond, t, torch.full((2,), 0.5))
        other_step = model(z, cond, t + 30, torch.zeros(2))
        other_lr = model(z, model.prepare(-lr, x_up), t, torch.zeros(2))
    assert torch.equal(reference, other_level)
    assert (reference - other_step).abs().max() > 1e-4
    assert (reference - other_lr).abs().max() > 1e-4


def test_step_numbering_is_upstream_index_plus_one():
    model = tiny_model("srdiff-tiny")
    lr, x_up, z = inputs()
    with torch.no_grad():
        cond = model.prepare(lr, x_up)
        ours = model(z, cond, torch.tensor([1, 100]), torch.zeros(2))
        direct = model.unet(z, torch.tensor([0, 99]), cond.features["cond"])
    assert torch.equal(ours, direct)


@pytest.mark.parametrize("name", ["srdiff-tiny", "srdiff-tiny-rrdb"])
def test_residual_space_round_trip_and_known_region(name, hr_crops):
    model = tiny_model(name)
    lr = resize_bicubic(hr_crops, scale=1 / 4)
    with torch.no_grad():
        cond = model.prepare(lr, resize_bicubic(lr, size=hr_crops.shape[-2:]))
    assert cond.base is not None
    offset = torch.linspace(-0.5, 0.5, hr_crops.shape[-1]).expand_as(hr_crops)
    hr = (cond.base + offset).clamp(-1, 1)
    z0 = model.to_diffusion_space(hr, cond)
    assert z0.abs().max() <= 1
    assert torch.allclose(model.from_diffusion_space(z0, cond), hr, atol=1e-6, rtol=0)
    assert torch.equal(model.known_region(cond), torch.zeros_like(hr_crops))
    with torch.no_grad():
        expected_base = model.encoder(lr) if name == "srdiff-tiny-rrdb" else cond.x_up
    assert torch.equal(cond.base, expected_base)


def test_bicubic_plus_rrdb_base_starts_as_bicubic_and_adds_the_encoder_correction(hr_crops):
    hparams = {**create_model("srdiff-tiny").config, "residual_base": "bicubic+rrdb"}
    model = SRDiff(**hparams).eval()
    lr = resize_bicubic(hr_crops, scale=1 / 4)
    x_up = resize_bicubic(lr, size=hr_crops.shape[-2:])
    with torch.no_grad():
        assert torch.equal(model.prepare(lr, x_up).base, x_up)  # zero-initialised correction
        torch.nn.init.normal_(model.encoder.conv_last.weight, std=0.05)
        cond = model.prepare(lr, x_up)
        correction = model.encoder(lr, residual=True)
    assert not torch.equal(cond.base, x_up)
    assert torch.equal(cond.base, (x_up + correction).clamp(-1, 1))
    assert correction.min() < 0  # unclamped, unlike the encoder's own SR output


def test_residual_base_choice_is_validated():
    with pytest.raises(ValueError, match="residual_base"):
        SRDiff(residual_base="bilinear")
    with pytest.raises(ValueError, match="res=false"):
        SRDiff(res=False)


def test_state_dict_keys_and_shapes_are_upstreams():
    # Upstream names read from LeiaLi/SRDiff models/diffsr_modules.py (RRDBNet, Unet) and
    # models/commons.py (RRDB, ResidualDenseBlock_5C, ResnetBlock, Block, Downsample, Upsample,
    # Residual(Rezero(LinearAttention))), nested under GaussianDiffusion's denoise_fn / rrdb.
    div2k = upstream_keys(create_model("srdiff-div2k-4x"))
    expected = {
        "rrdb.conv_first.weight": (32, 3, 3, 3),
        "rrdb.RRDB_trunk.0.RDB1.conv1.weight": (16, 32, 3, 3),
        "rrdb.RRDB_trunk.7.RDB3.conv5.weight": (32, 96, 3, 3),
        "rrdb.trunk_conv.bias": (32,),
        "rrdb.upconv1.weight": (32, 32, 3, 3),
        "rrdb.upconv2.weight": (32, 32, 3, 3),
        "rrdb.HRconv.weight": (32, 32, 3, 3),
        "rrdb.conv_last.weight": (3, 32, 3, 3),
        "denoise_fn.cond_proj.weight": (96, 64, 8, 8),
        "denoise_fn.mlp.0.weight": (256, 64),
        "denoise_fn.mlp.2.weight": (64, 256),
        "denoise_fn.downs.0.0.mlp.1.weight": (64, 64),
        "denoise_fn.downs.0.0.block1.block.1.weight": (64, 3, 3, 3),
        "denoise_fn.downs.0.0.res_conv.weight": (64, 3, 1, 1),
        "denoise_fn.downs.0.2.conv.1.weight": (64, 64, 3, 3),
        "denoise_fn.downs.3.1.block2.block.1.weight": (256, 256, 3, 3),
        "denoise_fn.mid_block1.block1.block.1.weight": (256, 256, 3, 3),
        "denoise_fn.mid_block2.mlp.1.bias": (256,),
        "denoise_fn.ups.0.0.block1.block.1.weight": (192, 512, 3, 3),
        "denoise_fn.ups.0.0.res_conv.weight": (192, 512, 1, 1),
        "denoise_fn.ups.0.2.conv.0.weight": (192, 192, 4, 4),
        "denoise_fn.ups.2.1.block2.block.1.weight": (64, 64, 3, 3),
        "denoise_fn.final_conv.0.block.1.weight": (64, 64, 3, 3),
        "denoise_fn.final_conv.1.weight": (3, 64, 1, 1),
    }
    assert {key: div2k.get(key) for key in expected} == expected
    assert "denoise_fn.downs.3.2.conv.1.weight" not in div2k
    assert "rrdb.upconv3.weight" not in div2k
    assert not any("mid_attn" in key or "up_proj" in key for key in div2k)
    assert not set(UPSTREAM_DIFFUSION_BUFFERS) & set(div2k)

    celeb = upstream_keys(create_model("srdiff-celeba-8x"))
    assert celeb["rrdb.upconv3.weight"] == (32, 32, 3, 3)
    assert celeb["denoise_fn.cond_proj.weight"] == (96, 64, 16, 16)

    full = upstream_keys(SRDiff(**FULL_FEATURED))
    assert full["denoise_fn.mid_attn.fn.g"] == (1,)
    assert full["denoise_fn.mid_attn.fn.fn.to_qkv.weight"] == (384, 32, 1, 1)
    assert full["denoise_fn.mid_attn.fn.fn.to_out.weight"] == (32, 128, 1, 1)
    assert full["denoise_fn.up_proj.1.weight"] == (16, 3, 3, 3)
    assert full["denoise_fn.cond_proj.weight"] == (16, 16, 8, 8)


def test_weight_norm_uses_upstreams_keys():
    model = SRDiff(**{**FULL_FEATURED, "use_wn": True}).eval()
    keys = upstream_keys(model)
    assert keys["denoise_fn.downs.0.0.block1.block.1.weight_g"] == (16, 1, 1, 1)
    assert keys["denoise_fn.downs.0.0.block1.block.1.weight_v"] == (16, 3, 3, 3)
    assert keys["denoise_fn.mid_attn.fn.fn.to_qkv.weight_g"] == (384, 1, 1, 1)
    assert "denoise_fn.cond_proj.weight" in keys and "denoise_fn.ups.0.2.conv.0.weight" in keys
    lr, x_up, z = inputs()
    with torch.no_grad():
        assert torch.isfinite(model(z, model.prepare(lr, x_up), torch.tensor([4, 5]), torch.zeros(2))).all()


def test_parameter_counts_of_the_upstream_configs():
    # The SRDiff paper reports about 12M parameters; upstream's YAML configs give these counts.
    counts = {
        name: sum(p.numel() for p in create_model(name).parameters())
        for name in ("srdiff-div2k-4x", "srdiff-celeba-8x")
    }
    assert 12_500_000 < counts["srdiff-div2k-4x"] < 14_000_000
    assert 11_500_000 < counts["srdiff-celeba-8x"] < 12_500_000


def test_registered_configs_rebuild_and_follow_upstream_schedule():
    for name in ("srdiff-celeba-8x", "srdiff-div2k-4x", "srdiff-tiny", "srdiff-tiny-rrdb"):
        config = get_config(name)
        assert config.arch == "srdiff"
        assert config.schedule.kind == "cosine" and config.schedule.steps == 100
        assert create_model(name).config == SRDiff(**config.hparams).config
    assert get_config("srdiff-tiny-rrdb").hparams["residual_base"] == "rrdb"

    # upstream cosine_beta_schedule (models/diffusion.py), re-derived in numpy
    steps = 100
    grid = np.linspace(0, steps + 1, steps + 1)
    alphas_cumprod = np.cos(((grid / (steps + 1)) + 0.008) / 1.008 * np.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)
    ours = get_config("srdiff-div2k-4x").schedule.build().gammas[1:].numpy()
    assert np.allclose(ours, np.cumprod(1 - betas), rtol=0, atol=1e-12)


def test_bf16_and_channels_last_forward():
    model = tiny_model("srdiff-tiny")
    lr, x_up, z = inputs()
    t = torch.tensor([50, 99])
    with torch.no_grad():
        reference = model(z, model.prepare(lr, x_up), t, torch.zeros(2))
        channels_last = torch.channels_last
        cond = model.prepare(lr.to(memory_format=channels_last), x_up.to(memory_format=channels_last))
        in_channels_last = model(z.to(memory_format=channels_last), cond, t, torch.zeros(2))
        model = model.to(torch.bfloat16)
        cond = model.prepare(lr.bfloat16(), x_up.bfloat16())
        low = model(z.bfloat16(), cond, t, torch.zeros(2, dtype=torch.bfloat16))
    assert torch.allclose(in_channels_last, reference, atol=1e-5)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert math.isfinite(float((low.float() - reference).abs().mean()))


def test_mish_is_upstreams_written_out_form_in_every_layout_and_under_autograd():
    from yoda_sr.models.mish import CHUNK, mish

    def upstream(x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(torch.nn.functional.softplus(x))

    extremes = torch.tensor([-1e4, -100.0, -20.0, -1e-6, 0.0, 1e-6, 19.9, 20.0, 20.1, 88.0, 100.0, 1e4])
    x = torch.cat([torch.linspace(-30, 30, 3 * CHUNK // 2), extremes]).reshape(1, -1, 1, 1)
    with torch.no_grad():
        fast = mish(x)
        assert (fast - upstream(x)).abs().max() < 1e-6 and fast.shape == x.shape
        assert torch.equal(mish(x[:, -len(extremes) :]).flatten()[-5:], extremes[-5:])  # x itself above 20
        assert torch.isnan(mish(torch.tensor([float("nan")]))).all()
        # channels-last stays channels-last; a strided view falls back to F.mish
        image = torch.randn(2, 8, 33, 17) * 5
        for layout in (image, image.to(memory_format=torch.channels_last), image[..., ::2]):
            out = mish(layout)
            assert (out - upstream(layout)).abs().max() < 1e-6
        assert mish(image.to(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
    leaf = torch.randn(64, requires_grad=True)
    mish(leaf).sum().backward()
    expected = torch.autograd.grad(upstream(leaf).sum(), leaf)[0]
    assert leaf.grad is not None and torch.allclose(leaf.grad, expected, atol=1e-6)
