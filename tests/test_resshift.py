"""ResShift residual shifting (docs/method.md §10): the schedule against upstream's numbers, the
forward marginal and the posterior against Monte-Carlo estimates, respacing as its authors do, and
YODA on the chain (A = 1 is plain ResShift bit for bit)."""

from __future__ import annotations

import math

import pytest
import torch

from yoda_sr.attention import compute_attention
from yoda_sr.diffusion.loop import make_noise_sampler, reverse
from yoda_sr.diffusion.masking import activation_steps
from yoda_sr.diffusion.processes import make_process
from yoda_sr.diffusion.resshift import ResShift, ResShiftSchedule, ResShiftSpec, forward_marginal, posterior
from yoda_sr.runtime.sampler import sample
from yoda_sr.training import diffusion_loss

from conftest import prepare, tiny_model

UPSTREAM_ETAS_15 = [
    0.0004, 0.013727656509996357, 0.031083296209604004, 0.05458247064801477, 0.08501547198152472,
    0.12320751767695402, 0.17003758974235847, 0.2264405800753678, 0.293408206343222, 0.3719901269201224,
    0.4632953363018959, 0.5684937760589751, 0.6888181020372706, 0.8255655679251032, 0.9800999999999995,
]  # fmt: skip
"""eta_1..eta_15 of upstream's x4 recipe (configs/realsr_swinunet_realesrgan256.yaml: exponential,
power 0.3, min_noise_level 0.04, etas_end 0.99, kappa 2), computed with zsyOAOA/ResShift's
``get_named_eta_schedule`` and squared."""
UPSTREAM_ETAS_4 = [0.010000000000000002, 0.27050023638417986, 0.5797025356392617, 0.9800999999999995]
"""The same for its 4-step recipes (min_noise_level 0.2)."""


def test_the_eta_schedule_is_upstreams():
    assert ResShiftSpec().etas()[1:].tolist() == pytest.approx(UPSTREAM_ETAS_15, rel=1e-12)
    four = ResShiftSpec(steps=4, eta_first=0.1**2, eta_last=0.99**2)
    assert four.etas().tolist() == pytest.approx([0.0, *UPSTREAM_ETAS_4], rel=1e-12)
    etas = ResShiftSpec(steps=40, power=0.5).etas()
    assert etas[0] == 0 and bool((etas[1:] > etas[:-1]).all())  # strictly growing from the clean image


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": 1},
        {"kappa": 0.0},
        {"eta_first": 0.5, "eta_last": 0.4},
        {"eta_last": 1.0},
        {"power": float("nan")},
        {"kind": "linear"},
    ],
)
def test_bad_schedules_are_refused(bad):
    with pytest.raises(ValueError):
        ResShiftSpec(**bad)


def test_forward_marginal_mean_and_variance_match_a_monte_carlo_estimate():
    schedule = ResShiftSpec().build()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-0.8, 0.1, 0.6])
    y0 = torch.tensor([0.3, -0.5, 0.6])
    draws = 400_000
    for t in (1, 7, 15):
        eta = float(schedule.etas[t])
        noise = torch.randn(draws, 3, generator=generator, dtype=torch.float64)
        x_t = forward_marginal(x0.double(), y0.double(), eta, schedule.kappa, noise)
        mean, std = x0 + eta * (y0 - x0), schedule.kappa * math.sqrt(eta)
        tolerance = 5 * std / math.sqrt(draws)
        assert torch.allclose(x_t.mean(0).float(), mean, atol=tolerance), (t, x_t.mean(0), mean)
        assert torch.allclose(x_t.var(0).float(), torch.full((3,), std**2), rtol=0.01), (t, x_t.var(0))


@pytest.mark.parametrize("num_steps", [15, 4])
def test_the_posterior_carries_the_marginal_of_step_t_to_that_of_the_previous_visited_step(num_steps):
    """Sampling x_t from the forward marginal and then x_{t-1} from q(x_{t-1} | x_t, x0) gives the
    forward marginal of the previous visited step (mean and variance, Monte-Carlo), so the sampler's
    posterior is the chain's, also between respaced steps."""
    schedule = ResShiftSpec().build().respace(num_steps)
    etas, kappa = schedule.step_etas.tolist(), schedule.kappa
    generator = torch.Generator().manual_seed(1)
    x0, y0, draws = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64), 400_000
    for k in range(num_steps, 0, -1):
        eta, eta_prev = etas[k], etas[k - 1]
        x_t = forward_marginal(x0, y0, eta, kappa, torch.randn(draws, generator=generator, dtype=torch.float64))
        coef_x, coef_x0, sigma = posterior(eta, eta_prev, kappa)
        x_prev = coef_x * x_t + coef_x0 * x0 + sigma * torch.randn(draws, generator=generator, dtype=torch.float64)
        std_prev = kappa * math.sqrt(eta_prev)
        assert float(x_prev.mean()) == pytest.approx(float(x0 + eta_prev * (y0 - x0)), abs=5 * kappa / draws**0.5)
        assert float(x_prev.std()) == pytest.approx(std_prev, rel=0.01, abs=1e-12)
    assert posterior(etas[1], 0.0, kappa) == (0.0, 1.0, 0.0)  # the last step lands on x0


def test_respacing_keeps_eta_at_the_kept_steps_as_upstream_spaces_them():
    full = ResShiftSpec().build()
    assert torch.equal(full.steps, torch.arange(16))
    for n in range(1, 16):
        respaced = full.respace(n)
        upstream = sorted({int((15 / n) * i) for i in range(n)})  # models/respace.py, 0-based
        assert respaced.steps.tolist() == [0, *(step + 1 for step in upstream)]
        assert respaced.num_steps == n and respaced.train_steps == 15
        assert torch.equal(respaced.step_etas, full.etas[respaced.steps])  # eta unchanged where kept
    assert full.respace(4).steps.tolist() == [0, 1, 4, 8, 12]
    # Where upstream's float product rounds down (T = 30, n = 22: 30 / 22 * 11 = 14.999...) the
    # integer spacing keeps the step the formula means.
    assert 16 in ResShiftSpec(steps=30).build().respace(22).steps.tolist()
    with pytest.raises(ValueError, match="1..15"):
        full.respace(16)


def test_a_perfect_x0_prediction_is_returned_exactly():
    """With the true x0 as the network's answer the chain ends on x0 (the last posterior step has
    no noise and coefficient 1 on x0), whatever the noise on the way and with YODA masks."""
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    y0 = torch.zeros_like(x0)
    schedule = ResShiftSpec().build().respace(5)
    attention = torch.ones(2, 1, 8, 8)
    for activation in (None, activation_steps(attention, 0.0, 15)):
        result = reverse(ResShift(schedule), lambda z, t, level: x0, y0, activation=activation)
        assert torch.allclose(result, x0, atol=1e-6)


@pytest.mark.parametrize("name", ["srdiff-tiny", "sr3-tiny"])
def test_yoda_with_attention_one_is_plain_resshift_bit_for_bit(name, hr_crops):
    model = tiny_model(name)
    cond = prepare(model, hr_crops)
    schedule = ResShiftSpec().build().respace(6)

    def run(attention, lower_bound=0.2):
        generator = torch.Generator().manual_seed(7)
        return sample(model, cond, schedule, attention=attention, lower_bound=lower_bound, generator=generator)

    plain = run(None)
    ones = torch.ones(hr_crops.shape[0], 1, *hr_crops.shape[-2:])
    assert torch.equal(run(ones).image, plain.image)
    assert torch.equal(run(ones * 0.3, lower_bound=0.7).image, plain.image)  # A + l = 1 exactly
    assert plain.update_fraction == 1.0

    masked = run(compute_attention(cond.x_up[:, :, ::4, ::4], "edge", hr_size=tuple(hr_crops.shape[-2:])), 0.0)
    assert not torch.equal(masked.image, plain.image) and masked.update_fraction < 1


def test_pixels_never_activated_end_on_the_known_region():
    """A = 0 with l = 0: a pixel is never diffused and ends exactly on y0 (eta_0 = 0), and with a
    network that ignores its input the active pixels end on its prediction."""
    y0 = torch.rand(1, 3, 8, 8)
    prediction = torch.rand(1, 3, 8, 8) * 2 - 1
    attention = torch.zeros(1, 1, 8, 8)
    attention[..., :4] = 1
    activation = activation_steps(attention, 0.0, 15)
    noise = make_noise_sampler(torch.Generator().manual_seed(0))
    schedule = ResShiftSpec().build().respace(4)
    out = reverse(ResShift(schedule), lambda z, t, level: prediction, y0, activation=activation, noise=noise)
    assert torch.equal(out[..., 4:], y0[..., 4:])
    assert torch.allclose(out[..., :4], prediction[..., :4], atol=1e-6)


def test_the_resshift_loss_with_attention_one_is_the_plain_mean_l1_on_x0(hr_crops):
    model = tiny_model("srdiff-tiny")
    cond = prepare(model, hr_crops)
    schedule = ResShiftSpec().build()

    def loss(attention):
        generator = [torch.Generator().manual_seed(i) for i in range(hr_crops.shape[0])]
        with torch.no_grad():
            return diffusion_loss(model, hr_crops, cond, schedule, attention=attention, generator=generator)

    plain = loss(None)
    assert torch.equal(loss(torch.ones(hr_crops.shape[0], 1, *hr_crops.shape[-2:])), plain)
    # By hand: t and eps as the per-sample generators draw them, the network on the scaled marginal.
    x0 = model.to_diffusion_space(hr_crops, cond)
    total = 0.0
    for i in range(hr_crops.shape[0]):
        generator = torch.Generator().manual_seed(i)
        t = int(torch.randint(1, 16, (1,), generator=generator))
        eps = torch.randn((1, *hr_crops.shape[1:]), generator=generator)
        eta = float(schedule.etas[t])
        x_t = (x0[i : i + 1] * (1 - eta) + 2.0 * math.sqrt(eta) * eps) / math.sqrt(1 + 4 * eta)
        with torch.no_grad():
            out = model(x_t, cond.select(slice(i, i + 1)), torch.tensor([t]), torch.tensor([math.sqrt(1 - eta)]))
        total += float((out - x0[i : i + 1]).abs().sum())
    assert float(plain) == pytest.approx(total / x0.numel(), rel=1e-5)


def test_a_schedule_is_frozen_data():
    schedule = ResShiftSpec(steps=10).build()
    assert isinstance(schedule, ResShiftSchedule)
    with pytest.raises(AttributeError):
        schedule.kappa = 1.0  # type: ignore[misc]
    assert ResShiftSpec.from_dict(ResShiftSpec(kappa=1.5).to_dict()) == ResShiftSpec(kappa=1.5)


def test_a_resshift_model_below_bicubic_is_not_blamed_on_a_pure_noise_start():
    from yoda_sr.evaluation.results import explain

    lines = explain({"bicubic": {"psnr_y": 30.0}, "plain": {"psnr_y": 29.0}}, 4, "resshift", 15)
    assert len(lines) == 1 and "pure noise" not in lines[0] and "ResShift" in lines[0]


def test_the_prediction_is_read_only_inside_the_mask():
    """What a block-sparse evaluator relies on: told M(t), it may leave the prediction undefined
    outside it (NaN here) and the chain is unchanged, bit for bit."""
    torch.manual_seed(0)
    weight = torch.randn(3, 3) * 0.3

    def x0_fn(z, t, level):
        return torch.einsum("ij,njhw->nihw", weight, z) * level.view(-1, 1, 1, 1)

    def masked(z, t, level, active):
        return torch.where(active, x0_fn(z, t, level), torch.nan)

    known = torch.rand(1, 3, 16, 16) * 2 - 1
    attention = torch.rand(1, 1, 16, 16)
    schedule = ResShiftSpec().build().respace(8)
    activation = activation_steps(attention, 0.1, 15)

    def run(**hook):
        noise = make_noise_sampler(torch.Generator().manual_seed(2))
        return reverse(ResShift(schedule), x0_fn, known, activation=activation, noise=noise, **hook)

    dense, sparse = run(), run(masked_predict=masked)
    assert torch.isfinite(sparse).all() and torch.equal(dense, sparse)


def test_a_dense_run_calls_the_network_only_at_steps_with_an_active_pixel():
    """docs/method.md §11, for ResShift as for DDPM: with no pixel active at a step its output would be
    discarded, so the loop makes no call, and the chain is the one a network called there gives."""
    schedule = ResShiftSpec().build().respace(8)
    attention = torch.full((1, 1, 8, 8), 0.2)  # A + l = 0.3: active for t <= 0.3 T only
    activation = activation_steps(attention, 0.1, schedule.train_steps)
    calls: list[int] = []

    def x0_fn(z, t, level):
        calls.append(int(t[0]))
        return torch.tanh(z)

    def run():
        noise = make_noise_sampler(torch.Generator().manual_seed(3))
        return reverse(ResShift(schedule), x0_fn, torch.zeros(1, 3, 8, 8), activation=activation, noise=noise)

    out = run()
    assert calls and all(t <= int(activation.max()) for t in calls)
    assert len(calls) < schedule.num_steps
    assert torch.equal(out, run())


def test_resshift_refuses_samplers_and_eta_it_does_not_have():
    schedule = ResShiftSpec().build().respace(4)
    assert isinstance(make_process(schedule), ResShift) and isinstance(make_process(schedule, "resshift"), ResShift)
    with pytest.raises(ValueError, match="sampler 'ddim'"):
        make_process(schedule, "ddim")
    with pytest.raises(ValueError, match="no eta"):
        make_process(schedule, "resshift", eta=0.5)
