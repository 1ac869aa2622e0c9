"""Named checkpoints: the ``checkpoints.toml`` registry, verified downloads, a local store, loading.

Every command gets weights through here (``--model NAME|PATH``, DINO attention weights). The store
lives in ``$YODA_SR_HOME`` (default ``~/.cache/yoda-sr``):

- ``checkpoints/<name>.safetensors``: ready-to-load weights in yoda-sr's format (docs/method.md §8),
  converted from upstream files, imported by the user, or linked from the Hugging Face cache;
- ``downloads/``: partial URL downloads (``*.part``), kept so an interrupted transfer resumes;
- ``checkpoints.lock.json``: what is installed (file, sha256, source hash, revision) and the *pins*:
  the source sha256 recorded on first download of an entry with no hash in the registry, enforced on
  every later download (trust on first use). ``remove`` keeps pins.

Hugging Face sources go through ``huggingface_hub.hf_hub_download`` (so ``HF_HOME``,
``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply); URL sources through our own HTTP
client with resume. Each file's sha256 is checked after every download and by ``verify``; a file
that fails is removed. Nothing is ever downloaded implicitly: loading a missing checkpoint names the
command that fetches it.

The modules, bottom up: ``paths`` (where things live), ``registry`` (entries), ``store`` (the lock,
installed files, verify, remove), ``importing`` (upstream file -> ready file), ``downloading`` (Hub and
URL sources), ``loading`` (``--model`` -> a denoiser; LPIPS networks). The file format itself is
``yoda_sr.weights_file``.
"""

from __future__ import annotations

from ..weights_file import FORMAT_VERSION, METADATA_KEY, read_metadata, save, sha256_file
from .downloading import download, download_url
from .importing import import_checkpoint
from .loading import LoadedDenoiser, load_denoiser, load_lpips, resolve_model_file
from .paths import home, user_registry_path
from .registry import KINDS, SOURCE_KINDS, Entry, Source, get_entry, load_registry, registry_path
from .store import (
    ChecksumError,
    NotInstalledError,
    Verification,
    installed_names,
    installed_path,
    is_installed,
    read_lock,
    remove,
    require,
    verify,
)

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "METADATA_KEY",
    "SOURCE_KINDS",
    "ChecksumError",
    "Entry",
    "LoadedDenoiser",
    "NotInstalledError",
    "Source",
    "Verification",
    "download",
    "download_url",
    "get_entry",
    "home",
    "import_checkpoint",
    "installed_names",
    "installed_path",
    "is_installed",
    "load_denoiser",
    "load_lpips",
    "load_registry",
    "read_lock",
    "read_metadata",
    "registry_path",
    "remove",
    "require",
    "resolve_model_file",
    "save",
    "sha256_file",
    "user_registry_path",
    "verify",
]
