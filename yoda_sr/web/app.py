"""The Gradio page: upload, settings (each defaulting to the chosen model's), a before/after slider,
the attention map, the M(t) timeline, the run's record, downloads; and the API endpoint ``upscale``.

Jobs run one at a time (one queue slot for the page and the API together) on one worker thread, so
one job uses the device at a time. Cancelling (the page's button, or a client's ``job.cancel()``)
cancels the event's task; the task then tells the job to stop, and the sampler stops at its next
step (``jobs.Cancelled``). Gradio is imported by ``offline.load_gradio``, after the environment that
keeps it offline is set.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .jobs import KEEP, Done, Form, Jobs, Run, Tick, Upload, message
from .library import METHODS
from .offline import load_gradio

if TYPE_CHECKING:
    import gradio as gr

T = TypeVar("T")
DEVICE = "device"
"""The queue's concurrency group of every event that samples: one job at a time per device."""
BEFORE = ("bicubic", "input pixels")
INTRO = """# yoda-sr
Upscale photos with YODA diffusion ("You Only Diffuse Areas"): an attention map decides, per pixel,
how many denoising steps it gets. Settings start at the chosen model's; the download is the file
`yoda-sr upscale` writes, under the name it gives (seed: derived from the seed and the file's name)."""


class Worker:
    """One thread that runs jobs; awaiting ``run`` in an event's task makes the job cancellable."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="yoda-sr-job")

    async def run(self, fn: Callable[[threading.Event], T]) -> T:
        """``fn(stop)`` on the worker thread; when the awaiting task is cancelled, ``stop`` is set and
        the cancel goes on once the job has stopped (so the next job never overlaps it)."""
        stop = threading.Event()
        context = contextvars.copy_context()  # Gradio's progress reporting reads context variables
        future = asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(context.run, fn, stop))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([future])
            raise


def _reporter(progress: Any) -> Callable[[Tick], None]:
    def report(tick: Tick) -> None:
        progress(tick.fraction, desc=tick.describe())

    return report


def _fractions(done: Done) -> str:
    record = done.record
    lower = f", l = {record['lower_bound']:g}" if record["attention"] != "none" else ""
    return (
        f"**{done.name}** → **{done.output.name}**: pixel updates **{record['update_fraction']:.2f}** and work "
        f"**{record['work_fraction']:.2f}** of plain diffusion's; {record['seconds']:.1f} s, {record['steps']} "
        f"{record['sampler']} steps, attention {record['attention']}{lower}, seed {record['seed']}"
    )


def _show(gr: Any, items: list[Done], index: int, before: str) -> tuple[Any, ...]:
    """The slider, attention map, timeline, fractions and record of result ``index``."""
    if not items:
        return None, None, None, "", None
    done = items[min(max(index, 0), len(items) - 1)]
    views = done.views
    start = views.pixels if before == BEFORE[1] else views.bicubic
    record = json.dumps(done.record, sort_keys=True, indent=2)  # as text: a 63-bit seed is no JavaScript number
    return (str(start), str(views.result)), views.attention, views.timeline, _fractions(done), record


def build(jobs: Jobs, worker: Worker | None = None) -> gr.Blocks:
    """The page and its events (not launched)."""
    gr = load_gradio()
    worker = worker or Worker()
    models = jobs.models
    first = models.defaults(models.default)

    async def page(files: list[str] | None, *values: Any, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        *settings, before = values
        form = Form(*settings)
        uploads = [Upload.of(path) for path in files or []]
        keep = [gr.skip()] * 7
        try:
            run: Run = await worker.run(lambda stop: jobs.run(uploads, form, _reporter(progress), stop))
        except Exception as error:
            return (*keep, message(error), gr.skip())
        downloads = [str(done.output) for done in run.done]
        if run.archive is not None:
            downloads.insert(0, str(run.archive))
        pictures = [(str(done.views.result), done.output.name) for done in run.done]
        gallery = gr.update(value=pictures, visible=len(pictures) > 1)
        shown = _show(gr, run.done, 0, before)
        return (*shown[:1], gallery, *shown[1:4], downloads or None, shown[4], run.lines(), run.done)

    async def api(
        image: str | None,
        model: str | None = None,
        scale: float | None = None,
        steps: float | None = None,
        sampler: str | None = "auto",
        eta: float | None = None,
        attention: str | None = "auto",
        lower_bound: float | None = None,
        flat_floor: float | None = None,
        clean: str = "",
        sparse: str = "on",
        block: str = "auto",
        tile: str = "auto",
        tile_overlap: float | None = 32,
        seed: float | None = 0,
        format: str = "auto",
        photo_model: str = "",
        progress: Any = gr.Progress(),  # noqa: B008
    ) -> str:
        """Upscale one image as `yoda-sr upscale FILE --seed SEED` does; returns the written file."""
        form = Form(model, scale, steps, sampler, eta, attention, lower_bound, flat_floor, clean, sparse, block, tile,
                    tile_overlap, seed, format, photo_model)  # fmt: skip
        if not image:
            raise gr.Error("no image given; pass an image file as the first input", print_exception=False)
        try:
            run = await worker.run(lambda stop: jobs.run([Upload.of(image)], form, _reporter(progress), stop))
        except Exception as error:
            raise gr.Error(message(error), print_exception=False) from None
        if not run.done:
            raise gr.Error(run.lines() or "cancelled", print_exception=False)
        return str(run.done[0].output)

    def defaults(label: str) -> tuple[Any, ...]:
        try:
            model = models.defaults(label)
        except Exception as error:
            return (*[gr.skip()] * 9, message(error))
        samplers = gr.update(choices=list(model.samplers), value=model.sampler)
        return (model.scale, model.steps, samplers, model.eta, model.attention, model.lower_bound,
                model.flat_floor, model.clean, model.photo_model,
                f"{label}: {model.steps} {model.sampler} steps (at most {model.max_steps}), "
                f"attention {model.attention}, l = {model.lower_bound:g}, {model.scale}x")  # fmt: skip

    with gr.Blocks(title="yoda-sr", analytics_enabled=False, delete_cache=(1800, KEEP)) as blocks:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(
                    label="Images (one or several)", file_count="multiple", type="filepath", elem_id="images"
                )
                model = gr.Dropdown(models.labels, value=models.default, label="Model")
                with gr.Row():
                    scale = gr.Number(first.scale, label="Scale", minimum=1)
                    steps = gr.Number(first.steps, label="Steps", elem_id="steps")
                    sampler = gr.Dropdown(list(first.samplers), value=first.sampler, label="Sampler")
                with gr.Row():
                    attention = gr.Dropdown(list(METHODS), value=first.attention, label="Attention")
                    lower_bound = gr.Number(first.lower_bound, label="Lower bound")
                    flat_floor = gr.Number(first.flat_floor, label="Flat floor")
                with gr.Accordion("More settings", open=False):
                    with gr.Row():
                        eta = gr.Number(first.eta, label="Eta (DDIM)")
                        seed = gr.Number(0, label="Seed")
                        clean = gr.Radio(["auto", "off"], value=first.clean, label="Clean")
                        sparse = gr.Radio(["on", "off"], value="on", label="Sparse")
                    with gr.Row():
                        block = gr.Textbox("auto", label="Block")
                        tile = gr.Textbox("auto", label="Tile")
                        overlap = gr.Number(32, label="Tile overlap")
                        fmt = gr.Dropdown(["auto", "png", "jpg", "webp", "tiff"], value="auto", label="Format")
                    photo_model = gr.Textbox(
                        first.photo_model,
                        label="Photo model",
                        info="upscales JPEG input Clean deblocked; off: the model does",
                    )
                with gr.Row():
                    go = gr.Button("Upscale", variant="primary", elem_id="upscale")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Textbox(label="Messages", lines=3, interactive=False, elem_id="messages")
            with gr.Column(scale=2):
                before = gr.Radio(list(BEFORE), value=BEFORE[0], label="Before", elem_id="before")
                slider = gr.ImageSlider(label="Before / after", type="filepath", format="png", interactive=False,
                                        elem_id="slider")  # fmt: skip
                gallery = gr.Gallery(
                    label="Results (select one to look at it)",
                    format="png",
                    columns=6,
                    height="auto",
                    allow_preview=False,
                    buttons=["download"],
                    visible=False,
                    elem_id="gallery",
                )
                with gr.Row():
                    pictures = dict(
                        format="png", type="filepath", interactive=False, buttons=["download", "fullscreen"]
                    )
                    attention_map = gr.Image(label="Attention map", height=320, scale=1, **pictures)
                    timeline = gr.Image(label="M(t) timeline", height=320, scale=2, **pictures)
                fractions = gr.Markdown()
                download = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="download")
                record = gr.Code(label="Record (as upscale --json)", language="json", interactive=False)
        results = gr.State([])
        selected = gr.State(0)
        form = [model, scale, steps, sampler, eta, attention, lower_bound, flat_floor, clean, sparse, block, tile,
                overlap, seed, fmt, photo_model]  # fmt: skip
        outputs = [slider, gallery, attention_map, timeline, fractions, download, record, status, results]
        running = go.click(page, [files, *form, before], outputs, concurrency_limit=1,
                           concurrency_id=DEVICE, api_name="page", api_visibility="undocumented")  # fmt: skip
        running.then(lambda: 0, None, selected, api_visibility="private")
        stop.click(lambda: "cancelling: the job stops at its next step", None, status, cancels=[running],
                   api_visibility="private")  # fmt: skip
        model.change(defaults, model, [scale, steps, sampler, eta, attention, lower_bound, flat_floor, clean,
                                       photo_model, status],
                     api_visibility="private")  # fmt: skip
        shown = [slider, attention_map, timeline, fractions, record]

        def pick(items: list[Done], kind: str, event: Any) -> tuple[Any, ...]:
            return (*_show(gr, items, int(event.index), kind), int(event.index))

        pick.__annotations__["event"] = gr.SelectData  # how Gradio knows to pass the selection

        gallery.select(pick, [results, before], [*shown, selected], api_visibility="private")
        before.change(lambda items, index, kind: _show(gr, items, index, kind), [results, selected, before], shown,
                      api_visibility="private")  # fmt: skip
        _api(gr, models, api)
    return blocks


def _api(gr: Any, models: Any, fn: Callable[..., Any]) -> None:
    """The endpoint ``/upscale``: an image file, then optional settings (None or auto: the model's; seed 0)."""
    with gr.Column(visible=False):
        inputs = [
            gr.File(label="image", type="filepath"),
            gr.Dropdown(models.labels, value=models.default, label="model"),
            gr.Number(None, label="scale"),
            gr.Number(None, label="steps"),
            gr.Textbox("auto", label="sampler"),
            gr.Number(None, label="eta"),
            gr.Textbox("auto", label="attention"),
            gr.Number(None, label="lower_bound"),
            gr.Number(None, label="flat_floor"),
            gr.Textbox("", label="clean"),
            gr.Textbox("on", label="sparse"),
            gr.Textbox("auto", label="block"),
            gr.Textbox("auto", label="tile"),
            gr.Number(32, label="tile_overlap"),
            gr.Number(0, label="seed"),
            gr.Textbox("auto", label="format"),
            gr.Textbox("", label="photo_model"),
        ]
        output = gr.File(label="upscaled")
        trigger = gr.Button("upscale")
    trigger.click(fn, inputs, output, api_name="upscale", concurrency_limit=1, concurrency_id=DEVICE)
