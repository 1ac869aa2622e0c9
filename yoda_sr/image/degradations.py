"""LR degradations as users' photos have them: Gaussian noise and JPEG compression after the downscale.

Used twice: ``evaluate --degrade`` measures a model on LR that is not a clean bicubic downscale
(fixed settings, e.g. ``jpeg:60`` or ``noise:5``), and ``train`` with ``lr_noise`` / ``lr_jpeg``
draws random ones per training sample so that the model learns to handle them (docs/method.md §6).
The order is the camera's: noise on the 8-bit LR, then JPEG (Pillow, its default 4:2:0 chroma).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..errors import SettingError

JPEG_QUALITY_MAX = 95
"""The best JPEG quality training draws (the worst is ``lr_jpeg``)."""


@dataclass(frozen=True)
class Degradation:
    """Noise of standard deviation ``noise`` (8-bit levels), then JPEG at ``jpeg`` quality (None: none)."""

    noise: float = 0.0
    jpeg: int | None = None

    @property
    def is_identity(self) -> bool:
        return self.noise == 0 and self.jpeg is None

    def label(self) -> str:
        """The text ``parse`` reads back: ``none``, ``noise:5``, ``jpeg:60``, ``noise:5,jpeg:60``."""
        parts = ([f"noise:{self.noise:g}"] if self.noise else []) + ([f"jpeg:{self.jpeg}"] if self.jpeg else [])
        return ",".join(parts) or "none"

    @classmethod
    def parse(cls, text: str, setting: str = "degrade") -> Degradation:
        """``none`` or comma-separated ``noise:SIGMA`` (0..50, 8-bit levels) and ``jpeg:QUALITY`` (1..100)."""
        noise, jpeg = 0.0, None
        for part in (piece.strip().lower() for piece in text.split(",")):
            if part in ("", "none"):
                continue
            name, _, value = part.partition(":")
            try:
                if name == "noise":
                    noise = float(value)
                    if not 0 <= noise <= 50:
                        raise ValueError
                    continue
                if name == "jpeg":
                    jpeg = int(value)
                    if not 1 <= jpeg <= 100:
                        raise ValueError
                    continue
            except ValueError:
                raise SettingError(
                    setting, f"{part!r}: noise takes a sigma in 0..50 (8-bit levels), jpeg a quality in 1..100"
                ) from None
            raise SettingError(setting, f"unknown degradation {part!r}; use noise:SIGMA, jpeg:QUALITY or none")
        return cls(noise=noise, jpeg=jpeg)

    def apply(self, lr: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        """The degraded copy of an H x W x 3 uint8 image (noise drawn from ``generator``)."""
        out = lr
        if self.noise > 0:
            noisy = lr.astype(np.float32) + generator.standard_normal(lr.shape, dtype=np.float32) * self.noise
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if self.jpeg is not None:
            out = jpeg_roundtrip(out, self.jpeg)
        return out


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """An H x W x 3 uint8 image saved as JPEG at ``quality`` and decoded again."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def random_degradation(max_noise: float, min_quality: int, generator: np.random.Generator) -> Degradation:
    """A training draw: with ``max_noise`` > 0, half of the samples get noise of a sigma uniform in
    [0, max_noise]; with ``min_quality`` > 0, half (independently) get JPEG of a quality uniform in
    [min_quality, 95]."""
    noise = float(generator.uniform(0, max_noise)) if max_noise > 0 and generator.random() < 0.5 else 0.0
    jpeg = None
    if min_quality > 0 and generator.random() < 0.5:
        jpeg = int(generator.integers(min_quality, max(min_quality, JPEG_QUALITY_MAX) + 1))
    return Degradation(noise=noise, jpeg=jpeg)


__all__ = ["Degradation", "jpeg_roundtrip", "random_degradation"]
