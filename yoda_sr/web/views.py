"""What the page shows of one upscaled image, as PNG files: the result, the input enlarged (bicubic, or
its pixels) at the result's size for the slider, the attention map and the M(t) timeline.

Nothing here is lossy: the result is shown from the written file when it is a PNG, else from the
sampled pixels; every picture is a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .library import (
    Result,
    Upscaler,
    clean,
    flat_areas,
    heatmap,
    read_picture,
    resize_bicubic,
    save_png,
    timeline,
    to_array,
    to_tensor,
)

TIMELINE_FRAMES = 6
"""Panels of M(t) in the timeline (as `yoda-sr attention --timeline 6`)."""


@dataclass(frozen=True)
class Views:
    """PNG files of one result, for the page."""

    result: Path
    bicubic: Path
    pixels: Path
    attention: Path | None
    timeline: Path | None


def _eight_bit(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)


def render(
    source: Path, output: Path, result: Result, upscaler: Upscaler, clean_mode: str, folder: Path, max_pixels: int
) -> Views:
    """Write the views of ``result`` (the upscale of ``source``, written to ``output``) into ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    height, width = result.image.shape[:2]
    rgb = read_picture(source, max_pixels=max_pixels).rgb
    lr = to_tensor(_eight_bit(rgb))
    bicubic = save_png(to_array(resize_bicubic(lr, size=(height, width))), folder / "bicubic.png")
    enlarged = Image.fromarray(_eight_bit(rgb)).resize((width, height), Image.Resampling.NEAREST)
    pixels = save_png(enlarged, folder / "lr.png")
    shown = output if output.suffix.lower() == ".png" else save_png(_eight_bit(result.image), folder / "result.png")
    attention = timeline_path = None
    if result.attention is not None:
        attention = save_png(heatmap(result.attention), folder / "attention.png")
        flat = _flat(rgb, result, upscaler, clean_mode)
        drawn = timeline(result.attention, result.lower_bound, upscaler.schedule_spec.steps, TIMELINE_FRAMES, flat)
        timeline_path = save_png(drawn, folder / "timeline.png")
    return Views(shown, bicubic, pixels, attention, timeline_path)


def _flat(rgb: np.ndarray, result: Result, upscaler: Upscaler, clean_mode: str) -> np.ndarray | None:
    """The pixels that kept the base (flat areas of the LR the sampler saw), at the map's size."""
    if not result.flat_floor:
        return None
    lr = rgb if result.cleaning.kind == "none" else clean(rgb, clean_mode)[0]
    height, width = result.attention.shape if result.attention is not None else lr.shape[:2]
    scale = upscaler.scale if height >= lr.shape[0] * upscaler.scale else 1
    flat = flat_areas(to_tensor(lr), result.flat_floor, scale)[0, 0].numpy()
    return np.asarray(flat[:height, :width], dtype=bool)
