"""Evaluation: PSNR, SSIM and LPIPS of a model against bicubic and plain diffusion (`yoda-sr evaluate`).

Each ground-truth (HR) image is read, made 8-bit RGB, cropped top-left to a multiple of the scale and
shrunk with the project's bicubic (``imaging.bicubic_degrade``); the LR is rounded to 8 bits, as a
user's LR file would be. Every compared method gets that same LR, and the diffusion methods the same
per-image seed (``seeds.derive_seed`` of the base seed and the image's relative path):

- ``bicubic``: the LR enlarged with the project's bicubic;
- ``base``: the model's regression output alone, no diffusion: what sampling leaves where no pixel is
  diffused (the known region, docs/method.md §3). For SRDiff that is its residual base (bicubic, or
  the RRDB encoder's output for the ``rrdb`` and ``bicubic+rrdb`` bases); for SR3 it is bicubic;
- ``plain``: the model with attention ``none`` (every pixel diffused at every step);
- ``yoda``: the model with its own attention method, or the one asked for;
- ``spandrel:FILE``: a peer, another SR model that spandrel recognises (``peers``), on the LR as it is.

Metrics (``metrics.image_metrics``, and LPIPS-VGG and LPIPS-Alex for each backbone whose weights are
installed) all leave out a border of ``scale`` pixels; the reported numbers are means over images.
The output folder gets per_image.csv (with what the LR cleaning found and did), summary.json,
grid.png and worst.png (``pictures``), the LR inputs (lr/) and every method's results (<method>/),
all PNG; stdout gets a Markdown table with one row per method, and one line for each diffusion
method that scored below bicubic, with the likely cause.

An evaluation resumes: per_image.csv and summary.json are rewritten after every image, and a run
into a folder that holds the same evaluation (model sha256, data folder, scale, steps, sampler, eta,
attention, lower bound, seed, dtype, each peer's sha256: ``results.IDENTITY``) computes only the (image,
method) pairs that have no result file and row yet, or lack an LPIPS value that can now be computed.
A folder holding a different evaluation, or files that are not an evaluation, is refused unless
``overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..api import Resolved, Settings, Upscaler
from ..attention import WEIGHTED_METHODS, MissingWeightsError, require_weights
from ..errors import RequestError, SettingError, YodaError
from ..fsutil import atomic_write_bytes
from ..image.degradations import Degradation
from ..image.io import read_picture, write_picture
from ..image.restoration import clean
from ..jobs.batch import Batch, Item, each
from ..jobs.files import resolved
from ..seeds import derive_seed
from .baselines import bicubic_upscale, degrade, ground_truth, regression_base
from .methods import METHODS, MODEL_METHODS, folder, parse_compare
from .metrics import LPIPS_NETS, SSIM_RADIUS, Lpips, crop_border, image_metrics, load_lpips_models
from .peers import Peer, load_spandrel
from .pictures import write_pictures
from .results import (
    Outcome,
    Record,
    check_out,
    default_out,
    explain,
    json_number,
    markdown_table,
    output_names,
    per_image_csv,
    previous_records,
    summarize,
)

__all__ = ["METHODS", "Evaluation", "Summary", "evaluate", "markdown_table", "parse_compare"]


class Evaluation:
    """Runs the compared methods on HR images, one image at a time.

    ``settings`` are the yoda method's, resolved (``Upscaler.resolve``); plain uses them with attention none.
    """

    def __init__(
        self,
        upscaler: Upscaler,
        methods: list[str],
        settings: Resolved,
        scale: int,
        seed: int = 0,
        lpips: dict[str, Lpips] | None = None,
        degradation: Degradation | None = None,
        peers: dict[str, Peer] | None = None,
    ) -> None:
        self.upscaler = upscaler
        self.peers = peers or {}
        """Peers by method name (``spandrel:<stem>``): they get the LR as it is, like bicubic."""
        self.degradation = degradation or Degradation()
        """Applied to every LR after the downscale (noise drawn from the image's seed)."""
        self.methods = methods
        self.scale = scale
        self.seed = seed
        self.lpips = lpips or {}
        """LPIPS by backbone (``vgg``, ``alex``); those missing are not computed."""
        self.resolved = upscaler.resolve(settings)
        """Its ``clean`` says how the model's methods get the LR: cleaned once here, then given to each
        as it is; its ``photo_model`` which model gets a deblocked LR."""
        self.settings = {  # resolved by the model: its photo model samples with the same settings
            "plain": upscaler.resolve(dataclasses.replace(settings, attention="none", clean="off")),
            "yoda": upscaler.resolve(dataclasses.replace(settings, clean="off")),
        }

    def image(self, rgb: np.ndarray, key: str, methods: Sequence[str] | None = None) -> Outcome:
        """Evaluate ``methods`` (default: every method) on one HR image; ``key`` (its relative path)
        names it and seeds it."""
        hr = ground_truth(rgb, self.scale)
        smallest = 2 * SSIM_RADIUS + 1 + 2 * self.scale
        if min(hr.shape[:2]) < smallest:
            height, width = rgb.shape[:2]
            raise YodaError(f"is {width}x{height}; evaluating at x{self.scale} needs at least {smallest} pixels a side")
        lr = degrade(hr, self.scale)
        if not self.degradation.is_identity:
            lr = self.degradation.apply(lr, np.random.default_rng(derive_seed(self.seed, key, "degrade")))
        seed = derive_seed(self.seed, key)
        results: dict[str, np.ndarray] = {}
        costs: dict[str, tuple[float, float | None]] = {}
        methods = list(self.methods if methods is None else methods)
        start = time.perf_counter()
        # as upscale does
        cleaned, found = clean(lr, self.resolved.clean) if set(methods) & set(MODEL_METHODS) else (lr, None)
        cleaning = time.perf_counter() - start  # part of each model method's time, as in upscale
        done = None if found is None else "off" if self.resolved.clean == "off" else found.describe()
        model = self.upscaler if found is None else self.upscaler.for_cleaning(found, self.resolved)  # as upscale does
        for method in methods:
            start = time.perf_counter() - (cleaning if method in MODEL_METHODS else 0.0)
            fraction = None
            if method == "bicubic":
                image = bicubic_upscale(lr, hr.shape[:2])
            elif method in self.peers:
                image = self.peers[method].upscale(lr)
            elif method == "base":
                image = regression_base(model, cleaned, self.scale)
            else:
                result = model.upscale(cleaned, seed=seed, scale=self.scale, settings=self.settings[method])
                image, fraction = result.image, result.update_fraction
            results[method] = image
            costs[method] = (time.perf_counter() - start, fraction)
        distances: dict[str, list[float | None]] = {net: [None] * len(methods) for net in LPIPS_NETS}
        cropped = [crop_border(results[method], self.scale) for method in methods]
        for net, lpips in self.lpips.items():
            distances[net] = list(lpips.distances(crop_border(hr, self.scale), cropped))
        records = [
            Record(
                key,
                method,
                **image_metrics(results[method], hr, self.scale),
                lpips_vgg=distances["vgg"][index],
                lpips_alex=distances["alex"][index],
                update_fraction=costs[method][1],
                seconds=costs[method][0],
                cleaned=done if method in MODEL_METHODS else None,
                model=model.name if method in MODEL_METHODS else None,
            )
            for index, method in enumerate(methods)
        ]
        return Outcome(hr, lr, results, records)


def _ignore(_: str) -> None:
    pass


@dataclass
class Summary:
    """What :func:`evaluate` wrote: summary.json's content and the mean metrics per method."""

    content: dict[str, Any]
    means: dict[str, dict[str, float | None]]
    lpips_note: str | None
    """One line: which LPIPS backbones were not computed and how to get them (None when all were)."""
    failed: int
    lpips_nets: list[str] = dataclasses.field(default_factory=list)
    """The LPIPS backbones computed (``vgg``, ``alex``): the table's LPIPS columns."""
    explanations: list[str] = dataclasses.field(default_factory=list)
    """One line per diffusion method that scored below bicubic, with the likely cause."""


def evaluate(
    data: Path,
    *,
    model: str | None = None,
    scale: int | None = None,
    settings: Settings | None = None,
    compare: str | Sequence[str] = METHODS,
    degrade: str = "none",
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    limit: int | None = None,
    recursive: bool = False,
    out: Path | None = None,
    overwrite: bool = False,
    note: Callable[[str], None] = _ignore,
    report: Callable[[str], None] = _ignore,
    reraise: bool = False,
) -> Summary:
    """Evaluate a model on the HR images of ``data`` and write the results folder ``out``.

    ``settings`` are the yoda method's (None: the model's defaults); plain uses them with attention
    none, base and bicubic their clean mode.
    ``note`` gets remarks and one progress line per image, ``report`` one line per image that
    failed (the others go on); ``reraise`` lets such a failure propagate instead.
    """

    comparison = parse_compare(compare if isinstance(compare, str) else ",".join(compare))
    methods = comparison.methods
    if comparison.peers:
        load_spandrel()  # before the model loads: its absence is one line
    degradation = Degradation.parse(degrade)
    if scale is not None and scale < 1:
        raise SettingError("scale", f"must be a positive integer, got {scale}")
    if limit is not None and limit < 1:
        raise SettingError("limit", f"must be at least 1, got {limit}")
    if not data.exists():
        raise YodaError(f"{data}: no such folder")
    batch: Batch[Item] = Batch(overwrite=True, report=report, note=note, reraise=reraise, fatal=(MissingWeightsError,))
    search = batch.find([data], recursive)
    if out is not None:
        check_out(out, overwrite)

    upscaler = Upscaler.from_pretrained(model, device=device, dtype=dtype)
    scale = upscaler.scale if scale is None else scale
    if scale > upscaler.scale:
        raise SettingError("scale", f"{scale}: {upscaler.name} upscales by at most {upscaler.scale}")
    peers = {
        name: Peer.load(name, path, scale=scale, device=upscaler.device, dtype=upscaler.dtype)
        for name, path in comparison.peers.items()
    }
    chosen = upscaler.resolve(settings or Settings())
    if chosen.attention in WEIGHTED_METHODS:  # before any image is computed, as upscale refuses it
        try:
            require_weights(chosen.attention)
        except MissingWeightsError as error:
            raise RequestError(str(error)) from None
    if out is None:
        out = default_out(upscaler.name)
        check_out(out, overwrite)
    results_folder = resolved(out)
    found = [(image, folder) for image, folder in search.images if not resolved(image).is_relative_to(results_folder)]
    found = found[:limit] if limit is not None else found
    if not found:
        raise YodaError(f"no images found in {data} outside the results folder {out}")

    lpips_models, lpips_note = load_lpips_models(upscaler.device)
    content: dict[str, Any] = {
        "model": upscaler.name,
        "model_sha256": upscaler.loaded.sha256,
        "yoda_sr_version": __version__,
        "data": str(data),
        "images": 0,
        "failed": 0,
        "compare": methods,
        "settings": {
            "scale": scale,
            "steps": chosen.steps,
            "sampler": chosen.sampler,
            "eta": chosen.eta,
            "attention": chosen.attention,
            "lower_bound": chosen.lower_bound,
            "flat_floor": chosen.flat_floor,
            "clean": chosen.clean,
            "photo_model": chosen.photo_model,
            "seed": seed,
            "sparse": chosen.sparse,
            "block": chosen.block,
            "border": scale,
            "lr": "bicubic (a = -0.5, antialiased), 8-bit"
            + ("" if degradation.is_identity else f", then {degradation.label()}"),
            "degrade": degradation.label(),
            "peers": {name: peer.describe() for name, peer in peers.items()},
        },
        "device": str(upscaler.device),
        "dtype": str(upscaler.dtype).removeprefix("torch."),
        "lpips": {"computed": list(lpips_models), "version": "0.1", "note": lpips_note},
    }
    keys = [(folder / image.name).as_posix() for image, folder in found]
    names = output_names(keys)
    known: dict[tuple[str, str], Record] = {}
    if not overwrite:
        for record in previous_records(out, content):
            known[(record.image, record.method)] = record

    def done(key: str, method: str) -> bool:
        record = known.get((key, method))
        return (
            record is not None
            and all(getattr(record, f"lpips_{net}") is not None for net in lpips_models)
            and (out / folder(method) / names[key]).is_file()
            and (out / "lr" / names[key]).is_file()
        )

    evaluation = Evaluation(upscaler, methods, chosen, scale, seed, lpips_models, degradation, peers)
    note(
        f"evaluating {upscaler.name} on {len(found)} image(s) at x{scale}, {chosen.steps} "
        f"{chosen.sampler} steps, yoda attention {chosen.attention} (l = {chosen.lower_bound:g}"
        + (f", flat areas below {chosen.flat_floor:g} kept" if chosen.flat_floor else "")
        + "), "
        + ("" if degradation.is_identity else f"LR degraded by {degradation.label()}, ")
        + ("" if chosen.clean == "auto" else "LR cleaning off, ")
        + f"{upscaler.device} ({str(upscaler.dtype).removeprefix('torch.')}): {', '.join(methods)} -> {out}"
    )
    for name, peer in peers.items():
        note(f"{name}: {peer.architecture} x{scale} from {peer.path} ({str(peer.dtype).removeprefix('torch.')})")
    if "yoda" in methods and chosen.attention == "none":
        note("note: the yoda method uses attention none here, so it equals plain")

    todo = {key: [method for method in methods if not done(key, method)] for key in keys}
    items = [
        Item(image, key, [out / "lr" / names[key], *(out / folder(method) / names[key] for method in todo[key])])
        for (image, _), key in zip(found, keys, strict=True)
        if todo[key]
    ]
    if len(items) < len(found):
        note(f"resuming the evaluation in {out}: {len(found) - len(items)} of {len(found)} image(s) done already")
    position = {key: index for index, key in enumerate(keys, start=1)}

    def write_results(failed: int) -> dict[str, Any]:
        records = [known[(key, method)] for key in keys for method in methods if (key, method) in known]
        complete = [key for key in keys if all((key, method) in known for method in methods)]
        means = summarize([record for record in records if record.image in complete], methods)
        content.update(
            images=len(complete),
            failed=failed,
            seconds_per_image=json_number(
                float(np.mean([sum(r.seconds for r in records if r.image == key) for key in complete]))
                if complete
                else None
            ),
            methods={
                method: {name: json_number(value) for name, value in entry.items()} for method, entry in means.items()
            },
            cleaned={record.image: record.cleaned for record in records if record.cleaned is not None},
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "per_image.csv", per_image_csv(records).encode("utf-8"))
        text = json.dumps(content, indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(out / "summary.json", text.encode("utf-8"))
        return means

    def run_one(item: Item) -> Outcome:
        outcome = evaluation.image(read_picture(item.image).rgb, item.key, todo[item.key])
        write_picture(out / "lr" / names[item.key], outcome.lr)
        for method, image in outcome.results.items():
            write_picture(out / folder(method) / names[item.key], image)
        return outcome

    def finished(item: Item, outcome: Outcome) -> None:
        for record in outcome.records:
            known[(record.image, record.method)] = record
        write_results(batch.tally.failed)
        scores = ", ".join(f"{r.method} {r.psnr_y:.2f} dB / {r.ssim_y:.4f}" for r in outcome.records)
        cleaned = next((r.cleaned for r in outcome.records if r.cleaned not in (None, "none", "off")), None)
        lr = f" (LR {cleaned})" if cleaned else ""
        note(f"[{position[item.key]}/{len(found)}] {item.key}{lr}: PSNR-Y / SSIM-Y {scores}")

    write_results(0)
    tally = batch.run(batch.plan(items), each(run_one), done=finished)
    complete = [r for r in known.values() if r.method in methods and all((r.image, m) in known for m in methods)]
    content["worst"] = write_pictures(
        out, [(image, key) for (image, _), key in zip(found, keys, strict=True)], names, methods, complete, scale
    )
    means = write_results(tally.failed)
    if not content["images"]:
        raise YodaError(f"none of the {len(found)} image(s) could be evaluated")
    steps, default_steps = chosen.steps, upscaler.resolve(Settings()).steps
    explanations = []
    if steps is not None and chosen.sampler is not None and default_steps is not None:
        ours = {method: entry for method, entry in means.items() if method not in peers}
        explanations = explain(ours, steps, chosen.sampler, default_steps)
    return Summary(content, means, lpips_note, tally.failed, list(lpips_models), explanations)
