"""`yoda-sr evaluate --compare spandrel:FILE`: other SR models (random weights in two of spandrel's
architectures, saved as .safetensors and .pth) evaluated next to bicubic on the same LR.

The peers' outputs are checked against the architectures' own forward pass on the LR the evaluation
wrote, so a wrong input range, channel order, dtype or crop fails here.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from yoda_sr.evaluation.metrics import image_metrics
from yoda_sr.evaluation.peers import Peer
from yoda_sr.image.imaging import bicubic_degrade, to_array, to_tensor

from conftest import cli, photo, save_tiny_checkpoint

spandrel_architectures = pytest.importorskip("spandrel.architectures")
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402

CROPS = {
    "astronaut.png": ("astronaut", 100, 200),
    "chelsea.png": ("chelsea", 80, 150),
    "coffee.png": ("coffee", 50, 300),
}
SIDE = 40


def esrgan(scale: int = 4, seed: int = 0) -> torch.nn.Module:
    """A tiny RRDBNet (ESRGAN) whose output stays inside [0, 1] (so clamping hides nothing)."""
    torch.manual_seed(seed)
    network = ESRGAN(num_filters=8, num_blocks=1, scale=scale).eval()
    last = network.model[-1]
    with torch.no_grad():
        last.weight.mul_(4.0)
        last.bias.fill_(0.5)
    return network


def compact(seed: int = 1) -> torch.nn.Module:
    """A tiny Real-ESRGAN compact network (SRVGGNetCompact): nearest upsampling plus a residual."""
    torch.manual_seed(seed)
    return Compact(num_feat=8, num_conv=2, upscale=4).eval()


def forward(network: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    """The architecture's own result on a uint8 LR: [0, 1] float RGB in, clamped, 8-bit out."""
    with torch.no_grad():
        output = network((to_tensor(lr) + 1) / 2).clamp(0, 1)
    return to_array(output * 2 - 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("peers")
    found = {
        "model": save_tiny_checkpoint(folder / "tiny.safetensors"),
        "esrgan": folder / "esrgan.safetensors",
        "compact": folder / "compact.pth",
        "x2": folder / "esrgan_x2.safetensors",
        "other": folder / "other" / "esrgan.safetensors",
        "unknown": folder / "unknown.safetensors",
        "hostile": folder / "hostile.pth",
    }
    save_file(esrgan().state_dict(), found["esrgan"])
    torch.save({"params_ema": compact().state_dict()}, found["compact"])  # Real-ESRGAN's layout
    save_file(esrgan(scale=2).state_dict(), found["x2"])
    found["other"].parent.mkdir()
    save_file(esrgan(seed=7).state_dict(), found["other"])
    save_file({"encoder.weight": torch.zeros(4, 4)}, found["unknown"])
    torch.save({"conv.weight": torch.zeros(1), "payload": Payload()}, found["hostile"])
    return found


class Payload:
    """An object a weights-only load must refuse to build."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    for name, (source, top, left) in CROPS.items():
        Image.fromarray(np.ascontiguousarray(photo(source)[top : top + SIDE, left : left + SIDE])).save(folder / name)
    return folder


@pytest.fixture(autouse=True)
def no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "empty-home"))


def evaluate(files, data, out, *compare: str | Path, extra: tuple = ()) -> int:
    methods = ",".join(str(item) for item in compare)
    return cli(
        "evaluate", "--model", files["model"], "--data", data, "--device", "cpu", "--limit", "2",
        "--compare", methods, "--out", out, *extra,
    )  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_peers_are_evaluated_on_the_same_lr_as_bicubic(files, data, tmp_path, capsys):
    out = tmp_path / "out"
    code = evaluate(files, data, out, "bicubic", f"spandrel:{files['esrgan']}", f"spandrel:{files['compact']}")
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    rows = {line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")}
    assert {"bicubic", "spandrel:esrgan", "spandrel:compact"} <= rows
    assert "spandrel:esrgan: ESRGAN x4 from" in stderr
    summary = json.loads((out / "summary.json").read_text())
    peers = summary["settings"]["peers"]
    assert peers["spandrel:esrgan"]["architecture"] == "ESRGAN"
    assert peers["spandrel:compact"]["file"] == str(files["compact"].resolve())
    assert summary["compare"] == ["bicubic", "spandrel:esrgan", "spandrel:compact"]
    assert set(summary["methods"]) == {"bicubic", "spandrel:esrgan", "spandrel:compact"}
    with open(out / "per_image.csv", newline="") as handle:
        records = {(row["image"], row["method"]): row for row in csv.DictReader(handle)}
    assert len(records) == 6
    networks = {"spandrel:esrgan": esrgan(), "spandrel:compact": compact()}
    for name in ("astronaut.png", "chelsea.png"):
        lr = np.asarray(Image.open(out / "lr" / name))
        hr, expected_lr = bicubic_degrade(to_tensor(np.asarray(Image.open(data / name))), 4)
        assert np.array_equal(lr, to_array(expected_lr))  # the LR bicubic also got
        for method, network in networks.items():
            result = np.asarray(Image.open(out / method.replace(":", "_") / name))
            expected = forward(network, lr)
            assert result.shape == (SIDE, SIDE, 3)
            assert result.std() > 1.0  # a real image, not a clamped constant
            assert np.abs(result.astype(int) - expected.astype(int)).max() <= 1
            row = records[(name, method)]
            assert float(row["psnr_y"]) == pytest.approx(image_metrics(result, to_array(hr), 4)["psnr_y"])
            assert float(row["seconds"]) > 0 and row["cleaned"] == ""
    assert (out / "grid.png").is_file()


def test_a_peer_for_another_scale_is_refused_in_one_line(files, data, tmp_path, capsys):
    code = evaluate(files, data, tmp_path / "out", "bicubic", f"spandrel:{files['x2']}")
    stderr = capsys.readouterr().err
    assert code == 2
    assert error_lines(stderr)[-1].startswith("yoda-sr: error: --compare: spandrel:esrgan_x2 (ESRGAN) upscales by 2")
    assert "--scale 2" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [("unknown", "does not recognise the model in"), ("hostile", "torch.load(weights_only=True) and refuses")],
)
def test_files_spandrel_cannot_use_are_refused_in_one_line(files, data, tmp_path, capsys, key, message):
    code = evaluate(files, data, tmp_path / "out", "bicubic", f"spandrel:{files[key]}")
    stderr = capsys.readouterr().err
    assert code in (1, 2)
    assert message in error_lines(stderr)[-1] and "Traceback" not in stderr
    assert len([line for line in error_lines(stderr) if line.startswith("yoda-sr: error:")]) == 1


def test_without_spandrel_the_install_command_is_named(files, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel raises ImportError
    code = evaluate(files, data, tmp_path / "out", "bicubic", f"spandrel:{files['esrgan']}")
    stderr = capsys.readouterr().err
    assert code == 2
    assert error_lines(stderr) == [
        "yoda-sr: error: comparing with spandrel:FILE needs spandrel: pip install 'yoda-sr[peers]'"
    ]


def test_a_resume_with_another_file_of_the_same_name_is_refused(files, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate(files, data, out, "bicubic", f"spandrel:{files['esrgan']}") == 0
    written = (out / "spandrel_esrgan" / "astronaut.png").stat().st_mtime_ns
    capsys.readouterr()
    assert evaluate(files, data, out, "bicubic", f"spandrel:{files['esrgan']}") == 0
    assert "2 of 2 image(s) done already" in capsys.readouterr().err
    assert (out / "spandrel_esrgan" / "astronaut.png").stat().st_mtime_ns == written
    code = evaluate(files, data, out, "bicubic", f"spandrel:{files['other']}")
    stderr = capsys.readouterr().err
    assert code == 2
    assert "holds a different evaluation (spandrel:esrgan sha256" in error_lines(stderr)[-1]
    assert evaluate(files, data, out, "bicubic", f"spandrel:{files['esrgan']}", f"spandrel:{files['compact']}") == 0
    assert (out / "spandrel_compact" / "astronaut.png").is_file()  # a peer added is a method more


def test_two_files_of_one_name_are_refused(files, data, tmp_path, capsys):
    code = evaluate(files, data, tmp_path / "out", f"spandrel:{files['esrgan']}", f"spandrel:{files['other']}")
    assert code == 2
    assert "would both be named spandrel:esrgan" in capsys.readouterr().err


def test_large_images_run_in_tiles_that_match_the_whole_image(files):
    peer = Peer.load("spandrel:compact", files["compact"], scale=4, device=torch.device("cpu"), dtype=torch.float32)
    lr = np.ascontiguousarray(photo("chelsea")[:70, :90])
    whole = peer.upscale(lr)
    assert peer.tile_side(70, 90) is None
    peer.budget = 1  # every image is too large now: the smallest tiles
    assert peer.tile_side(70, 90) == 32
    tiled = peer.upscale(lr)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # its receptive field is inside CONTEXT
    assert np.array_equal(whole, forward(compact(), lr))
