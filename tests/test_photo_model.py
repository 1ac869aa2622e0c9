"""The photo model: the LR that ``--clean auto`` deblocked is upscaled by a model trained on such LR
(``Settings.photo_model``), everything else by the model itself; and the training of it (``lr_clean``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from yoda_sr import checkpoints
from yoda_sr.api import Settings, Upscaler
from yoda_sr.errors import SettingError
from yoda_sr.evaluation.baselines import degrade
from yoda_sr.image.degradations import Degradation, jpeg_roundtrip
from yoda_sr.image.io import read_picture
from yoda_sr.image.restoration import clean
from yoda_sr.seeds import derive_seed
from yoda_sr.weights_file import read_metadata

from conftest import cli, photo, save_tiny_checkpoint

FAST = Settings(steps=3, attention="none")


def variant(path, out, *, scale: float = 1.5, **metadata):
    """The checkpoint at ``path`` with its denoiser's last layer scaled (other outputs), and ``metadata`` changed."""
    state = load_file(str(path))
    key = next(name for name in state if name.endswith("final_conv.1.weight"))
    state[key] = state[key] * scale
    return checkpoints.save(out, state, {**read_metadata(path), **metadata})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    main = save_tiny_checkpoint(folder / "main.safetensors")
    # other sampling defaults than the model's: routed, it must sample with the model's settings
    photo_model = variant(main, folder / "photo.safetensors", scale=40.0, sampling={"steps": 2, "sampler": "ddim"})
    return main, photo_model


@pytest.fixture(scope="module")
def images():
    clean_lr = degrade(photo("coffee"), 4)[:64, :64].copy()
    return clean_lr, jpeg_roundtrip(clean_lr, 50)


def test_cleaned_lr_goes_to_the_photo_model_and_clean_lr_stays_with_the_model(models, images):
    main, photo_path = models
    clean_lr, jpeg_lr = images
    upscaler = Upscaler.from_pretrained(main, device="cpu")
    routed = dict(FAST.__dict__, photo_model=str(photo_path))

    on_jpeg = upscaler.upscale(jpeg_lr, seed=3, settings=Settings(**routed))
    assert on_jpeg.cleaning.kind == "jpeg" and on_jpeg.model == "photo"
    # exactly what the photo model itself makes of the cleaned LR, with the same settings and seed
    photo = Upscaler.from_pretrained(photo_path, device="cpu")
    alone = photo.upscale(clean(jpeg_lr)[0], seed=3, settings=upscaler.resolve(Settings(**dict(routed, clean="off"))))
    assert np.array_equal(on_jpeg.image, alone.image)
    off = upscaler.upscale(jpeg_lr, seed=3, settings=Settings(**dict(routed, photo_model="off")))
    assert off.model == "main" and not np.array_equal(off.image, on_jpeg.image)

    by_default = upscaler.upscale(jpeg_lr, seed=3, settings=Settings(photo_model=str(photo_path)))
    expected = photo.upscale(clean(jpeg_lr)[0], seed=3, settings=upscaler.resolve(Settings(clean="off")))
    assert by_default.steps == upscaler.defaults.steps != photo.defaults.steps
    assert np.array_equal(by_default.image, expected.image)

    noisy = Degradation(noise=6.0).apply(clean_lr, np.random.default_rng(0))
    on_noise = upscaler.upscale(noisy, seed=3, settings=Settings(**routed))  # not what it was trained for
    assert on_noise.cleaning.kind == "noise" and on_noise.model == "main"

    on_clean = upscaler.upscale(clean_lr, seed=3, settings=Settings(**routed))
    assert on_clean.cleaning.kind == "none" and on_clean.model == "main"
    # a batch mixing both keeps its order, each image with its own model
    batch = upscaler.upscale_batch([clean_lr, jpeg_lr], seeds=[3, 3], settings=Settings(**routed))
    assert [result.model for result in batch] == ["main", "photo"]
    assert np.array_equal(batch[0].image, on_clean.image) and np.array_equal(batch[1].image, on_jpeg.image)
    assert batch[1].model_sha256 == photo.loaded.sha256 != batch[0].model_sha256


def test_a_photo_model_that_samples_differently_or_does_not_exist_is_refused_by_name(models, images, tmp_path):
    main, _ = models
    upscaler = Upscaler.from_pretrained(main, device="cpu")
    other_schedule = dict(read_metadata(main)["schedule"], steps=50)
    wrong = variant(main, tmp_path / "wrong.safetensors", schedule=other_schedule)
    for name, words in ((str(wrong), "noise schedule differ"), ("no-such-photo-model", "no-such-photo-model")):
        with pytest.raises(SettingError) as raised:
            upscaler.upscale(images[1], settings=Settings(**dict(FAST.__dict__, photo_model=name)))
        assert raised.value.setting == "photo_model" and words in str(raised.value)
    # a clean LR never needs it, so it is never loaded
    assert upscaler.upscale(images[0], settings=Settings(**dict(FAST.__dict__, photo_model=str(wrong)))).model == "main"


def test_only_the_registry_file_itself_brings_its_photo_model(models, tmp_path):
    """A file is not the registry's model because its stem is that name: a copy of the default's
    weights named ``yoda-srdiff-x4.safetensors`` has no photo model; the default by name has."""
    import shutil

    assert Upscaler.from_pretrained(models[0], device="cpu").defaults.photo_model == "off"
    copy = tmp_path / "yoda-srdiff-x4.safetensors"
    shutil.copyfile(checkpoints.installed_path("yoda-srdiff-x4"), copy)
    assert checkpoints.load_denoiser(copy).name == "yoda-srdiff-x4"
    assert checkpoints.load_denoiser(copy).photo_model is None
    assert checkpoints.load_denoiser("yoda-srdiff-x4").photo_model == "yoda-srdiff-x4-photo"


def test_the_cli_record_and_evaluate_name_the_model_that_made_each_image(models, images, tmp_path, capsys):
    main, photo_path = models
    from PIL import Image

    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(images[0]).save(source / "clean.png")
    Image.fromarray(images[1]).save(source / "photo.jpg", quality=50)
    assert read_picture(source / "photo.jpg").rgb.shape == images[1].shape
    out = tmp_path / "out"
    code = cli("upscale", source, "-o", out, "--model", main, "--photo-model", photo_path, "--steps", "2",
               "--attention", "none", "--json")  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert f"; deblocked JPEG input: {photo_path}" in captured.err  # the run's first line says where JPEGs go
    records = {Path(r["input"]).name: r for r in map(json.loads, captured.out.splitlines())}
    assert records["clean.png"]["model"] == "main" and records["clean.png"]["cleaned"] == "none"
    assert records["photo.jpg"]["model"] == "photo" and records["photo.jpg"]["cleaned"].startswith("JPEG")
    assert records["photo.jpg"]["photo_model"] == str(photo_path)

    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(photo("coffee")[:256, :256]).save(hr / "coffee.png")
    for degradation, model in (("none", "main"), ("jpeg:50", "photo")):
        results = tmp_path / f"eval-{degradation.replace(':', '')}"
        code = cli("evaluate", "--data", hr, "--model", main, "--photo-model", photo_path, "--steps", "3",
                   "--compare", "bicubic,base,yoda", "--degrade", degradation, "-o", results)  # fmt: skip
        assert code == 0
        rows = list(csv.DictReader(open(results / "per_image.csv", encoding="utf-8")))
        assert {row["method"]: row["model"] for row in rows} == {"bicubic": "", "base": model, "yoda": model}
    # the photo model's image is what upscale makes of that LR with the model's settings
    upscaler = Upscaler.from_pretrained(main, device="cpu")
    lr = jpeg_roundtrip(degrade(photo("coffee")[:256, :256], 4), 50)
    settings = Settings(steps=3, photo_model=str(photo_path))
    expected = upscaler.upscale(lr, seed=derive_seed(0, "coffee.png"), settings=settings)
    assert expected.model == "photo"
    assert np.array_equal(read_picture(results / "yoda" / "coffee.png").rgb, expected.image)


def test_lr_clean_trains_on_the_lr_upscale_will_clean(tmp_path):
    from yoda_sr.image.imaging import to_array, to_tensor
    from yoda_sr.training import data, load_config

    hr = torch.from_numpy(photo("astronaut")[:128, :128].copy()).permute(2, 0, 1).float() / 127.5 - 1
    items = [{"hr": hr, "attention": torch.ones(1, 128, 128), "plain": torch.tensor(False), "index": torch.tensor(i)}
             for i in range(6)]  # fmt: skip
    drawn = data.Collate(4, seed=3, lr_degradation="realistic")(items)["lr"]
    cleaned = data.Collate(4, seed=3, lr_degradation="realistic", lr_clean="auto")(items)["lr"]
    changed = 0
    for one, other in zip(drawn, cleaned, strict=True):
        expected = to_tensor(clean(to_array(one.unsqueeze(0)))[0])[0]
        assert torch.equal(other, expected)
        changed += not torch.equal(one, other)
    assert changed >= 2  # the realistic draws include JPEGs the cleaning finds

    base = {"data": str(tmp_path), "val": str(tmp_path), "model": "srdiff-tiny"}
    with pytest.raises(SettingError) as raised:
        load_config(None, {**base, "lr_clean": "auto"})
    assert raised.value.setting == "lr_clean" and "degraded 8-bit LR only" in str(raised.value)
    with pytest.raises(SettingError):
        load_config(None, {**base, "lr_clean": "always", "lr_degradation": "realistic"})
    assert load_config(None, {**base, "lr_clean": "auto", "lr_jpeg": 60}).lr_clean == "auto"
