"""The condition x_up of imported models is built exactly as each upstream built its training data.

``tests/data/upstream_x_up.npz`` was computed with the upstream recipes themselves, run outside
this repository on real photo crops (scikit-image's astronaut, where saturated edges overshoot):

- Janspiry/Image-Super-Resolution-via-Iterative-Refinement @ 01d27a7: ``data/prepare_data.py``'s
  ``resize_and_convert(lr_img, r_resolution, Image.BICUBIC)`` (torchvision resize + center crop of a
  PIL image), then ``LRHR_dataset``'s ``ToTensor()`` and ``* 2 - 1``: ``sr3_lr`` (8 x 8) -> ``sr3_x_up``
  (64 x 64, 8x).
- LeiaLi/SRDiff @ 5628508: ``utils/dataset.py``'s ``imresize(img_lr / 256, sr_scale)`` (its
  ``utils/matlab_resize.py``) and ``to_tensor_norm(x).float()``: ``srdiff4_lr`` (6 x 8, 4x) and
  ``srdiff8_lr`` (4 x 6, 8x) -> ``srdiff4_x_up``, ``srdiff8_x_up``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from yoda_sr.image.conditioning import upscale_condition, x_up_recipe
from yoda_sr.image.imaging import resize_bicubic, to_tensor

REFERENCE = np.load(Path(__file__).parent / "data" / "upstream_x_up.npz")
CASES = [("sr3", 8, "pil-uint8"), ("srdiff4", 4, "matlab-lr256"), ("srdiff8", 8, "matlab-lr256")]


@pytest.mark.parametrize(("case", "scale", "recipe"), CASES)
def test_upstream_conditions_are_reproduced_bit_for_bit(case, scale, recipe):
    lr = to_tensor(REFERENCE[f"{case}_lr"])
    expected = torch.from_numpy(REFERENCE[f"{case}_x_up"])[None]
    size = (lr.shape[-2] * scale, lr.shape[-1] * scale)
    x_up = upscale_condition(lr, size, recipe)
    assert x_up.dtype == torch.float32 and x_up.shape == expected.shape
    assert torch.equal(x_up, expected)
    # the project's own bicubic (clipped after each pass, Pillow's borders) is not what they trained on
    assert (resize_bicubic(lr, size=size) - expected).abs().max() > (0.09 if recipe == "matlab-lr256" else 0.005)


def test_srdiff_recipe_is_unclipped_and_darker_by_255_over_256():
    lr = to_tensor(REFERENCE["srdiff4_lr"])
    x_up = upscale_condition(lr, (24, 32), "matlab-lr256")
    assert x_up.max() > 1.05 and x_up.min() < -1.03  # overshoot kept, as upstream keeps it
    flat = torch.full((1, 3, 3, 3), 1.0)  # white: 255 / 256 * 2 - 1
    assert torch.allclose(upscale_condition(flat, (12, 12), "matlab-lr256"), torch.tensor(254 / 256))


def test_sixteen_bit_lr_on_eight_bit_levels_gives_the_eight_bit_condition():
    lr8 = REFERENCE["srdiff4_lr"]
    lr16 = lr8.astype(np.uint16) * 257
    for recipe in ("matlab-lr256", "pil-uint8"):
        assert torch.equal(
            upscale_condition(to_tensor(lr16), (24, 32), recipe), upscale_condition(to_tensor(lr8), (24, 32), recipe)
        )
    # off the 8-bit levels the SRDiff recipe is the same linear map, unrounded
    lr = to_tensor(np.clip(lr16.astype(np.int64) + 100, 0, 65535).astype(np.uint16))
    x_up = upscale_condition(lr, (24, 32), "matlab-lr256")
    assert (x_up - upscale_condition(to_tensor(lr8), (24, 32), "matlab-lr256")).abs().max() < 0.01


def test_recipe_names():
    assert x_up_recipe({}) == "bicubic"
    assert x_up_recipe({"x_up": "pil-uint8"}) == "pil-uint8"
    with pytest.raises(ValueError, match="unknown x_up recipe"):
        x_up_recipe({"x_up": "lanczos"})
    lr = torch.zeros(1, 3, 4, 4)
    assert torch.equal(upscale_condition(lr, (16, 16)), resize_bicubic(lr, size=(16, 16)))
    with pytest.raises(ValueError, match="shrinks"):
        upscale_condition(lr, (2, 2), "matlab-lr256")
