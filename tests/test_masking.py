import pytest
import torch

from yoda_sr.diffusion.masking import (
    activation_steps,
    expected_update_fraction,
    time_mask,
    update_fraction,
    validate_lower_bound,
)
from yoda_sr.diffusion.schedules import ScheduleSpec

T = 500


@pytest.fixture
def attention():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 24, 32, generator=g)
    a[0, 0, 0, 0], a[1, 0, 0, 0] = 0.0, 1.0
    return a


@pytest.mark.parametrize("lower_bound", [0.0, 0.2, 0.5, 0.9])
def test_mask_never_shrinks_as_t_falls(attention, lower_bound):
    act = activation_steps(attention, lower_bound, T)
    previous = time_mask(act, T)
    for t in range(T - 1, 0, -1):
        current = time_mask(act, t)
        assert torch.all(current | ~previous), f"a pixel switched off at t={t}"
        previous = current


@pytest.mark.parametrize("lower_bound", [0.1, 0.2, 0.37])
def test_every_pixel_active_up_to_lower_bound(attention, lower_bound):
    act = activation_steps(attention, lower_bound, T)
    limit = int(lower_bound * T)
    for t in range(1, limit + 1):
        assert time_mask(act, t).all()
    zero_attention = torch.zeros(1, 1, 4, 4)
    assert not time_mask(activation_steps(zero_attention, lower_bound, T), limit + 1).any()


def test_pixels_with_attention_plus_bound_at_least_one_are_active_from_T(attention):
    lower_bound = 0.3
    act = activation_steps(attention, lower_bound, T)
    high = attention + lower_bound >= 1
    assert high.any() and (~high).any()
    assert torch.all(time_mask(act, T)[high])
    assert not torch.any(time_mask(act, T)[~high])


def test_activation_is_exact_on_decimal_boundaries():
    a = torch.tensor([0.3, 0.8, 0.0, 1.0])
    assert activation_steps(a, 0.2, 500).tolist() == [250, 500, 100, 500]


@pytest.mark.parametrize("lower_bound", [0.05, 0.2, 0.6])
def test_update_fraction_matches_mean_of_clipped_attention(attention, lower_bound):
    schedule = ScheduleSpec().build()
    act = activation_steps(attention, lower_bound, T)
    counted = sum(time_mask(act, t).double().mean() for t in range(1, T + 1)) / T
    measured = update_fraction(act, schedule.steps)
    assert measured == pytest.approx(float(counted), abs=1e-12)
    assert abs(measured - expected_update_fraction(attention, lower_bound)) <= 1 / T


def test_update_fraction_on_respaced_schedule_counts_visited_steps(attention):
    schedule = ScheduleSpec().build().respace(50)
    act = activation_steps(attention, 0.2, T)
    counted = sum(time_mask(act, int(t)).double().mean() for t in schedule.steps[1:]) / 50
    assert update_fraction(act, schedule.steps) == pytest.approx(float(counted), abs=1e-12)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_lower_bound_is_validated(bad):
    with pytest.raises(ValueError, match="lower bound"):
        validate_lower_bound(bad)


def test_the_expected_update_fraction_of_a_large_map_is_summed_in_chunks_to_the_same_value(monkeypatch):
    """Chunks (a gigapixel map needs no float64 copies of itself) give the whole map's mean, flat
    areas included."""
    import yoda_sr.diffusion.masking as masking

    generator = torch.Generator().manual_seed(0)
    attention = torch.rand(1, 1, 41, 53, generator=generator)
    flat = torch.rand(41, 53, generator=generator) < 0.3
    whole = [expected_update_fraction(attention, 0.3), expected_update_fraction(attention, 0.3, flat)]
    monkeypatch.setattr(masking, "_FRACTION_CHUNK", 100)
    chunked = [expected_update_fraction(attention, 0.3), expected_update_fraction(attention, 0.3, flat)]
    assert chunked == pytest.approx(whole, rel=1e-12)
    share = (attention.double()[0, 0] + 0.3).clamp(max=1.0).masked_fill(flat, 0.0)
    assert chunked[1] == pytest.approx(float(share.mean()), rel=1e-12) and chunked[1] < chunked[0]
