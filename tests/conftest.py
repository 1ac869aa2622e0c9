"""Shared fixtures: tiny models with a prepared condition on a real photo crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoda_sr.imaging import resize_bicubic, to_tensor
from yoda_sr.models import create_model

torch.set_num_threads(min(2, torch.get_num_threads()))


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


def save_tiny_checkpoint(path):
    """A tiny SRDiff with fixed random weights and a small residual (outputs stay near bicubic,
    like a trained model's), saved as a yoda-sr checkpoint with YODA defaults (edge, l = 0.2)."""
    from yoda_sr import checkpoints
    from yoda_sr.models import get_config

    torch.manual_seed(0)
    model = create_model("srdiff-tiny")
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
            "schedule": get_config("srdiff-tiny").schedule.to_dict(),
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
