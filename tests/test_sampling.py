import math

import pytest
import torch

from yoda_sr.diffusion.ddpm import DDPM
from yoda_sr.diffusion.loop import make_noise_sampler, reverse
from yoda_sr.diffusion.masking import activation_steps
from yoda_sr.diffusion.processes import make_process
from yoda_sr.diffusion.schedules import ScheduleSpec
from yoda_sr.models import get_config
from yoda_sr.runtime.sampler import sample

from conftest import prepare, tiny_model

MODELS = ["sr3-tiny", "srdiff-tiny"]
SAMPLERS = [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)]


def schedule_for(name: str, steps: int = 12):
    return get_config(name).schedule.build().respace(steps)


def random_attention(like: torch.Tensor, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(like.shape[0], 1, *like.shape[-2:], generator=g)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sampler,eta", SAMPLERS)
def test_masked_sampling_with_full_attention_is_plain_sampling(name, sampler, eta, hr_crops):
    model = tiny_model(name)
    cond = prepare(model, hr_crops)
    schedule = schedule_for(name)
    ones = torch.ones(hr_crops.shape[0], 1, *hr_crops.shape[-2:])
    plain = sample(model, cond, schedule, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(7))
    masked = sample(
        model,
        cond,
        schedule,
        sampler=sampler,
        eta=eta,
        attention=ones,
        lower_bound=0.2,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(plain.image, masked.image)
    assert masked.update_fraction == 1.0
    # ...and a real map does change the result, so the comparison above is not vacuous.
    partial = sample(
        model,
        cond,
        schedule,
        sampler=sampler,
        eta=eta,
        attention=random_attention(hr_crops),
        generator=torch.Generator().manual_seed(7),
    )
    assert not torch.equal(plain.image, partial.image)
    assert partial.update_fraction < 1.0


class RecordingNoise:
    """A noise source that remembers every draw, in order."""

    def __init__(self, seed: int):
        self.draw = make_noise_sampler(torch.Generator().manual_seed(seed))
        self.draws: list[torch.Tensor] = []

    def __call__(self, like):
        value = self.draw(like)
        self.draws.append(value)
        return value


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sampler,eta", SAMPLERS)
def test_outside_the_mask_the_state_is_the_known_region_forward_diffused(name, sampler, eta, hr_crops):
    model = tiny_model(name)
    cond = prepare(model, hr_crops)
    schedule = schedule_for(name)
    known = model.known_region(cond)
    noise = RecordingNoise(11)
    seen = []
    attention = random_attention(hr_crops)
    sample(
        model,
        cond,
        schedule,
        sampler=sampler,
        eta=eta,
        attention=attention,
        lower_bound=0.1,
        noise=noise,
        callback=lambda info: seen.append((info, len(noise.draws))),
    )
    gammas = schedule.gammas
    checked = 0
    for info, draws_so_far in seen:
        active = info["active"]
        if active is None:
            continue
        eps_known = noise.draws[draws_so_far - 1]  # the last draw of a masked step is eps'
        t_prev = int(schedule.steps[info["index"] - 1])
        g_prev = float(gammas[t_prev])
        expected = math.sqrt(g_prev) * known + math.sqrt(1 - g_prev) * eps_known
        outside = ~active.expand_as(expected)
        assert outside.any()
        assert torch.equal(info["z"][outside], expected[outside])
        assert not torch.equal(info["z"][~outside], expected[~outside])
        checked += 1
    assert checked >= 3


def test_the_model_sees_zeros_outside_the_mask(hr_crops):
    model = tiny_model("sr3-tiny")
    cond = prepare(model, hr_crops)
    schedule = schedule_for("sr3-tiny")
    attention = random_attention(hr_crops)
    act = activation_steps(attention, 0.2, schedule.train_steps)
    inputs = []

    def eps_fn(z, t, level):
        inputs.append((z.clone(), int(t[0])))
        return torch.zeros_like(z)

    reverse(
        DDPM(schedule),
        eps_fn,
        model.known_region(cond),
        activation=act,
        noise=make_noise_sampler(torch.Generator().manual_seed(0)),
    )
    masked_steps = 0
    for z, t in inputs:
        outside = (act < t).expand_as(z)
        assert torch.all(z[outside] == 0)
        assert torch.all(z[~outside] != 0)
        masked_steps += bool(outside.any())
    assert masked_steps > 0
    assert [t for _, t in inputs] == schedule.steps[1:].flip(0).tolist()


@pytest.mark.parametrize("sampler,eta", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 10, 500])
def test_an_oracle_denoiser_recovers_the_target(sampler, eta, steps):
    """With the exact epsilon every sampler must land on x0: pins the update formulas."""
    schedule = ScheduleSpec().build().respace(steps)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 1.6 - 0.8
    gammas = schedule.gammas.float()

    def oracle(z, t, level):
        gamma = gammas[t].view(-1, 1, 1, 1)
        return (z - gamma.sqrt() * x0) / (1 - gamma).sqrt()

    process = make_process(schedule, sampler, eta)
    out = reverse(process, oracle, torch.zeros_like(x0), noise=make_noise_sampler(g))
    torch.testing.assert_close(out, x0, atol=2e-4, rtol=0)


def test_per_item_generators_make_noise_independent_of_the_batch():
    like = torch.empty(2, 3, 4, 4)
    together = make_noise_sampler([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])(like)
    alone = make_noise_sampler([torch.Generator().manual_seed(2)])(like[:1])
    assert torch.equal(together[1:], alone)
    with pytest.raises(ValueError, match="generators"):
        make_noise_sampler([torch.Generator()])(like)


def test_sampler_arguments_are_validated(hr_crops):
    model = tiny_model("sr3-tiny")
    cond = prepare(model, hr_crops)
    with pytest.raises(ValueError, match="sampler"):
        sample(model, cond, schedule_for("sr3-tiny"), sampler="euler")
    with pytest.raises(ValueError, match="attention map"):
        sample(model, cond, schedule_for("sr3-tiny"), attention=torch.ones(2, 1, 8, 8))


@pytest.mark.parametrize("name", MODELS)
def test_sampling_runs_in_bfloat16(name, hr_crops):
    model = tiny_model(name).to(torch.bfloat16)
    cond = prepare(model, hr_crops.to(torch.bfloat16))
    result = sample(
        model,
        cond,
        schedule_for(name, 4),
        attention=random_attention(hr_crops),
        generator=torch.Generator().manual_seed(0),
    )
    assert result.image.dtype == torch.float32
    assert torch.isfinite(result.image).all()
    assert result.image.abs().max() <= 1
