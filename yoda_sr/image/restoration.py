"""Cleaning the LR before it is upscaled: JPEG deblocking and denoising, found automatically.

Photos reach a super-resolver JPEG-compressed or noisy; a model trained on clean downscales sharpens
8 x 8 blocks and sensor noise as if they were detail (docs/method.md §12). ``clean`` looks at the LR
and, when it finds either, removes it before the model sees it:

- **JPEG.** A JPEG-decoded image's 8 x 8 block DCT coefficients of luma sit on the lattice of the
  quantization table. ``find_jpeg`` scores each IJG quality (the libjpeg/Pillow tables) by how
  close the non-zero low-frequency coefficients lie to that lattice; a clean image scores about 0, a
  JPEG at its true quality 0.3-1. ``deblock`` smooths the image (non-local means, strength set by
  the quality's quantization step) and projects its luma back into the quantization cells the JPEG
  left, so that the smoothing removes blocks and ringing but nothing the JPEG had kept.
- **Noise.** ``noise_sigma`` estimates the standard deviation of per-channel white noise from the
  colour differences R - G and B - G (texture and edges are mostly shared by the channels and
  cancel there; independent noise does not), with a robust (median) Laplacian-residual estimate.
  ``denoise`` is non-local means at that sigma.

Everything works in 8-bit levels; 16-bit images are cleaned at 8-bit precision of the estimate and
full precision of the result. Memory stays bounded whatever the image's size: the estimates read at
most ``SAMPLE_PIXELS`` pixels (windows spread over a larger image, on its 8 x 8 grid), and the
cleaning runs in tiles of ``TILE`` pixels with a halo wider than non-local means reaches, so a tiled
result is the whole-image one (up to float rounding) and the only full-size array is the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("auto", "off")
"""``Settings.clean``: auto (clean what is found) or off."""

NOISE_THRESHOLD = 2.0
"""Denoise from this estimated sigma (8-bit levels); clean photos measure 0-1.4."""

MIN_NOISE_SIDE = 32
"""The smallest side on which noise is estimated (and so removed)."""

JPEG_THRESHOLD = 0.2
"""A lattice score from which the LR counts as JPEG-decoded; clean photos score below 0.05."""

JPEG_SIGNIFICANCE = 7.0
"""...and the score must stand this many standard deviations above what values off any lattice give
(small or synthetic images leave few coefficients, and a few can fit a coarse lattice by chance)."""

SAMPLE_PIXELS = 2048 * 2048
"""The estimates read at most this many pixels: larger images are sampled in ``_SAMPLE_SIDE`` windows."""

TILE = 512
"""Side of the tiles the cleaning works in (a multiple of 8: tile edges lie on the JPEG block grid)."""

_HALO = 16
"""Context around each tile: non-local means here (5 x 5 patches, 6 px search) reaches 8 px."""

_SAMPLE_SIDE = 512
_MIN_BLOCKS = 16
_LOW_FREQUENCIES = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (2, 2), (0, 3), (3, 0))
_LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)
"""The JPEG standard's (Annex K) luminance quantization table: quality 50 in the IJG scaling."""

_LAPLACIAN = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
"""Immerkaer's noise-estimation kernel: a plane passes through as 0; its L2 norm is 6."""


@dataclass(frozen=True)
class Cleaning:
    """What ``clean`` did to one image."""

    kind: str = "none"
    """none, jpeg or noise."""
    level: float = 0.0
    """The JPEG quality found, or the noise sigma (8-bit levels)."""

    def describe(self) -> str:
        if self.kind == "jpeg":
            return f"JPEG q{self.level:.0f} deblocked"
        if self.kind == "noise":
            return f"noise sigma {self.level:.1f} removed"
        return "none"


def validate_mode(mode: str) -> str:
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise ValueError(f"must be {' or '.join(MODES)}, got {mode!r}")
    return mode


def quantization_table(quality: int) -> np.ndarray:
    """The IJG luminance table at ``quality`` (1-100), as libjpeg and Pillow scale it."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_LUMA_TABLE * scale + 50) / 100), 1, 255)


def _windows(shape: tuple[int, ...]) -> list[tuple[slice, slice]]:
    """Where the estimates look: the whole image up to ``SAMPLE_PIXELS``, else a grid of
    ``_SAMPLE_SIDE`` windows spread evenly over it, starting on multiples of 8 (so a JPEG's block
    grid has the same origin in every window as in the image)."""
    height, width = shape[:2]
    if height * width <= SAMPLE_PIXELS:
        return [(slice(0, height), slice(0, width))]
    side = _SAMPLE_SIDE
    per_axis = max(1, int(np.sqrt(SAMPLE_PIXELS / side**2)))

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = min(per_axis, length // side)
        return sorted({int(round(i * (length - side) / max(1, count - 1) / 8)) * 8 for i in range(count)})

    def cut(start: int, length: int) -> slice:
        return slice(start, min(start + side, length))

    return [(cut(top, height), cut(left, width)) for top in starts(height) for left in starts(width)]


def _levels(image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """A window of ``image`` as float64 in 8-bit levels (16-bit images divided by 257)."""
    window = np.asarray(image[rows, cols], dtype=np.float64)
    return window / 257.0 if image.dtype == np.uint16 else window


def _luma(rgb: np.ndarray) -> np.ndarray:
    """JFIF's Y (full range, 8-bit levels) of a float H x W x 3 image in 8-bit levels."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def _ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return _luma(rgb), cb, cr


def _rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    return np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)


def _dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II as a matrix D (JPEG's 2-D DCT of a block B is D B D^T)."""
    k, n = np.arange(8)[:, None], np.arange(8)[None, :]
    matrix = np.sqrt(2 / 8) * np.cos(np.pi * (2 * n + 1) * k / 16)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix()


def _block_dct(y: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The 8 x 8 block DCT (JPEG's, orthonormal) of the whole blocks of ``y`` whose grid starts at
    ``origin`` (row, column): (rows, cols, 8, 8)."""
    y = y[origin[0] :, origin[1] :]
    rows, cols = y.shape[0] // 8, y.shape[1] // 8
    blocks = (y[: rows * 8, : cols * 8] - 128).reshape(rows, 8, cols, 8).transpose(0, 2, 1, 3)
    return _DCT @ blocks @ _DCT.T


def _block_idct(coefficients: np.ndarray, into: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``into`` with the blocks ``_block_dct`` read replaced by the inverse of ``coefficients``."""
    rows, cols = coefficients.shape[:2]
    out = into.copy()
    pixels = (_DCT.T @ coefficients @ _DCT).transpose(0, 2, 1, 3).reshape(rows * 8, cols * 8)
    out[origin[0] : origin[0] + rows * 8, origin[1] : origin[1] + cols * 8] = pixels + 128
    return out


def _grid_origin(lumas: list[np.ndarray]) -> tuple[int, int]:
    """Where an 8 x 8 block grid most likely starts: the phase whose block boundaries hold the
    largest mean step between neighbouring pixels (a JPEG cropped off its grid starts elsewhere).
    ``lumas``: windows of the image that start on multiples of 8."""
    origin = []
    for axis in (0, 1):
        profiles = [np.abs(np.diff(y, axis=axis)).mean(axis=1 - axis) for y in lumas]  # [i]: between i and i + 1
        if min(steps.size for steps in profiles) < 16:
            return 0, 0
        energy = [np.mean([steps[(phase - 1) % 8 :: 8].mean() for steps in profiles]) for phase in range(8)]
        origin.append(int(np.argmax(energy)))
    return origin[0], origin[1]


def _lattice_fit(coefficients: np.ndarray) -> tuple[int | None, float, float]:
    """The IJG quality whose luma lattice ``coefficients`` (blocks, 8, 8) fit most significantly,
    the fit (mean cosine, -1..1) and its significance (in standard deviations of the fit of values
    off any lattice: each cosine then has mean 0 and variance 1/2).

    Choosing by significance rather than by the fit alone keeps a coarse table that leaves a handful
    of lucky coefficients from beating the true one. Neighbouring qualities can share every
    low-frequency step and so tie: the middle one of the tied run is returned."""
    scores: dict[int, tuple[float, float]] = {}
    for quality in range(5, 100):
        table = quantization_table(quality)
        fits = []
        for u, v in _LOW_FREQUENCIES:
            step = table[u, v]
            values = coefficients[:, u, v]
            values = values[np.abs(values) > step / 2]
            if step >= 2:
                fits.append(np.cos(2 * np.pi * values / step))
        cosines = np.concatenate(fits) if fits else np.zeros(0)
        if cosines.size:
            fit = float(cosines.mean())
            scores[quality] = (fit, fit * np.sqrt(2 * cosines.size))
    if not scores:
        return None, 0.0, 0.0
    top = max(significance for _, significance in scores.values())
    tied = [quality for quality, (_, significance) in scores.items() if significance >= top - 1e-9]
    quality = tied[len(tied) // 2]
    return quality, *scores[quality]


def find_jpeg(rgb: np.ndarray) -> tuple[int | None, float, float, tuple[int, int]]:
    """The IJG quality whose luma lattice the image's block DCT fits most significantly, the fit
    (-1..1), its significance (``_lattice_fit``) and the block grid's origin (row, column).

    Only coefficients that quantized to a non-zero value are scored (zeros fit every lattice). The
    grid is tried at the image's origin and where the block boundaries stand out. Images with fewer
    than 16 whole blocks give (None, 0.0, 0.0, (0, 0)). ``is_jpeg`` says whether it counts. A float
    image is in 8-bit levels; a large one is read in windows (``_windows``).
    """
    lumas = [_luma(_levels(rgb, rows, cols)) for rows, cols in _windows(rgb.shape)]
    best: tuple[int | None, float, float, tuple[int, int]] = (None, 0.0, 0.0, (0, 0))
    for origin in dict.fromkeys([(0, 0), _grid_origin(lumas)]):
        coefficients = np.concatenate([_block_dct(y, origin).reshape(-1, 8, 8) for y in lumas])
        count = coefficients.shape[0]
        if count < _MIN_BLOCKS:
            continue
        quality, fit, significance = _lattice_fit(coefficients[:: max(1, count // 20000)])
        if significance > best[2]:
            best = (quality, fit, significance, origin)
    return best


def is_jpeg(fit: float, significance: float) -> bool:
    """Whether ``find_jpeg``'s fit and significance make the image JPEG-decoded."""
    return fit >= JPEG_THRESHOLD and significance >= JPEG_SIGNIFICANCE


def noise_sigma(rgb: np.ndarray) -> float:
    """Estimated sigma (8-bit levels) of independent per-channel noise; 0 for images under
    ``MIN_NOISE_SIDE`` pixels a side, too few for a confident median (clean 16 x 16 face crops
    measured 2.2-2.5, above ``NOISE_THRESHOLD``). A large image is read in windows (``_windows``)."""
    if min(rgb.shape[:2]) < MIN_NOISE_SIDE:
        return 0.0
    responses: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for rows, cols in _windows(rgb.shape):
        x = _levels(rgb, rows, cols)
        for found, other in zip(responses, (0, 2), strict=True):
            difference = x[..., other] - x[..., 1]
            height, width = difference.shape
            response = sum(
                _LAPLACIAN[i, j] * difference[i : height - 2 + i, j : width - 2 + j] for i in range(3) for j in range(3)
            )
            found.append(np.abs(response).ravel())
    estimates = [np.median(np.concatenate(found)) / 0.6745 / 6 / np.sqrt(2) for found in responses]
    return float(min(estimates))


def _non_local_means(rgb: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    out = denoise_nl_means(
        rgb / 255, h=strength / 255, sigma=sigma / 255, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1
    )
    return np.asarray(out) * 255


def denoise(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means for white noise of ``sigma`` (float image in 8-bit levels)."""
    return _non_local_means(rgb, 0.8 * sigma, sigma)


def deblock(rgb: np.ndarray, quality: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Remove JPEG blocking and ringing from a float image (8-bit levels) decoded at ``quality``
    with its block grid at ``origin`` (row, column)."""
    return _project(_non_local_means(rgb, 1.3 * quantization_table(quality)[0, 1], 0.0), rgb, quality, origin)


def _project(smooth: np.ndarray, observed: np.ndarray, quality: int, origin: tuple[int, int]) -> np.ndarray:
    """``smooth`` with its luma's whole blocks (grid at ``origin``) moved into the quantization cells
    that ``observed``'s luma fell in at ``quality``: nothing the JPEG kept is smoothed away."""
    table = quantization_table(quality)
    cells = np.round(_block_dct(_luma(observed), origin) / table)
    low, high = (cells - 0.5) * table, (cells + 0.5) * table
    y_smooth, cb, cr = _ycc(smooth)
    y_consistent = _block_idct(np.clip(_block_dct(y_smooth, origin), low, high), y_smooth, origin)
    return _rgb(y_consistent, cb, cr)


def _cuts(length: int, origin: int) -> list[tuple[int, int]]:
    """Tile spans along one axis: inner edges at ``origin + k * TILE`` (on the block grid), the
    first from 0 and the last to ``length``."""
    edges = [0, *range(origin + TILE, length, TILE), length]
    return [(start, stop) for start, stop in zip(edges, edges[1:], strict=False) if stop > start]


def _clean_tiled(image: np.ndarray, done: Cleaning, origin: tuple[int, int], sigma: float) -> np.ndarray:
    """``image`` cleaned as ``done`` says (noise: of ``sigma``), tile by tile into a new array of its dtype."""
    unit = 257.0 if image.dtype == np.uint16 else 1.0
    top = float(np.iinfo(image.dtype).max)
    height, width = image.shape[:2]
    out = np.empty_like(image)
    for row0, row1 in _cuts(height, origin[0]):
        for col0, col1 in _cuts(width, origin[1]):
            rows = slice(max(0, row0 - _HALO), min(height, row1 + _HALO))
            cols = slice(max(0, col0 - _HALO), min(width, col1 + _HALO))
            core = (slice(row0 - rows.start, row1 - rows.start), slice(col0 - cols.start, col1 - cols.start))
            window = _levels(image, rows, cols)
            if done.kind == "jpeg":
                quality = int(done.level)
                smooth = _non_local_means(window, 1.3 * quantization_table(quality)[0, 1], 0.0)[core]
                local = ((origin[0] - row0) % 8, (origin[1] - col0) % 8)
                cleaned = _project(smooth, window[core], quality, local)
            else:
                cleaned = denoise(window, sigma)[core]
            out[row0:row1, col0:col1] = np.clip(np.rint(cleaned * unit), 0, top).astype(image.dtype)
    return out


def clean(image: np.ndarray, mode: str = "auto") -> tuple[np.ndarray, Cleaning]:
    """``image`` (H x W x 3, uint8 or uint16) with JPEG artefacts or noise removed, and what was done.

    ``mode`` off, or an image where neither is found, returns ``image`` itself. Memory beyond the
    result stays bounded: the estimates sample a large image, the cleaning runs in tiles.
    """
    if validate_mode(mode) == "off" or image.ndim != 3 or image.shape[-1] != 3:
        return image, Cleaning()
    quality, fit, significance, origin = find_jpeg(image)
    sigma = 0.0
    if quality is not None and is_jpeg(fit, significance):
        done = Cleaning("jpeg", float(quality))
    else:
        sigma = noise_sigma(image)
        if sigma < NOISE_THRESHOLD:
            return image, Cleaning()
        done = Cleaning("noise", round(sigma, 2))
    return _clean_tiled(image, done, origin, sigma), done


__all__ = [
    "JPEG_SIGNIFICANCE",
    "JPEG_THRESHOLD",
    "MODES",
    "NOISE_THRESHOLD",
    "Cleaning",
    "clean",
    "deblock",
    "denoise",
    "find_jpeg",
    "is_jpeg",
    "noise_sigma",
    "quantization_table",
    "validate_mode",
]
