"""Image quality metrics as the super-resolution literature reports them: PSNR, SSIM and LPIPS.

PSNR and SSIM are scikit-image's, computed in float64 on 0..255 values, on the BT.601 luma channel
(Y in [16, 235], as MATLAB's ``rgb2ycbcr``) and on RGB, after cropping ``scale`` pixels from every
border. SSIM uses the conventions SR papers use: ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``, i.e. an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, population (co)variances, mirrored borders, and the mean of the SSIM map without its outer
5 pixels. LPIPS v0.1 (VGG16 or AlexNet, ``models.lpips``) reads its weights from the named
checkpoints ``lpips-vgg`` and ``lpips-alex`` (``yoda-sr checkpoints download``); nothing is
downloaded here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..checkpoints import is_installed, load_lpips
from ..errors import YodaError
from ..image.imaging import rgb_to_y, to_tensor

if TYPE_CHECKING:
    import torch

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
"""Half-width of the SSIM window: 11 x 11 for sigma 1.5 (scikit-image truncates at 3.5 sigma)."""


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays of one H x W or H x W x C shape."""
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"images differ in shape: {first.shape} and {second.shape}")
    if first.ndim not in (2, 3) or first.size == 0:
        raise ValueError(f"expected non-empty H x W or H x W x C images, got shape {first.shape}")
    return first, second


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels (and channels); identical images give ``inf``."""
    from skimage.metrics import peak_signal_noise_ratio

    first, second = _pair(a, b)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(first, second, data_range=data_range))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity of two H x W images, or the mean over channels of H x W x C images.

    Both sides must be at least 11 pixels (the window).
    """
    from skimage.metrics import structural_similarity

    first, second = _pair(a, b)
    window_side = 2 * SSIM_RADIUS + 1
    if min(first.shape[:2]) < window_side:
        raise ValueError(f"SSIM needs images of at least {window_side} x {window_side} pixels, got {first.shape[:2]}")
    return float(
        structural_similarity(
            first,
            second,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
            data_range=data_range,
            channel_axis=None if first.ndim == 2 else 2,
        )
    )


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] (float64, H x W) of H x W x 3 RGB, as ``imaging.rgb_to_y``.

    uint8 and uint16 images use their full range; float images are taken to lie in [0, 1]. The result
    is not rounded (MATLAB's ``rgb2ycbcr`` of uint8 would round it).
    """
    import torch

    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {array.shape}")
    if array.dtype in (np.uint8, np.uint16):
        unit = array.astype(np.float64) / float(np.iinfo(array.dtype).max)
    elif np.issubdtype(array.dtype, np.floating):
        unit = array.astype(np.float64)
    else:
        raise TypeError(f"images must be uint8, uint16 or float in [0, 1], got {array.dtype}")
    channels_first = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))
    return rgb_to_y(channels_first)[0].numpy()


def crop_border(x: np.ndarray, border: int) -> np.ndarray:
    """``x`` without ``border`` pixels on each of its four sides (the first two axes)."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if 2 * border >= min(x.shape[0], x.shape[1]):
        raise ValueError(
            f"cropping {border} pixels from each side of a {x.shape[0]} x {x.shape[1]} image leaves nothing"
        )
    return x[border : x.shape[0] - border, border : x.shape[1] - border]


def image_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    """PSNR and SSIM of a uint8 H x W x 3 result against its uint8 ground truth, border ``scale`` cropped.

    Returns psnr_y and ssim_y (on luma) and psnr_rgb and ssim_rgb (SSIM averaged over R, G, B).
    SSIM is NaN when the cropped images are smaller than its 11 x 11 window (small training crops).
    """
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise TypeError(f"image_metrics takes uint8 images, got {sr.dtype} and {hr.dtype}")
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {sr.shape} and {hr.shape}")
    sr_y, hr_y = crop_border(y_channel(sr), scale), crop_border(y_channel(hr), scale)
    sr_rgb = crop_border(sr.astype(np.float64), scale)
    hr_rgb = crop_border(hr.astype(np.float64), scale)
    fits = min(sr_y.shape) >= 2 * SSIM_RADIUS + 1
    return {
        "psnr_y": psnr(sr_y, hr_y),
        "ssim_y": ssim(sr_y, hr_y) if fits else math.nan,
        "psnr_rgb": psnr(sr_rgb, hr_rgb),
        "ssim_rgb": ssim(sr_rgb, hr_rgb) if fits else math.nan,
    }


LPIPS_NETS = ("vgg", "alex")
"""LPIPS v0.1 backbones, each a named checkpoint ``lpips-<net>`` (docs/method.md §9)."""


def lpips_checkpoint(net: str) -> str:
    """The checkpoint name of an LPIPS backbone: ``lpips-vgg``, ``lpips-alex``."""
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS backbone must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
    return f"lpips-{net}"


def lpips_available(net: str) -> bool:
    """Whether LPIPS-``net``'s weights are installed (nothing is downloaded here)."""

    return is_installed(lpips_checkpoint(net))


def lpips_missing_note(nets: list[str] | tuple[str, ...]) -> str:
    """One line saying which LPIPS variants are not computed and the command that installs them."""
    label = "LPIPS" if set(nets) == set(LPIPS_NETS) else "/".join(f"LPIPS-{_LABELS[net]}" for net in nets)
    names = " ".join(lpips_checkpoint(net) for net in nets)
    return f"{label} not computed: its weights are not installed; run `yoda-sr checkpoints download {names}`"


_LABELS = {"vgg": "VGG", "alex": "Alex"}


class Lpips:
    """LPIPS v0.1 distance between uint8 RGB images (lower is closer, 0 for identical images), with
    the ``vgg`` or ``alex`` backbone; weights from the named checkpoint (or ``weights``, a file)."""

    def __init__(
        self, net: str = "alex", device: str | torch.device = "cpu", weights: str | Path | None = None
    ) -> None:
        import torch

        self.network = load_lpips(weights or lpips_checkpoint(net), device=device)
        if self.network.net != net:
            raise YodaError(f"{weights} holds LPIPS-{self.network.net} weights, not LPIPS-{net}")
        self.net = net
        self.device = torch.device(device)

    @property
    def min_side(self) -> int:
        """Images with a side below this have no distance (NaN): a backbone tap would be empty."""
        return self.network.backbone.min_side

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS between two H x W x 3 uint8 images of one shape; NaN when a side is below ``min_side``."""
        return self.distances(b, [a])[0]

    def distances(self, reference: np.ndarray, images: list[np.ndarray]) -> list[float]:
        """LPIPS of each image to ``reference`` (H x W x 3 uint8, one shape), its features computed once."""
        import torch

        for image in images:
            if image.shape != reference.shape:
                raise ValueError(f"images differ in shape: {image.shape} and {reference.shape}")
        if reference.ndim != 3 or reference.shape[2] != 3:
            raise ValueError(f"expected H x W x 3 RGB images, got shape {reference.shape}")
        if min(reference.shape[:2]) < self.min_side:
            return [math.nan] * len(images)
        with torch.inference_mode():
            known = self.network.embed(to_tensor(reference).to(self.device))
            return [
                float(self.network.compare(self.network.embed(to_tensor(image).to(self.device)), known).item())
                for image in images
            ]


def load_lpips_models(device: str | torch.device = "cpu") -> tuple[dict[str, Lpips], str | None]:
    """LPIPS of each backbone whose weights are installed, and one line about the others (None when
    every backbone loaded)."""

    models: dict[str, Lpips] = {}
    missing = [net for net in LPIPS_NETS if not lpips_available(net)]
    notes = [lpips_missing_note(missing)] if missing else []
    for net in LPIPS_NETS:
        if net in missing:
            continue
        try:
            models[net] = Lpips(net, device)
        except YodaError as error:
            notes.append(f"LPIPS-{_LABELS[net]} not computed: {error}")
    return models, "; ".join(notes) or None
