"""Block-sparse YODA sampling (docs/method.md §11): block masks, the rectangle cover, and a denoiser
that runs only where M(t) is active, equal to dense sampling where it must be and close elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from yoda_sr.api import Settings, Upscaler
from yoda_sr.diffusion.masking import block_attention
from yoda_sr.errors import SettingError
from yoda_sr.runtime.sampler import sample
from yoda_sr.runtime.sparse import Evaluator, cover

from conftest import cli, photo, prepare, save_tiny_checkpoint, tiny_model

MODELS = ["sr3-tiny", "srdiff-tiny"]


def generators(seed: int, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def hr_photo(height: int, width: int, top: int = 100, left: int = 150) -> torch.Tensor:
    from yoda_sr.image.imaging import to_tensor

    return to_tensor(np.ascontiguousarray(photo("astronaut")[top : top + height, left : left + width]))


def schedule(name: str, steps: int = 6):
    from yoda_sr.models import get_config

    return get_config(name).schedule.build().respace(steps)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


# --- block masks ---------------------------------------------------------------------------------


def test_block_attention_averages_each_block_and_keeps_the_mean():
    attention = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(0)) ** 4
    pooled = block_attention(attention, 16)
    for top in range(0, 40, 16):  # the last row of blocks is cut to 8 rows by the border
        for left in range(0, 56, 16):
            block = (slice(None), slice(None), slice(top, top + 16), slice(left, left + 16))
            expected = attention[block].mean(dim=(-2, -1), keepdim=True).expand_as(pooled[block])
            torch.testing.assert_close(pooled[block], expected)
    torch.testing.assert_close(pooled.mean(dim=(-2, -1)), attention.mean(dim=(-2, -1)))
    # A window of the image pooled on the image's grid agrees with the whole map on its whole blocks.
    window = block_attention(attention[..., 8:40, 24:56], 16, origin=(8, 24))
    assert torch.equal(window[..., 8:24, 8:24], pooled[..., 16:32, 32:48])
    assert torch.equal(block_attention(attention, 0), attention)


def test_cover_is_disjoint_covers_every_active_cell_and_merges_neighbours():
    def cost(boxes: np.ndarray) -> np.ndarray:  # 64-px cells, a 16-px halo, a call worth 2048 px
        heights = (boxes[:, 1] - boxes[:, 0]) * 64 + 32
        return (heights * ((boxes[:, 3] - boxes[:, 2]) * 64 + 32)).astype(float) + 2048

    rng = np.random.default_rng(0)
    for density in (0.05, 0.3, 0.8):
        cells = rng.random((24, 20)) < density
        covered = np.zeros(cells.shape, int)
        for top, bottom, left, right in cover(cells, cost):
            covered[top:bottom, left:right] += 1
        assert covered.max() == 1 and covered[cells].all()
    # An L of three cells is one rectangle (the fourth cell costs less than a second halo and call);
    # two cells far apart stay apart.
    cells = np.zeros((8, 8), bool)
    cells[1, 1] = cells[1, 2] = cells[2, 1] = True
    cells[6, 6] = True
    assert sorted(cover(cells, cost)) == [(1, 3, 1, 3), (6, 7, 6, 7)]
    assert cover(np.zeros((4, 4), bool), cost) == []


# --- sampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5)])
def test_full_attention_sparse_sampling_is_dense_sampling_bit_for_bit(name, sampler, eta, hr_crops):
    model = tiny_model(name)
    cond = prepare(model, hr_crops)
    steps = schedule(name)
    cell = model.info.size_multiple * 2
    evaluator = Evaluator(model, cond, block=cell)
    ones = torch.ones(hr_crops.shape[0], 1, *hr_crops.shape[-2:])
    common = {"sampler": sampler, "eta": eta, "lower_bound": 0.2}
    dense = sample(model, cond, steps, **common, eps_fn=evaluator.dense, generator=generators(7, 2))
    sparse = sample(
        model, cond, steps, **common, attention=ones, block=cell, eps_fn=evaluator.dense,
        masked_eps_fn=evaluator.masked, generator=generators(7, 2),
    )  # fmt: skip
    assert torch.equal(dense.image, sparse.image)
    # Where every cell holds an active pixel, the sparse step runs the whole image, as the dense one.
    attention = torch.rand(hr_crops.shape[0], 1, *hr_crops.shape[-2:], generator=torch.Generator().manual_seed(1))
    attention[..., ::cell, ::cell] = 1.0
    masked_dense = sample(
        model, cond, steps, **common, attention=attention, eps_fn=evaluator.dense, generator=generators(7, 2)
    )
    masked_sparse = sample(
        model, cond, steps, **common, attention=attention, eps_fn=evaluator.dense,
        masked_eps_fn=evaluator.masked, generator=generators(7, 2),
    )  # fmt: skip
    assert torch.equal(masked_dense.image, masked_sparse.image)
    assert not torch.equal(masked_dense.image, dense.image)


def test_resshift_runs_sparse_too():
    """ResShift's network predicts x0 and is read only inside M(t): the same evaluator plugs in."""
    from yoda_sr.diffusion.resshift import ResShiftSpec

    model = tiny_model("srdiff-tiny")
    hr = hr_photo(128, 128)
    cond = prepare(model, hr)
    steps = ResShiftSpec().build().respace(5)
    attention = torch.zeros(1, 1, 128, 128)
    attention[..., 32:64, 64:96] = 1.0
    evaluator = Evaluator(model, cond, block=32)
    run = {"lower_bound": 0.0, "block": 32, "eps_fn": evaluator.dense}
    dense = sample(model, cond, steps, attention=attention, **run, generator=generators(3, 1))
    sparse = sample(
        model, cond, steps, attention=attention, **run, masked_eps_fn=evaluator.masked, generator=generators(3, 1)
    )
    assert evaluator.pixels == [5 * 128 * 128 + 5 * 64 * 64]  # the dense run, then one 64 px crop a step
    assert (sparse.image - dense.image).abs().max() < 0.02
    ones = torch.ones(1, 1, 128, 128)
    plain = sample(model, cond, steps, eps_fn=evaluator.dense, generator=generators(3, 1))
    masked = sample(
        model, cond, steps, attention=ones, **run, masked_eps_fn=evaluator.masked, generator=generators(3, 1)
    )
    assert torch.equal(plain.image, masked.image)


@pytest.mark.parametrize("name,sampler", [("srdiff-tiny", "ddpm"), ("sr3-tiny", "ddim")])
def test_one_active_block_is_all_the_denoiser_sees(name, sampler):
    model = tiny_model(name)
    hr = torch.cat([hr_photo(128, 128), hr_photo(128, 128, top=300)])
    cond = prepare(model, hr)
    steps = schedule(name, 10)
    seen: list[tuple[tuple[int, ...], torch.Tensor]] = []
    hook = model.register_forward_pre_hook(lambda _module, args: seen.append((tuple(args[0].shape), args[1].x_up)))
    attention = torch.zeros(2, 1, 128, 128)
    attention[0, :, 32:64, 64:96] = 0.5  # image 0: one block, active for t <= T / 2; image 1: nothing
    evaluator = Evaluator(model, cond, block=32, halo=16)
    try:
        result = sample(
            model, cond, steps, sampler=sampler, attention=attention, lower_bound=0.0, block=32,
            eps_fn=evaluator.dense, masked_eps_fn=evaluator.masked, generator=generators(3, 2),
        )  # fmt: skip
    finally:
        hook.remove()
    active_steps = int((steps.steps[1:] <= steps.train_steps // 2).sum())
    assert 0 < active_steps < 10
    assert len(seen) == active_steps  # a step with no active pixel makes no call; image 1 none at all
    for shape, x_up in seen:  # the block and a 16 px halo: rows 16..80, columns 48..112 of image 0
        assert shape == (1, 3, 64, 64)
        assert torch.equal(x_up, cond.x_up[:1, :, 16:80, 48:112])
    assert evaluator.pixels == [active_steps * 64 * 64, 0]
    assert evaluator.work_fraction(10) == [active_steps * 64 * 64 / (10 * 128 * 128), 0.0]
    # Outside the block the state followed the known region alone: the image is the base there.
    known = model.from_diffusion_space(model.known_region(cond), cond)
    if model.space == "residual":
        outside = torch.ones(2, 1, 128, 128, dtype=torch.bool)
        outside[0, :, 32:64, 64:96] = False
        assert (result.image - known).abs().masked_select(outside).max() < 0.02


def test_sparse_and_dense_agree_on_a_real_photo():
    """The embedded model on a 256 x 256 crop of a real photo, sift map in 32 px blocks.

    Eps of a rectangle evaluated with a 16 px halo differs from the whole image's by at most 0.003
    (docs/method.md §11), and only within a few pixels of the rectangle's edge. Through 5 steps that
    moved 0.01-0.02 % of the pixels by one grey level (PSNR 84-90 dB between the two outputs on
    crops of coffee, astronaut and chelsea): the test allows 2 levels and 60 dB, for other BLAS."""
    upscaler = Upscaler.from_pretrained(None, device="cpu")
    image = np.ascontiguousarray(photo("coffee")[100:164, 200:264])
    dense = upscaler.upscale(image, seed=1, settings=Settings(sparse=False, block=32))
    sparse = upscaler.upscale(image, seed=1, settings=Settings(sparse=True, block=32))
    assert dense.update_fraction == sparse.update_fraction < 0.9
    assert sparse.work_fraction < dense.work_fraction
    assert psnr(sparse.image, dense.image) > 60
    assert np.abs(sparse.image.astype(int) - dense.image).max() <= 2


# --- the façade: tiles, batches, streams, settings, records --------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def upscaler(model_file) -> Upscaler:
    return Upscaler.from_pretrained(model_file, device="cpu")


def test_a_tiled_large_image_runs_sparse_without_seams(upscaler):
    image = np.ascontiguousarray(photo("chelsea")[60:156, 120:248])  # 96 x 128 -> 384 x 512
    settings = Settings(steps=4, block=32, lower_bound=0.0)
    untiled = upscaler.upscale(image, seed=3, settings=Settings(**{**vars(settings), "tile": 0}))
    tiled = upscaler.upscale(image, seed=3, settings=Settings(**{**vars(settings), "tile": 128}))
    assert tiled.tile == 128 and tiled.sparse and 0 < tiled.work_fraction < 1
    difference = np.abs(tiled.image.astype(np.float64) - untiled.image)
    assert difference.mean() < 0.1 and np.percentile(difference, 99.9) <= 2
    out = tiled.image.astype(np.float64).mean(axis=2)
    for axis in (0, 1):  # crops are at most 128 px: any seam would sit on the 32 px cell grid
        gradient = np.abs(np.diff(out, axis=axis))
        borders = [c - 1 for c in range(32, out.shape[axis], 32)]
        at_borders = np.take(gradient, borders, axis=axis).ravel()
        elsewhere = np.delete(gradient, borders, axis=axis).ravel()
        assert at_borders.mean() < 1.25 * elsewhere.mean()


def test_an_image_is_the_same_alone_and_in_a_batch(upscaler):
    first = np.ascontiguousarray(photo("chelsea")[60:92, 120:168])
    second = np.ascontiguousarray(photo("astronaut")[40:72, 60:108])
    settings = Settings(steps=4, block=32)
    alone = upscaler.upscale(first, seed=3, settings=settings)
    batch = upscaler.upscale_batch([second, first], seeds=[5, 3], settings=settings)
    assert np.array_equal(batch[1].image, alone.image)
    assert batch[1].work_fraction == alone.work_fraction and batch[1].update_fraction == alone.update_fraction
    assert batch[0].update_fraction != alone.update_fraction


def test_streamed_tiles_pool_on_the_images_grid_and_run_sparse(upscaler):
    image = np.ascontiguousarray(photo("chelsea")[60:108, 120:168])  # 192 x 192 HR
    settings = Settings(steps=4, block=32, tile=64, tile_overlap=16)
    whole = upscaler.upscale(image, seed=3, settings=settings)
    streamed = upscaler.upscale(image, seed=3, settings=Settings(**{**vars(settings), "stream": "on"}))
    streamed_dense = upscaler.upscale(
        image, seed=3, settings=Settings(**{**vars(settings), "stream": "on", "sparse": False})
    )
    assert streamed.streamed and streamed.block == 32
    assert streamed.update_fraction == pytest.approx(whole.update_fraction, abs=1e-12)
    assert streamed.work_fraction < streamed_dense.work_fraction
    assert psnr(streamed.image, streamed_dense.image) > 45


@pytest.mark.parametrize(
    "settings,setting",
    [(Settings(block=10), "block"), (Settings(block=-8), "block"), (Settings(sparse="yes"), "sparse")],  # type: ignore[arg-type]
)
def test_block_and_sparse_settings_are_checked(upscaler, settings, setting):
    with pytest.raises(SettingError) as error:
        upscaler.resolve(settings)
    assert error.value.setting == setting


def test_resolved_blocks_follow_the_sparse_switch(upscaler):
    assert upscaler.resolve(Settings()).block == 64
    assert upscaler.resolve(Settings(sparse=False)).block == 0
    assert upscaler.resolve(Settings(sparse=False, block=32)).block == 32


def test_cli_reports_work_and_refuses_bad_switches(tmp_path, model_file, capsys):
    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray(np.ascontiguousarray(photo("astronaut")[40:72, 60:108])).save(image)
    args = ("upscale", image, "--model", model_file, "--steps", "4")
    assert cli(*args, "-o", tmp_path / "out", "--json", "--block", "32", "-l", "0", "--attention", "gaussian") == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["sparse"] is True and record["block"] == 32
    assert 0 < record["update_fraction"] < 1 and 0 < record["work_fraction"] < 1
    logged = json.loads((tmp_path / "out" / "yoda-sr-upscale.jsonl").read_text())
    assert logged["work_fraction"] == record["work_fraction"]
    assert cli(*args, "-o", tmp_path / "dense", "--sparse", "off") == 0
    assert "work 1.00" in capsys.readouterr().out
    for flag, value in (("--sparse", "maybe"), ("--block", "10"), ("--block", "big")):
        assert cli(*args, "-o", tmp_path / "bad", flag, value) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"yoda-sr: error: {flag}:") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
