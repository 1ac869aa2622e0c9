"""Process settings of the CPU fast path: an allocator that reuses freed memory instead of faulting
fresh pages in for every tensor.

The setting is process-wide, so the library never applies it on its own: the `yoda-sr` command line
calls ``tune_process`` first thing, and a program using the library may call it too. It never
overrides a choice the user made in the environment. Measured effects are in the README's
performance section (``bench/cpu.py``).

- **Threads** are left as PyTorch sets them (one per core, OpenMP's default wait policy).
  ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once at a barrier instead of spinning) was measured
  with ``bench/cpu.py`` on the 2-core CPU beside a one-thread training job: 1.39x the plain path's
  time per denoiser call and 1.52x per upscale of the sample photo, so it is not applied. The other
  side: with more busy threads than cores (two two-thread jobs on two cores), spinning threads
  starve each other, and a test run that takes 6 minutes alone took 32 in that state. On a machine
  shared with other busy processes, set ``OMP_WAIT_POLICY=PASSIVE`` or ``OMP_NUM_THREADS=1``.
- **Allocator.** glibc serves blocks above its mmap threshold (128 KiB, growing to at most 32 MiB)
  with fresh mappings and returns freed heap memory above 128 KiB to the system, so a denoiser call
  that allocates and frees hundreds of MiB of feature maps faults every page in again (on a 512 px
  tile of the default model: 470 000 minor faults, a quarter of the call's CPU time).
  ``mallopt`` raises the mmap threshold and the trim threshold so freed feature maps are reused.
  The cost: memory freed after a large image stays with the process until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import MutableMapping

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameters (malloc.h)."""
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20
"""Blocks up to 1 GiB come from the reusable heap; up to 1 GiB of free heap is kept; the heap grows
64 MiB at a time."""
ALLOCATOR_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)
"""Environment variables by which a user chooses allocator behaviour (or another allocator, e.g.
jemalloc through LD_PRELOAD); when any is set, ``tune_allocator`` leaves the allocator alone."""
_allocator_tuned = False


def tune_allocator(environ: MutableMapping[str, str] | None = None) -> bool:
    """Keep freed memory for reuse (glibc ``mallopt``); False where it does not apply.

    Not applied when the user set any of ``ALLOCATOR_VARIABLES``, off Linux, or without glibc.
    Idempotent.
    """
    global _allocator_tuned
    environ = os.environ if environ is None else environ
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux") or any(environ.get(name) for name in ALLOCATOR_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mallopt(M_TOP_PAD, TOP_PAD)
    _allocator_tuned = True
    return True


def tune_process(environ: MutableMapping[str, str] | None = None) -> dict[str, bool]:
    """The process settings of the fast path; what took effect. The CLI's first step."""
    return {"allocator": tune_allocator(environ)}
