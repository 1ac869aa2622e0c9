"""``--compile``: the denoiser through ``torch.compile``, for long jobs (folders of photos).

Compiling fuses the denoiser's element-wise work into generated C++ (CPU) or Triton (CUDA) kernels.
It costs about a minute per tile shape on a 2-core CPU the first time and a few seconds when
Inductor's cache (``$YODA_SR_HOME/cache/torchinductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set)
already holds the graph, so it pays off only over many denoiser calls of one shape. Shapes are
static (``dynamic=False``): every tile of an image has one shape (``tiling.plan_tiles``), and with
compilation on, images larger than a tile are cut into tiles of the full side, so every such image
reuses one graph; each other image size compiles once per process (then the cache serves it).

Compilation fails soft: if it cannot run (no C++ compiler, an unsupported platform, a graph Inductor
cannot handle), one line says so and the denoiser runs uncompiled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..checkpoints.paths import home
from ..models.base import Condition, SRDenoiser

BACKEND = "inductor"
"""torch.compile's backend (tests substitute cheaper ones)."""
QUIET_LOGGERS = ("torch._dynamo", "torch._inductor", "torch.utils.cpp_extension", "torch.fx")
"""Loggers silenced while compiling: their warnings (e.g. "No CUDA runtime is found") are not ours."""


def cache_folder() -> str:
    """Where Inductor keeps compiled kernels between runs."""

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(home() / "cache" / "torchinductor")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class CompiledDenoiser:
    """A denoiser call (``tiling.Denoise``) through ``torch.compile``, uncompiled after a failure.

    ``backend`` is torch.compile's (default ``BACKEND``). ``on_failure`` receives the one line that
    says compilation is off (default: a ``UserWarning``). Under autograd (training) the compiled
    graph runs forward and backward.
    """

    def __init__(
        self,
        model: SRDenoiser,
        *,
        backend: str | Callable | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.on_failure = on_failure or (lambda message: warnings.warn(message, stacklevel=3))
        self.failed: str | None = None
        self.shapes: set[tuple[int, ...]] = set()
        """Input shapes compiled so far (one graph each)."""
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_folder())
        self._compiled = torch.compile(model, dynamic=False, backend=backend or BACKEND)

    def __call__(self, z: Tensor, cond: Condition, t: Tensor, level: Tensor) -> Tensor:
        if self.failed is None:
            try:
                with _quiet():
                    eps = self._compiled(z, cond, t, level)
                self.shapes.add(tuple(z.shape))
                return eps
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                self.failed = f"{type(error).__name__}: {first}"[:300]
                self.on_failure(f"the denoiser could not be compiled ({self.failed}); running it uncompiled")
        return self.model(z, cond, t, level)
