"""Image quality metrics as the super-resolution literature reports them: PSNR, SSIM and LPIPS.

PSNR and SSIM are scikit-image's, computed in float64 on 0..255 values, on the BT.601 luma channel
(Y in [16, 235], as MATLAB's ``rgb2ycbcr``) and on RGB, after cropping ``scale`` pixels from every
border. SSIM uses the conventions SR papers use: ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``, i.e. an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, population (co)variances, mirrored borders, and the mean of the SSIM map without its outer
5 pixels. LPIPS (AlexNet, v0.1) needs the optional ``lpips`` package and torchvision's AlexNet
weights; it is never downloaded here.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

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

    from .imaging import rgb_to_y

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


def alexnet_weights_file() -> Path:
    """Where torchvision keeps AlexNet's ImageNet weights (LPIPS's backbone): the torch hub cache."""
    import torch
    from torchvision.models import AlexNet_Weights

    name = Path(urlparse(AlexNet_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def lpips_available() -> tuple[bool, str]:
    """(whether LPIPS can be computed offline, a one-line note saying so or why not)."""
    if importlib.util.find_spec("lpips") is None:
        return False, "LPIPS not computed: the lpips package is not installed (pip install lpips)"
    weights = alexnet_weights_file()
    if not weights.is_file():
        return False, (
            f"LPIPS not computed: the AlexNet backbone weights are not in the torch hub cache ({weights}); "
            "download them once with network, e.g. python -c \"import lpips; lpips.LPIPS(net='alex')\""
        )
    return True, "LPIPS: AlexNet, v0.1 (lpips package)"


class Lpips:
    """LPIPS distance (AlexNet, v0.1) between uint8 RGB images; lower is closer, 0 for identical images."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        import torch

        from .errors import YodaError

        available, reason = lpips_available()
        if not available:
            raise YodaError(reason)
        try:
            import lpips

            self.model = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval().to(device)
        except (ImportError, OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            raise YodaError(f"LPIPS not computed: the lpips package failed to load ({reason})") from None
        self.device = torch.device(device)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS between two H x W x 3 uint8 images of one shape."""
        import torch

        from .imaging import to_tensor

        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
        with torch.inference_mode():
            distance = self.model(to_tensor(a).to(self.device), to_tensor(b).to(self.device))
        return float(distance.item())
