"""Importing upstream checkpoints: exact conversion, shape inference, and refusing unsafe pickles.

Upstream files are built here from our own models through the documented key map
(``convert.sr3_janspiry.to_upstream`` / ``convert.srdiff.to_upstream``) and saved the way the
upstream code saves them: Janspiry's ``*_gen.pth`` is ``GaussianDiffusion.state_dict()`` (UNet under
``denoise_fn.`` plus schedule buffers); SRDiff's ``.ckpt`` nests it as ``["state_dict"]["model"]``
next to optimizer states and counters.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yoda_sr import checkpoints
from yoda_sr.convert import convert_file, sr3_janspiry, srdiff
from yoda_sr.convert.pickles import UnsafeCheckpointError
from yoda_sr.diffusion.schedules import ScheduleSpec
from yoda_sr.errors import SettingError, YodaError
from yoda_sr.models import create_model_from_config, get_config
from yoda_sr.models.base import UPSTREAM_DIFFUSION_BUFFERS

from conftest import cli, prepare, tiny_model


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def upstream_buffers(spec: ScheduleSpec) -> dict[str, torch.Tensor]:
    """The schedule buffers upstream registers, in float32 as upstream's ``to_torch`` makes them."""
    schedule = spec.build()
    betas = schedule.betas.float()
    alphas_cumprod = torch.cumprod(1 - betas.double(), 0).float()
    buffers = {name: torch.zeros_like(betas) for name in UPSTREAM_DIFFUSION_BUFFERS}
    buffers["betas"] = betas
    buffers["alphas_cumprod"] = alphas_cumprod
    return buffers


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial values everywhere (zero-initialised layers and norms included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model.eval()


def save_janspiry_gen(model, spec: ScheduleSpec, path: Path) -> Path:
    state = {**sr3_janspiry.to_upstream(model.state_dict()), **upstream_buffers(spec)}
    torch.save(state, path)
    return path


def save_srdiff_ckpt(model, spec: ScheduleSpec, path: Path) -> Path:
    state = {**srdiff.to_upstream(model.state_dict()), **upstream_buffers(spec)}
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    torch.save(
        {
            "state_dict": {"model": state},
            "optimizer_states": [optimizer.state_dict()],
            "global_step": 400000,
            "epoch": 12,
            "checkpoint_callback_best": 0,
        },
        path,
        _use_new_zipfile_serialization=False,  # as upstream's utils.save_checkpoint writes it
    )
    return path


def outputs(model, hr: torch.Tensor, scale: int) -> torch.Tensor:
    cond = prepare(model, hr, scale)
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(hr.shape, generator=generator)
    t = torch.tensor([7, 42])
    with torch.no_grad():
        return model(z, cond, t, torch.tensor([0.9, 0.3]))


def import_and_load(file: Path, name: str, capsys, *extra: str):
    code = cli("checkpoints", "import", str(file), "--name", name, *extra)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert name in out
    return checkpoints.load_denoiser(name)


SR3_CASES = {
    "registered": ("sr3-tiny", None),
    "custom": (
        {
            "scale": 2,
            "in_channel": 6,
            "out_channel": 3,
            "inner_channel": 24,
            "norm_groups": 8,
            "channel_mults": [1, 2, 3],
            "attn_res": [16],
            "res_blocks": 2,
            "dropout": 0.0,
            "with_noise_level_emb": True,
            "image_size": 64,
        },
        2,
    ),
}


@pytest.mark.parametrize("case", sorted(SR3_CASES))
def test_janspiry_sr3_gen_pth_imports_bit_exact(case, tmp_path, capsys, hr_crops):
    config, scale = SR3_CASES[case]
    if isinstance(config, str):
        original = randomise(tiny_model(config), seed=1)
    else:
        original = randomise(create_model_from_config("sr3", config), seed=2)
    # a registered config is matched with its schedule; a custom model keeps the one its betas say
    spec = get_config(config).schedule if isinstance(config, str) else ScheduleSpec("linear", 2000, 1e-6, 1e-2)
    file = save_janspiry_gen(original, spec, tmp_path / "I640000_E37_gen.pth")
    extra = ("--scale", str(scale), "--norm-groups", str(config["norm_groups"])) if scale else ()
    loaded = import_and_load(file, f"sr3-{case}", capsys, *extra)

    assert loaded.metadata["arch"] == "sr3"
    assert loaded.metadata["schedule"] == spec.to_dict()
    hparams = loaded.metadata["hparams"]
    for key in ("inner_channel", "channel_mults", "res_blocks", "in_channel", "out_channel"):
        assert hparams[key] == original.config[key]
    hr = hr_crops[..., :32, :32]
    model_scale = original.config["scale"]
    assert torch.equal(outputs(loaded.model, hr, model_scale), outputs(original, hr, model_scale))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_wn": True}, {"use_attn": True, "up_input": True}, {"sr_scale": 8, "rrdb_num_block": 5}],
    ids=["tiny", "weight-norm", "attn-up-input", "8x"],
)
def test_srdiff_ckpt_imports_bit_exact(overrides, tmp_path, capsys, hr_crops):
    hparams = {**get_config("srdiff-tiny").hparams, **overrides}
    torch.manual_seed(4)
    original = randomise(create_model_from_config("srdiff", hparams), seed=5)
    spec = ScheduleSpec(kind="cosine", steps=100)
    file = save_srdiff_ckpt(original, spec, tmp_path / "model_ckpt_steps_400000.ckpt")
    loaded = import_and_load(file, "srdiff-test", capsys)

    assert loaded.metadata["schedule"] == spec.to_dict()
    for key, value in hparams.items():
        assert loaded.metadata["hparams"][key] == value, key
    scale = hparams["sr_scale"]
    hr = hr_crops[..., :32, :32] if scale == 4 else torch.nn.functional.pad(hr_crops, (0, 16))[..., :32, :64]
    assert torch.equal(outputs(loaded.model, hr, scale), outputs(original, hr, scale))


def test_registry_entry_import_takes_the_entrys_config_and_source(tmp_path, capsys):
    original = randomise(create_model_from_config("srdiff", get_config("srdiff-celeba-8x").hparams), seed=6)
    file = save_srdiff_ckpt(original, ScheduleSpec(kind="cosine", steps=100), tmp_path / "celeba.ckpt")
    loaded = import_and_load(file, "srdiff-celeba-8x", capsys)
    metadata = loaded.metadata
    assert (metadata["hparams"]["lr_size"], metadata["hparams"]["hr_size"]) == (20, 160)
    assert metadata["scale"] == 8
    assert metadata["source"]["page"].startswith("https://github.com/LeiaLi/SRDiff")
    assert metadata["source"]["sha256"] == checkpoints.sha256_file(file)
    # the first import pinned the file's hash: a different file under that name is refused
    other = save_srdiff_ckpt(randomise(original, seed=7), ScheduleSpec(kind="cosine", steps=100), tmp_path / "b.ckpt")
    assert cli("checkpoints", "remove", "srdiff-celeba-8x") == 0
    assert cli("checkpoints", "import", str(other), "--name", "srdiff-celeba-8x") == 1
    assert "sha256" in capsys.readouterr().err


def test_format_detection_and_mismatch(tmp_path):
    model = randomise(tiny_model("sr3-tiny"), seed=1)
    file = save_janspiry_gen(model, ScheduleSpec(), tmp_path / "x_gen.pth")
    assert convert_file(file).format == "sr3-janspiry"
    with pytest.raises(Exception, match="looks like sr3-janspiry, not srdiff"):
        convert_file(file, "srdiff")


def test_wrong_inference_cannot_pass_silently(tmp_path):
    model = randomise(tiny_model("sr3-tiny"), seed=1)
    state = sr3_janspiry.to_upstream(model.state_dict())
    state["denoise_fn.ups.0.res_block.block1.block.3.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "broken_gen.pth")
    with pytest.raises(Exception, match="do not fit"):
        convert_file(tmp_path / "broken_gen.pth")


def test_optimizer_file_is_explained(tmp_path, capsys):
    torch.save({"state": {}, "param_groups": [{"lr": 1e-4}]}, tmp_path / "I640000_E37_opt.pth")
    assert cli("checkpoints", "import", str(tmp_path / "I640000_E37_opt.pth"), "--name", "x") == 1
    err = capsys.readouterr().err
    assert "_gen.pth" in err and err.count("\n") == 1


class _Payload:
    """Pickles into a call of ``Path.touch`` on a marker: proof of execution if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", ["namespace", "callable"])
def test_pickles_holding_more_than_tensors_are_refused_unexecuted(payload, legacy, tmp_path, capsys, store):
    marker = tmp_path / "executed"
    model = tiny_model("sr3-tiny")
    content = {"state_dict": sr3_janspiry.to_upstream(model.state_dict())}
    if payload == "namespace":
        content["args"] = argparse.Namespace(lr=1e-4, marker=str(marker))
    else:
        content["hook"] = _Payload(marker)
    file = tmp_path / "upstream.pth"
    torch.save(content, file, _use_new_zipfile_serialization=not legacy)

    with pytest.raises(UnsafeCheckpointError) as raised:
        convert_file(file)
    # the zip format lets torch list the globals (pathlib.Path.touch); a legacy pickle names the
    # first one it met (getattr, which is how Path.touch pickles)
    expected = ["argparse.Namespace"] if payload == "namespace" else ["pathlib.", "getattr"]
    assert any(name in str(raised.value) for name in expected)
    assert cli("checkpoints", "import", str(file), "--name", "unsafe") == 1
    err = capsys.readouterr().err
    assert err.startswith("yoda-sr: error:") and err.count("\n") == 1 and "weights_only=True" in err
    assert not marker.exists()
    assert not (store / "checkpoints" / "unsafe.safetensors").exists()


def test_dino_resnet50_pth_imports_and_drives_attention(tmp_path, capsys):
    import torchvision

    from yoda_sr.attention import compute_attention

    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()  # the release has no fc; extra fc.* is dropped
    torch.save(state, tmp_path / "dino_resnet50_pretrain.pth")
    assert cli("checkpoints", "import", str(tmp_path / "dino_resnet50_pretrain.pth"), "--name", "dino-resnet50") == 0
    capsys.readouterr()
    path = checkpoints.installed_path("dino-resnet50")
    assert checkpoints.read_metadata(path)["method"] == "dino-resnet50"
    maps = compute_attention(torch.rand(1, 3, 48, 64) * 2 - 1, "dino-resnet50")
    assert maps.shape == (1, 1, 48, 64) and 0 <= float(maps.min()) < float(maps.max()) <= 1


def test_imported_names_are_listed_and_removed(tmp_path, capsys):
    model = randomise(tiny_model("srdiff-tiny"), seed=1)
    file = save_srdiff_ckpt(model, ScheduleSpec(kind="cosine", steps=100), tmp_path / "m.ckpt")
    assert cli("checkpoints", "import", str(file), "--name", "my-model") == 0
    assert cli("checkpoints", "import", str(file), "--name", "my-model") == 2  # exists: needs --force
    capsys.readouterr()
    assert cli("checkpoints", "list") == 0
    assert "my-model" in capsys.readouterr().out
    assert cli("checkpoints", "verify", "my-model") == 0
    assert cli("checkpoints", "remove", "my-model") == 0
    assert not checkpoints.installed_path("my-model").exists()
    assert cli("checkpoints", "path", "my-model") == 2
    assert os.listdir(checkpoints.home() / "checkpoints") == []


def test_layers_import_only_what_they_need() -> None:
    """weights_file is a leaf (only _version, errors, fsutil); the checkpoint store imports no torch."""
    probe = (
        "import sys, yoda_sr.weights_file; print(sorted(m for m in sys.modules if m.startswith('yoda_sr')));"
        "import yoda_sr.checkpoints; print('torch' in sys.modules, 'yoda_sr.convert' in sys.modules)"
    )
    lines = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines == [
        "['yoda_sr', 'yoda_sr._version', 'yoda_sr.errors', 'yoda_sr.fsutil', 'yoda_sr.weights_file']",
        "False False",
    ]


@pytest.mark.parametrize("stream", ["off", "on"])
@pytest.mark.parametrize("upstream", ["sr3-janspiry", "srdiff"])
def test_imported_models_are_conditioned_as_their_upstream_trained(upstream, stream, tmp_path, capsys):
    """The recipe is recorded at import, and loading the checkpoint conditions on it (whole or streamed)."""
    import numpy as np

    from yoda_sr import Settings, Upscaler
    from yoda_sr.image.conditioning import upscale_condition
    from yoda_sr.image.imaging import resize_bicubic, to_tensor

    reference = np.load(Path(__file__).parent / "data" / "upstream_x_up.npz")
    if upstream == "srdiff":
        model = randomise(tiny_model("srdiff-tiny"), seed=1)
        file = save_srdiff_ckpt(model, ScheduleSpec(kind="cosine", steps=100), tmp_path / "m.ckpt")
        lr = reference["srdiff4_lr"]  # 6 x 8 -> 24 x 32: the stored upstream condition itself
        expected = torch.from_numpy(reference["srdiff4_x_up"])[None]
    else:
        model = randomise(tiny_model("sr3-tiny"), seed=1)
        file = save_janspiry_gen(model, ScheduleSpec(kind="linear", steps=500, end=0.03), tmp_path / "m_gen.pth")
        lr = reference["sr3_lr"]  # 8 x 8 -> 32 x 32 (the stored reference is 8x; the recipe is the same)
        expected = upscale_condition(to_tensor(lr), (32, 32), "pil-uint8")
    loaded = import_and_load(file, "imported", capsys)
    assert loaded.metadata["x_up"] == {"srdiff": "matlab-lr256", "sr3-janspiry": "pil-uint8"}[upstream]

    upscaler = Upscaler.from_pretrained("imported", device="cpu")
    seen: list[torch.Tensor] = []
    prepare = upscaler.model.prepare
    upscaler.model.prepare = lambda lr, x_up: seen.append(x_up) or prepare(lr, x_up)  # type: ignore[method-assign]
    tile = 64 if stream == "on" else 0
    upscaler.upscale(lr, settings=Settings(steps=2, attention="none", stream=stream, tile=tile, tile_overlap=8))
    assert torch.equal(seen[-1], expected)  # (seen[0] is the memory estimate's probe)
    assert not torch.equal(expected, resize_bicubic(to_tensor(lr), size=tuple(expected.shape[-2:])))


def meta_upstream_unet(config: str) -> dict[str, torch.Tensor]:
    """Our keys of a registered SR3 config's UNet, as shapes only (the meta device: no memory)."""
    with torch.device("meta"):
        return create_model_from_config("sr3", get_config(config).hparams).state_dict()


def test_janspiry_configs_are_matched_on_everything_that_identifies_them():
    """sr3-64-256 and sr3-64-512 share their UNet: the schedule or the scale tells them apart, and
    when nothing does, the importer asks instead of taking the first name."""
    unet = meta_upstream_unet("sr3-64-512")
    upstream_schedule = ScheduleSpec(kind="linear", steps=2000, start=1e-6, end=1e-2)  # sr_sr3_64_512.json
    hparams, matched = sr3_janspiry.infer(unet, schedule=upstream_schedule)
    assert matched == "sr3-64-512"
    assert (hparams["scale"], hparams["image_size"], hparams["norm_groups"]) == (8, 512, 16)
    assert sr3_janspiry.infer(unet, schedule=get_config("sr3-64-256").schedule)[1] == "sr3-64-256"
    assert sr3_janspiry.infer(unet, 8)[1] == "sr3-64-512"  # no betas in the file: the scale decides
    with pytest.raises(SettingError, match="sr3-64-256 \\(4x\\), sr3-64-512 \\(8x\\) alike") as raised:
        sr3_janspiry.infer(unet)
    assert raised.value.setting == "scale"
    # a registry entry names its config: weights with another UNet are refused
    assert sr3_janspiry.infer(unet, 8, config="sr3-64-512")[1] == "sr3-64-512"
    with pytest.raises(YodaError, match="do not have the UNet of sr3-16-128"):
        sr3_janspiry.infer(unet, 8, config="sr3-16-128")
    with pytest.raises(SettingError, match="sr3-64-512 has norm_groups 16, not 32"):
        sr3_janspiry.infer(unet, 8, config="sr3-64-512", norm_groups=32)


def test_janspiry_groups_come_from_the_match_or_the_user_never_a_guess():
    unet = meta_upstream_unet("sr3-16-128")  # Janspiry's default norm_groups (32) is its config's
    assert sr3_janspiry.infer(unet, schedule=get_config("sr3-16-128").schedule)[0]["norm_groups"] == 32
    other = ScheduleSpec(kind="linear", steps=1000, start=1e-4, end=2e-2)  # trained on another schedule
    with pytest.raises(SettingError, match="the UNet is sr3-16-128's \\(8x, 32 groups\\)") as raised:
        sr3_janspiry.infer(unet, 8, schedule=other)
    assert raised.value.setting == "norm_groups"
    assert sr3_janspiry.infer(unet, 8, schedule=other, norm_groups=16)[0]["norm_groups"] == 16
    with pytest.raises(SettingError, match="does not divide the UNet's widths"):
        sr3_janspiry.infer(unet, 8, schedule=other, norm_groups=24)


def test_the_hint_for_an_unknown_64_to_512_file_names_the_8x_config_first():
    unet = meta_upstream_unet("sr3-64-512")
    other = ScheduleSpec(kind="linear", steps=1000, start=1e-4, end=2e-2)
    with pytest.raises(SettingError, match="the UNet is sr3-64-512's \\(8x, 16 groups\\), sr3-64-256's"):
        sr3_janspiry.infer(unet, 8, schedule=other)


def test_sr3_groups_are_never_guessed_on_import(tmp_path, capsys, store, hr_crops):
    """16 groups on widths that 32 divides: the old importer took 32 with a note, and the outputs were off."""
    hparams = {**SR3_CASES["custom"][0], "inner_channel": 32, "channel_mults": [1, 2], "norm_groups": 16}
    original = randomise(create_model_from_config("sr3", hparams), seed=3)
    file = save_janspiry_gen(original, ScheduleSpec(kind="linear", steps=1000), tmp_path / "own_gen.pth")
    assert cli("checkpoints", "import", file, "--name", "own", "--scale", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("yoda-sr: error: --norm-groups: ") and err.count("\n") == 1, err
    assert not (store / "checkpoints" / "own.safetensors").exists()
    assert cli("checkpoints", "import", file, "--name", "own", "--scale", "2", "--norm-groups", "12") == 2
    assert "does not divide" in capsys.readouterr().err
    loaded = import_and_load(file, "own", capsys, "--scale", "2", "--norm-groups", "16")
    assert loaded.metadata["hparams"]["norm_groups"] == 16
    hr = hr_crops[..., :32, :32]
    assert torch.equal(outputs(loaded.model, hr, 2), outputs(original, hr, 2))


def test_srdiff_weights_take_no_group_count(tmp_path, capsys, store):
    model = randomise(tiny_model("srdiff-tiny"), seed=1)
    file = save_srdiff_ckpt(model, ScheduleSpec(kind="cosine", steps=100), tmp_path / "m.ckpt")
    assert cli("checkpoints", "import", file, "--name", "m", "--norm-groups", "8") == 2
    assert "only SR3 weights take a group count" in capsys.readouterr().err


def test_imported_models_take_their_input_as_upstream_did_unless_told(tmp_path, capsys, store):
    """Upstream upscaled its input as it is: an imported model's --clean default is off (recorded at
    import; files imported before that record it by the configuration they matched), the project's
    own models keep auto, and --clean auto still cleans for an imported one."""
    import numpy as np

    from yoda_sr import Settings, Upscaler
    from yoda_sr.models.validation import default_clean

    model = randomise(tiny_model("srdiff-tiny"), seed=1)
    file = save_srdiff_ckpt(model, ScheduleSpec(kind="cosine", steps=100), tmp_path / "m.ckpt")
    loaded = import_and_load(file, "imported", capsys)
    assert loaded.metadata["sampling"]["clean"] == "off"
    older = {key: value for key, value in loaded.metadata.items() if key != "sampling"}
    assert default_clean(older) == "off" and default_clean({"arch": "srdiff"}) == "auto"

    upscaler = Upscaler.from_pretrained("imported", device="cpu")
    assert upscaler.resolve(Settings()).clean == "off"
    assert upscaler.resolve(Settings(clean="auto")).clean == "auto"
    assert Upscaler.from_pretrained(device="cpu").resolve(Settings()).clean == "auto"  # the embedded default

    rng = np.random.default_rng(0)
    grainy = np.clip(128 + rng.normal(0, 8, (48, 48, 3)), 0, 255).astype(np.uint8)  # noise sigma 8
    settings = Settings(steps=2, attention="none")
    assert upscaler.upscale(grainy, settings=settings).cleaning.kind == "none"
    assert upscaler.upscale(grainy, settings=Settings(steps=2, attention="none", clean="auto")).cleaning.kind == "noise"
