"""Every yoda-sr internal the page uses, imported in this one module (the rest of ``web`` imports
from here and from ``errors``), so that moving library modules touches one file of the page."""

from __future__ import annotations

from ..api import DEFAULT_MODEL, Result, Settings, Upscaler
from ..attention import METHODS, WEIGHTED_METHODS, MissingWeightsError, require_weights
from ..attention.render import heatmap, timeline
from ..checkpoints import installed_names, installed_path, is_installed, load_registry, resolve_model_file
from ..diffusion.masking import flat_areas
from ..image.imaging import resize_bicubic, to_array, to_tensor
from ..image.io import DEFAULT_MAX_PIXELS, read_picture, save_png
from ..image.restoration import clean
from ..jobs.batch import error_message
from ..jobs.files import FoundImages
from ..jobs.upscaling import RUN_LOG, Job, Upscaled, UpscaleJobs, default_suffix, models_for_scale, plan_jobs
from ..settings import output_format, parse_block, parse_sparse, parse_tile
from ..weights_file import read_metadata

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "METHODS",
    "RUN_LOG",
    "WEIGHTED_METHODS",
    "FoundImages",
    "Job",
    "MissingWeightsError",
    "Result",
    "Settings",
    "UpscaleJobs",
    "Upscaled",
    "Upscaler",
    "clean",
    "default_suffix",
    "error_message",
    "flat_areas",
    "heatmap",
    "installed_names",
    "installed_path",
    "is_installed",
    "load_registry",
    "models_for_scale",
    "output_format",
    "parse_block",
    "parse_sparse",
    "parse_tile",
    "plan_jobs",
    "read_metadata",
    "read_picture",
    "require_weights",
    "resize_bicubic",
    "resolve_model_file",
    "save_png",
    "timeline",
    "to_array",
    "to_tensor",
]
