import pytest
import torch
import torch.nn.functional as F

from yoda_sr.diffusion.masking import activation_steps
from yoda_sr.models import get_config
from yoda_sr.training import diffusion_loss, draw_noise, masked_l1, masked_l1_terms, noise_batch, predict

from conftest import prepare, tiny_model


def test_masked_l1_with_full_mask_is_plain_l1():
    g = torch.Generator().manual_seed(0)
    target, prediction = torch.randn(3, 3, 16, 16, generator=g), torch.randn(3, 3, 16, 16, generator=g)
    full = torch.ones(3, 1, 16, 16, dtype=torch.bool)
    assert torch.equal(masked_l1(target, prediction, full), F.l1_loss(prediction, target))
    assert torch.equal(masked_l1(target, prediction, None), F.l1_loss(prediction, target))


def test_masked_l1_ignores_errors_outside_the_mask_and_normalises_by_active_elements():
    g = torch.Generator().manual_seed(0)
    target, prediction = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = torch.rand(2, 1, 8, 8, generator=g) > 0.5
    spoiled = torch.where(mask, prediction, prediction + 100)
    assert torch.equal(masked_l1(target, prediction, mask), masked_l1(target, spoiled, mask))
    expected = (target - prediction).abs()[mask.expand(-1, 3, -1, -1)].mean()
    torch.testing.assert_close(masked_l1(target, prediction, mask), expected)
    assert masked_l1(target, prediction, torch.zeros_like(mask)) == 0


@pytest.mark.parametrize("name", ["sr3-tiny", "srdiff-tiny"])
def test_diffusion_loss_with_full_attention_equals_the_plain_loss(name, hr_crops):
    model = tiny_model(name)
    cond = prepare(model, hr_crops)
    schedule = get_config(name).schedule.build()
    ones = torch.ones(hr_crops.shape[0], 1, *hr_crops.shape[-2:])
    plain = diffusion_loss(model, hr_crops, cond, schedule, generator=torch.Generator().manual_seed(5))
    masked = diffusion_loss(model, hr_crops, cond, schedule, attention=ones, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain, masked)
    half = ones.clone()
    half[..., : half.shape[-1] // 2] = 0  # left half active only for t <= 0.05 T
    partial = diffusion_loss(
        model,
        hr_crops,
        cond,
        schedule,
        attention=half,
        lower_bound=0.05,
        generator=torch.Generator().manual_seed(5),
    )
    assert not torch.equal(plain, partial)


def test_noise_batch_follows_the_forward_process():
    schedule = get_config("sr3-tiny").schedule.build()
    z0 = torch.rand(64, 3, 4, 4) * 2 - 1
    batch = noise_batch(z0, schedule, continuous=True, generator=torch.Generator().manual_seed(0))
    level = batch.noise_level.view(-1, 1, 1, 1)
    torch.testing.assert_close(batch.z, level * z0 + (1 - level**2).sqrt() * batch.eps)
    low, high = schedule.gammas[batch.t].sqrt(), schedule.gammas[batch.t - 1].sqrt()
    assert torch.all(batch.noise_level.double() >= low.float().double() - 1e-7)
    assert torch.all(batch.noise_level.double() <= high.float().double() + 1e-7)
    assert batch.t.min() >= 1 and batch.t.max() <= schedule.train_steps
    exact = noise_batch(z0, schedule, continuous=False, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(exact.noise_level, schedule.gammas[exact.t].sqrt().float())


def test_noise_batch_mask_is_the_time_dependent_mask():
    schedule = get_config("sr3-tiny").schedule.build()
    attention = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    batch = noise_batch(
        torch.zeros(16, 3, 6, 6),
        schedule,
        continuous=False,
        attention=attention,
        lower_bound=0.25,
        generator=torch.Generator().manual_seed(0),
    )
    act = activation_steps(attention, 0.25, schedule.train_steps)
    for i in range(16):
        assert torch.equal(batch.mask[i], act[i] >= batch.t[i])


def test_per_sample_generators_draw_each_sample_as_if_it_were_alone():
    schedule = get_config("sr3-tiny").schedule.build()
    z0 = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(2)) * 2 - 1
    attention = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    seeds = [11, 12, 13]
    batch = noise_batch(
        z0,
        schedule,
        continuous=True,
        attention=attention,
        generator=[torch.Generator().manual_seed(seed) for seed in seeds],
    )
    for i, seed in enumerate(seeds):
        alone = noise_batch(
            z0[i : i + 1],
            schedule,
            continuous=True,
            attention=attention[i : i + 1],
            generator=torch.Generator().manual_seed(seed),
        )
        for field in ("z", "t", "noise_level", "eps", "mask"):
            assert torch.equal(getattr(batch, field)[i : i + 1], getattr(alone, field)), field
    with pytest.raises(ValueError):
        noise_batch(z0, schedule, continuous=True, generator=[torch.Generator()])


@pytest.mark.parametrize("name", ["sr3-tiny", "srdiff-tiny"])
def test_diffusion_loss_is_the_l1_of_a_prediction_whose_count_is_known_before_the_forward_pass(name, hr_crops):
    model = tiny_model(name)
    cond = prepare(model, hr_crops)
    schedule = get_config(name).schedule.build()
    attention = torch.zeros(hr_crops.shape[0], 1, *hr_crops.shape[-2:])
    attention[..., hr_crops.shape[-1] // 2 :] = 1  # with l = 0: the right half always active, the left never
    draw = draw_noise(
        hr_crops.shape,
        schedule,
        continuous=model.conditioning == "noise_level",
        attention=attention,
        lower_bound=0.0,
        generator=torch.Generator().manual_seed(5),
    )
    with torch.no_grad():
        total, count = predict(model, hr_crops, cond, draw).l1_terms()
        loss = diffusion_loss(
            model,
            hr_crops,
            cond,
            schedule,
            attention=attention,
            lower_bound=0.0,
            generator=torch.Generator().manual_seed(5),
        )
    assert torch.equal(count, draw.count())
    assert float(count) == hr_crops.numel() / 2
    assert torch.equal(loss, total / count)
    assert torch.equal(masked_l1_terms(draw.eps, draw.eps + 1, draw.mask)[1], draw.count())


@pytest.mark.parametrize("process", ["ddpm", "resshift"])
def test_the_z0_estimate_of_an_exact_output_is_z0_inside_the_mask_and_the_known_region_outside(process, hr_crops):
    """``predict``'s estimate (what the perceptual loss sees): an output equal to its target (the
    true eps, or z_0 for ResShift) gives back z_0 where M(t) is on, the known region elsewhere."""
    from yoda_sr.diffusion.resshift import ResShiftSpec
    from yoda_sr.training.objective import NoiseDraw, draw, estimated_image

    model = tiny_model("srdiff-tiny")
    cond = prepare(model, hr_crops)
    schedule = get_config("srdiff-tiny").schedule.build() if process == "ddpm" else ResShiftSpec().build()
    attention = torch.rand(hr_crops.shape[0], 1, *hr_crops.shape[-2:], generator=torch.Generator().manual_seed(1))
    noise = draw(hr_crops.shape, schedule, continuous=False, attention=attention, generator=torch.Generator())
    assert noise.mask is not None and noise.mask.any() and not noise.mask.all()
    z0 = model.to_diffusion_space(hr_crops, cond)
    exact = noise.eps if isinstance(noise, NoiseDraw) else z0

    prediction = predict(model, hr_crops, cond, noise, denoise=lambda *_: exact)
    inside = noise.mask.expand_as(z0)
    if isinstance(noise, NoiseDraw):  # z0 comes back through a division by sqrt(gamma_t)
        inside = inside & (noise.noise_level > 0.05).view(-1, 1, 1, 1)
    torch.testing.assert_close(prediction.z0[inside], z0[inside], atol=1e-4, rtol=0)
    assert torch.equal(prediction.z0[~noise.mask.expand_as(z0)], torch.zeros_like(z0)[~noise.mask.expand_as(z0)])
    assert torch.equal(prediction.l1_terms()[0], torch.tensor(0.0))
    if isinstance(noise, NoiseDraw):  # a loss on the estimate counts by gamma_t: 1 at t = 0, 0 at pure noise
        torch.testing.assert_close(prediction.weight, noise.noise_level**2)
    else:
        assert torch.equal(prediction.weight, torch.ones(hr_crops.shape[0]))

    base = cond.base.clone().requires_grad_(True)
    cond.base = base
    output = torch.zeros_like(z0, requires_grad=True)
    image = estimated_image(model, cond, predict(model, hr_crops, cond, noise, denoise=lambda *_: output))
    image.sum().backward()
    assert base.grad is None and output.grad is not None and output.grad.abs().sum() > 0


@pytest.mark.parametrize("lower_bound", [None, 0.0, 0.3])
def test_the_unrolled_image_is_what_the_sampler_returns_and_trains_the_denoiser_only(lower_bound, hr_crops):
    """``unrolled_image`` (the sample the unrolled loss compares) is ``sampling.sample``'s image for
    the same noise, block-pooled map and steps, and its gradient reaches the denoiser, not the base."""
    from yoda_sr.runtime.sampler import sample
    from yoda_sr.training.unrolled import unrolled_image

    model = tiny_model("srdiff-tiny")
    cond = prepare(model, hr_crops)
    schedule = get_config("srdiff-tiny").schedule.build()
    attention = None
    if lower_bound is not None:
        attention = torch.rand(hr_crops.shape[0], 1, *hr_crops.shape[-2:], generator=torch.Generator().manual_seed(2))

    def generators():
        return [torch.Generator().manual_seed(10 + i) for i in range(hr_crops.shape[0])]

    common = dict(attention=attention, lower_bound=lower_bound or 0.0, block=16)
    expected = sample(model, cond, schedule.respace(4), generator=generators(), **common).image
    base = cond.base.clone().requires_grad_(True)
    cond.base = base
    image = unrolled_image(model, cond, schedule, 4, generator=generators(), **common)
    torch.testing.assert_close(image, expected, atol=1e-5, rtol=0)
    assert image.requires_grad
    image.sum().backward()
    assert base.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())
