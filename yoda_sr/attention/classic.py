"""Weight-free attention maps (docs/method.md §4): a centred Gaussian, Canny edge regions, SIFT blobs.

Each map takes an H x W x 3 float RGB image in [0, 1] (the LR image) and returns an H x W float64
map in [0, 1], min-max normalised (a constant map becomes all zeros). Sizes are relative to the
image's short side ``side`` so that a map looks the same at any resolution. The parameters were
chosen on real photos (scikit-image's astronaut, matplotlib's Grace Hopper, 4x-downscaled) so that
faces get more attention than the background:

- ``edge``: Canny on the luminance with Gaussian sigma ``max(1, side / 512)`` (one pixel at the
  usual LR sizes; larger sigmas lose the fine facial edges of a 128-pixel LR image) and hysteresis
  thresholds at the 70th and 90th percentiles of the gradient magnitude (quantiles adapt to the
  photo's contrast). The edges are dilated with a disk of radius ``0.01 * side`` and closed with a
  disk of radius ``0.02 * side`` (both at least 1 pixel) to merge nearby edges into regions, then
  blurred with sigma ``0.02 * side``. Disks use scikit-image's sequence decomposition (octagons
  close to a disk, ~8x faster at large radii). An image whose luminance spans less than one 8-bit
  level is flat and gets zeros (quantile thresholds would otherwise find edges in rounding noise).
- ``sift``: scikit-image's SIFT keypoints, detected on a copy of the image downscaled to at most
  512 pixels on the long side (SIFT's cost grows with the area: ~1 s at 512 x 512) and mapped
  back. Each keypoint adds a unit-peak Gaussian blob whose sigma is the keypoint's own scale
  (factor 1: twice that washes photos out to a near-uniform map), combined by max. Images under
  8 pixels on the short side, and images where SIFT finds no keypoint, get zeros.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage import color, morphology, transform
from skimage.feature import SIFT, canny

CANNY_QUANTILES = (0.7, 0.9)
EDGE_DILATION_RADIUS = 0.01
EDGE_CLOSING_RADIUS = 0.02
EDGE_BLUR_SIGMA = 0.02
FLAT_LUMINANCE_SPAN = 1.0 / 255.0
SIFT_MAX_SIDE = 512
SIFT_MIN_SIDE = 8
SIFT_BLOB_FACTOR = 1.0
BLOB_EXTENT = 3.0
"""Blobs are drawn out to this many sigmas from their keypoint."""


def normalise(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] as float64; a constant array becomes all zeros."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _luminance(image: np.ndarray) -> np.ndarray:
    """Greyscale luminance (Rec. 709 weights) of an H x W x 3 RGB image in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    return color.rgb2gray(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0))


def _disk(radius: int) -> tuple[tuple[np.ndarray, int], ...]:
    """A disk-like footprint as a sequence of small ones (faster than a true disk when large)."""
    return morphology.disk(radius, decomposition="sequence")


def gaussian_map(image: np.ndarray) -> np.ndarray:
    """A centred 2-D Gaussian with sigma a quarter of each side; only the image's size is used."""
    height, width = image.shape[:2]
    rows = (np.arange(height) - (height - 1) / 2) / (height / 4)
    cols = (np.arange(width) - (width - 1) / 2) / (width / 4)
    return normalise(np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2)))


def edge_map(image: np.ndarray) -> np.ndarray:
    """Canny edges of the luminance, dilated and closed into regions, then Gaussian-blurred."""
    grey = _luminance(image)
    if np.ptp(grey) < FLAT_LUMINANCE_SPAN:
        return np.zeros(grey.shape)
    side = min(grey.shape)
    low, high = CANNY_QUANTILES
    edges = canny(grey, sigma=max(1.0, side / 512), low_threshold=low, high_threshold=high, use_quantiles=True)
    dilation_radius = max(1, round(EDGE_DILATION_RADIUS * side))
    closing_radius = max(1, round(EDGE_CLOSING_RADIUS * side))
    regions = morphology.dilation(edges, _disk(dilation_radius))
    regions = morphology.closing(regions, _disk(closing_radius))
    return normalise(ndimage.gaussian_filter(regions.astype(np.float64), EDGE_BLUR_SIGMA * side))


def _sift_keypoints(grey: np.ndarray) -> np.ndarray:
    """SIFT keypoints of ``grey`` as K x 3 (row, col, sigma) in its pixel units; empty if none."""
    height, width = grey.shape
    shrink = min(1.0, SIFT_MAX_SIDE / max(height, width))
    detect_size = (max(1, round(height * shrink)), max(1, round(width * shrink)))
    if min(detect_size) < SIFT_MIN_SIDE:
        return np.empty((0, 3))
    small = grey
    if detect_size != grey.shape:
        small = transform.resize(grey, detect_size, anti_aliasing=True)
    detector = SIFT()
    try:
        detector.detect(small)
    except RuntimeError:
        # scikit-image signals "no keypoints found" (for example a flat image) with RuntimeError.
        return np.empty((0, 3))
    # Keypoints with several orientations are listed once per orientation.
    found = np.unique(np.column_stack([detector.positions, detector.sigmas]), axis=0)
    row_scale, col_scale = height / detect_size[0], width / detect_size[1]
    rows = (found[:, 0] + 0.5) * row_scale - 0.5
    cols = (found[:, 1] + 0.5) * col_scale - 0.5
    sigmas = found[:, 2] * math.sqrt(row_scale * col_scale)
    return np.column_stack([rows, cols, sigmas])


def sift_map(image: np.ndarray) -> np.ndarray:
    """Max over SIFT keypoints of a unit-peak Gaussian blob with sigma proportional to the scale."""
    grey = _luminance(image)
    height, width = grey.shape
    attention = np.zeros((height, width))
    for row, col, scale in _sift_keypoints(grey):
        sigma = SIFT_BLOB_FACTOR * scale
        reach = math.ceil(BLOB_EXTENT * sigma)
        top, bottom = max(0, math.floor(row) - reach), min(height, math.ceil(row) + reach + 1)
        left, right = max(0, math.floor(col) - reach), min(width, math.ceil(col) + reach + 1)
        if top >= bottom or left >= right:
            continue
        dy = (np.arange(top, bottom) - row)[:, None]
        dx = (np.arange(left, right) - col)[None, :]
        blob = np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2))
        window = attention[top:bottom, left:right]
        np.maximum(window, blob, out=window)
    return normalise(attention)
