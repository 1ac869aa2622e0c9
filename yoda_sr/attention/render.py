"""Pictures of attention maps and of YODA's time-dependent mask M(t) (docs/method.md §4-5).

Only numpy and Pillow draw here (no matplotlib): ``heatmap`` colours a map with viridis
(``attention.colormap``), ``overlay`` blends it over a photo, and ``timeline`` draws the paper's
Figures 1 and 5: M(t) at a few steps, a legend of the panels' colours, and a plot of the
active-area fraction versus t.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..diffusion.masking import activation_steps, expected_update_fraction, validate_lower_bound
from ..image.colormap import colormap
from ..image.plots import font as _font

COLORMAP_SIZE = 256


def _as_map(attention: object) -> np.ndarray:
    """Any H x W array-like (or 1 x 1 x H x W tensor) in [0, 1] -> float64 H x W, NaN as 0."""
    if hasattr(attention, "detach"):
        attention = attention.detach().cpu().numpy()
    values = np.asarray(attention, dtype=np.float64)
    values = values.reshape(values.shape[-2:]) if values.ndim > 2 else values
    if values.ndim != 2:
        raise ValueError(f"expected an H x W attention map, got shape {values.shape}")
    return np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)


_HEATMAP_ROWS_PIXELS = 1 << 22
"""``heatmap`` colours this many pixels at a time: a gigapixel map needs no float64 copies of itself."""


def heatmap(attention: np.ndarray) -> np.ndarray:
    """Colour an H x W map in [0, 1] (clipped): H x W x 3 uint8, dark at 0, bright at 1."""
    if hasattr(attention, "detach"):
        attention = attention.detach().cpu().numpy()
    values = np.asarray(attention)
    values = values.reshape(values.shape[-2:]) if values.ndim > 2 else values
    if values.ndim != 2:
        raise ValueError(f"expected an H x W attention map, got shape {values.shape}")
    table = colormap()
    out = np.empty((*values.shape, 3), dtype=table.dtype)
    rows = max(1, _HEATMAP_ROWS_PIXELS // max(1, values.shape[1]))
    for top in range(0, values.shape[0], rows):
        levels = np.round(_as_map(values[top : top + rows]) * (COLORMAP_SIZE - 1)).astype(np.intp)
        out[top : top + rows] = table[levels]
    return out


def _resize_map(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float H x W map to (height, width)."""
    height, width = size
    if attention.shape == (height, width):
        return attention
    image = Image.fromarray(attention.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def overlay(image_rgb: np.ndarray, attention: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the heat map of ``attention`` over an H x W x 3 uint8 image (the map is resized to it).

    ``alpha`` is the weight of the heat map: 0 gives the image, 1 the heat map.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    colours = heatmap(_resize_map(_as_map(attention), image.shape[:2]))
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colours.astype(np.float64)
    return np.round(blended).astype(np.uint8)


# --- timeline: M(t) panels above the active-area curve (YODA Figures 1 and 5) ---------------------

_BACKGROUND = (255, 255, 255)
_INK = (34, 34, 34)
_FAINT = (150, 150, 150)
_LABEL = (96, 96, 96)
_GRID = (228, 228, 228)
_CURVE = (38, 86, 166)
_CURVE_FILL = (214, 226, 244)
_MARKER = (216, 96, 24)
_INACTIVE_DIM = 0.32
_ACTIVE_WHITE = 0.5
_MAX_STRIP_WIDTH = 1800


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn in ``font``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _draw_text(draw, xy: tuple[float, float], text: str, font, fill, anchor: str) -> None:
    """Draw ``text`` with a two-letter Pillow anchor (e.g. "mt" = middle, top)."""
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def _panel_steps(train_steps: int, frames: int) -> list[int]:
    """``frames`` steps evenly spaced from T down to 1 (just T for one frame; at most T steps)."""
    if frames == 1:
        return [train_steps]
    return sorted({round(float(t)) for t in np.linspace(train_steps, 1, frames)}, reverse=True)


def _mask_panel(grey: np.ndarray, tint: np.ndarray, active: np.ndarray) -> Image.Image:
    """One M(t) panel: active pixels bright (heat colour lightened), inactive ones dark grey."""
    dark = (grey * _INACTIVE_DIM)[..., None].repeat(3, axis=-1)
    bright = _ACTIVE_WHITE * 255.0 + (1.0 - _ACTIVE_WHITE) * tint
    return Image.fromarray(np.round(np.where(active[..., None], bright, dark)).astype(np.uint8))


_LEGEND_HEIGHT = 16
LEGEND_ENTRIES = (
    (True, "M(t) = 1: denoised at step t (tint: A, low to high)"),
    (False, "M(t) = 0: holds the upscaled input, noised to t (shade: A)"),
)
"""The timeline's legend of the panels' colours: active, then inactive pixels."""


def legend_swatch(active: bool, width: int = 36, height: int = 12) -> np.ndarray:
    """A swatch of the panels' colours for A from 0 (left) to 1 (right), active or inactive."""
    values = np.repeat(np.linspace(0.0, 1.0, width)[None, :], height, axis=0)
    panel = _mask_panel(values * 255.0, heatmap(values).astype(np.float64), np.full(values.shape, active))
    return np.asarray(panel)


def _legend_widths(draw: ImageDraw.ImageDraw, font) -> list[int]:
    return [36 + 6 + _text_size(draw, text, font)[0] for _, text in LEGEND_ENTRIES]


def _legend_rows(width: int, font) -> int:
    """1 when the legend's entries fit side by side in ``width`` pixels, else one row per entry."""
    widths = _legend_widths(ImageDraw.Draw(Image.new("RGB", (1, 1))), font)
    return 1 if sum(widths) + 28 * (len(widths) - 1) <= width else len(widths)


def _mask_legend(canvas: Image.Image, draw: ImageDraw.ImageDraw, centre: float, top: int, font, rows: int) -> None:
    """The legend of the panels' colours (``LEGEND_ENTRIES``) under them, in ``rows`` rows."""
    widths = _legend_widths(draw, font)
    spacing = 28
    x = round(centre - (sum(widths) + spacing * (len(widths) - 1)) / 2)
    for index, ((active, text), width) in enumerate(zip(LEGEND_ENTRIES, widths, strict=True)):
        if rows > 1:
            x = round(centre - max(widths) / 2)
        middle = top + _LEGEND_HEIGHT // 2 + (index * _LEGEND_HEIGHT if rows > 1 else 0)
        swatch = legend_swatch(active)
        y = middle - swatch.shape[0] // 2
        canvas.paste(Image.fromarray(swatch), (x, y))
        draw.rectangle((x - 1, y - 1, x + swatch.shape[1], y + swatch.shape[0]), outline=_FAINT)
        _draw_text(draw, (x + swatch.shape[1] + 6, middle), text, font, _LABEL, "lm")
        x += width + spacing


def _percent(value: float) -> str:
    """A percentage with one decimal below 10% (so that a few pixels do not read as 0%)."""
    return f"{value:.1f}%" if value < 9.95 else f"{value:.0f}%"


def _nice_step(span: float, target_ticks: int) -> float:
    """A 1-2-5 tick spacing giving about ``target_ticks`` ticks over ``span``."""
    raw = span / max(1, target_ticks)
    magnitude = 10.0 ** np.floor(np.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def timeline(
    attention: np.ndarray, lower_bound: float, train_steps: int, frames: int, flat: np.ndarray | None = None
) -> Image.Image:
    """YODA's Figures 1 and 5: M(t) at ``frames`` steps from T to 1, above the active area versus t.

    Each panel shows the mask of eq. 9 at its step (active pixels bright, tinted by the heat map;
    inactive ones dark); the plot below gives the percentage of active pixels for every t from T
    down to 1, marks the panels' steps and prints the pixel-update fraction mean(min(1, A + l)).
    ``flat`` (bool, the map's shape; ``masking.flat_areas``) marks pixels that are never active.
    """
    import torch

    validate_lower_bound(lower_bound)
    if isinstance(train_steps, bool) or int(train_steps) != train_steps or train_steps < 1:
        raise ValueError(f"train_steps must be a positive integer, got {train_steps!r}")
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    values = _as_map(attention)
    height, width = values.shape
    steps = _panel_steps(int(train_steps), int(frames))
    train_steps, frames = int(train_steps), len(steps)

    # Panels are 176 px high (264 px wide at most) and keep the map's aspect; each sits centred in
    # a slot wide enough for its labels, and everything shrinks to fit a strip of ~1800 px.
    gap, margin, min_slot = 10, 24, 96
    panel_height = 176
    panel_width = max(1, round(panel_height * width / height))
    if panel_width > 264:
        panel_width, panel_height = 264, max(1, round(264 * height / width))
    fit = (_MAX_STRIP_WIDTH - 2 * margin - gap * (frames - 1)) / (frames * max(panel_width, min_slot))
    if fit < 1.0:
        scale = max(fit, 24 / panel_width)
        panel_width, panel_height = (
            max(1, round(panel_width * scale)),
            max(1, round(panel_height * scale)),
        )
        min_slot = max(24, int(min_slot * fit))
    slot_width = max(panel_width, min_slot)
    small = _resize_map(values, (panel_height, panel_width))
    flat_full = None if flat is None else torch.from_numpy(np.asarray(flat, dtype=bool))
    flat_small = None if flat is None else torch.from_numpy(_resize_map(flat.astype(np.float64), small.shape) >= 0.5)

    activation_full = activation_steps(torch.from_numpy(values), lower_bound, train_steps, flat_full).numpy()
    activation_small = activation_steps(torch.from_numpy(small), lower_bound, train_steps, flat_small).numpy()
    counts = np.bincount(activation_full.ravel(), minlength=train_steps + 1)
    active_percent = 100.0 * np.cumsum(counts[::-1])[::-1] / values.size  # index t: share >= t
    update = expected_update_fraction(torch.from_numpy(values), lower_bound, flat_full)

    grey = small * 255.0
    tint = heatmap(small).astype(np.float64)

    title_font, label_font, small_font = _font(17), _font(14), _font(12)
    strip_width = frames * slot_width + gap * (frames - 1)
    canvas_width = max(strip_width + 2 * margin, 640)
    strip_left = (canvas_width - strip_width) // 2
    title_height, label_height, caption_height = 30, 22, 20
    strip_top = title_height + label_height
    plot_height = 260
    legend_top = strip_top + panel_height + caption_height + 4
    legend_rows = _legend_rows(canvas_width - 2 * margin, small_font)
    plot_top = legend_top + legend_rows * _LEGEND_HEIGHT + 28
    canvas_height = plot_top + plot_height + 70
    canvas = Image.new("RGB", (canvas_width, canvas_height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    _draw_text(
        draw,
        (canvas_width / 2, 8),
        f"YODA time-dependent mask M(t)   (T = {train_steps}, lower bound l = {lower_bound:g})",
        title_font,
        _INK,
        "mt",
    )
    # Label every panel where the labels fit, else every k-th one (always the first).
    pitch = slot_width + gap
    caption_suffix = " active" if _text_size(draw, "100% active", small_font)[0] <= slot_width else ""
    widest = max(
        _text_size(draw, f"t = {train_steps}", label_font)[0],
        _text_size(draw, f"100%{caption_suffix}", small_font)[0],
    )
    label_every = max(1, int(np.ceil((widest + 6) / pitch)))
    for index, step in enumerate(steps):
        left = strip_left + index * pitch + (slot_width - panel_width) // 2
        canvas.paste(_mask_panel(grey, tint, activation_small >= step), (left, strip_top))
        draw.rectangle((left - 1, strip_top - 1, left + panel_width, strip_top + panel_height), outline=_FAINT)
        if index % label_every:
            continue
        centre = left + panel_width / 2
        _draw_text(draw, (centre, strip_top - 4), f"t = {step}", label_font, _INK, "mb")
        _draw_text(
            draw,
            (centre, strip_top + panel_height + 4),
            f"{_percent(active_percent[step])}{caption_suffix}",
            small_font,
            _FAINT,
            "mt",
        )

    _mask_legend(canvas, draw, canvas_width / 2, legend_top, small_font, legend_rows)

    # The plot: x runs from T (left) to 0 (right), like the panels above; y is the active area in %.
    axis_label_width = 62
    left_edge = max(margin + axis_label_width, strip_left + axis_label_width // 2)
    right_edge = min(canvas_width - margin, strip_left + strip_width) - 8
    if right_edge - left_edge < 240:
        left_edge, right_edge = margin + axis_label_width, canvas_width - margin - 8
    top_edge, bottom_edge = plot_top, plot_top + plot_height

    def x_of(step: float) -> float:
        return left_edge + (train_steps - step) / train_steps * (right_edge - left_edge)

    def y_of(percent: float) -> float:
        return bottom_edge - percent / 100.0 * (bottom_edge - top_edge)

    for percent in range(0, 101, 20):
        y = y_of(percent)
        draw.line((left_edge, y, right_edge, y), fill=_GRID)
        draw.line((left_edge - 5, y, left_edge, y), fill=_INK)
        _draw_text(draw, (left_edge - 8, y), f"{percent}%", small_font, _INK, "rm")
    tick = _nice_step(train_steps, 8)
    tick_values = sorted({*np.arange(0.0, train_steps + 0.5 * tick, tick).tolist(), float(train_steps)})
    tick_values = [value for value in tick_values if value <= train_steps]
    for value in tick_values:
        if value != train_steps and train_steps - value < 0.4 * tick:
            continue
        x = x_of(value)
        draw.line((x, top_edge, x, bottom_edge), fill=_GRID)
        draw.line((x, bottom_edge, x, bottom_edge + 5), fill=_INK)
        _draw_text(draw, (x, bottom_edge + 8), f"{value:g}", small_font, _INK, "mt")

    points = [(x_of(step), y_of(active_percent[step])) for step in range(train_steps, 0, -1)]
    points.append((x_of(0), y_of(active_percent[1])))
    draw.polygon([(x_of(train_steps), bottom_edge), *points, (x_of(0), bottom_edge)], fill=_CURVE_FILL)
    # Every pixel is active for t <= l*T (eq. 9): mark that boundary with a dashed line.
    all_active = int(np.floor(lower_bound * train_steps))
    if 0 < all_active < train_steps:
        x = x_of(all_active)
        for y in range(int(top_edge), int(bottom_edge), 8):
            draw.line((x, y, x, min(y + 4, bottom_edge)), fill=_FAINT)
        curve_x = np.array([point[0] for point in points])
        curve_y = np.array([point[1] for point in points])
        placements = [
            ("l", 6, 50, f"t <= lT = {all_active}: every pixel active"),
            ("l", 6, 50, f"every pixel active\nfor t <= lT = {all_active}"),
            ("r", -6, 90, f"every pixel active\nfor t <= lT = {all_active}"),
            ("r", -6, 10, f"every pixel active\nfor t <= lT = {all_active}"),
        ]
        for side, offset, height_percent, label in placements:
            xy, anchor = (x + offset, y_of(height_percent)), f"{side}m"
            align = "left" if side == "l" else "right"
            box = draw.multiline_textbbox(xy, label, font=small_font, anchor=anchor, align=align)
            inside = box[0] >= left_edge + 2 and box[2] <= right_edge - 2
            under = (curve_x >= box[0] - 4) & (curve_x <= box[2] + 4)
            crosses = np.any((curve_y[under] >= box[1] - 4) & (curve_y[under] <= box[3] + 4))
            if inside and not crosses:
                draw.multiline_text(xy, label, font=small_font, fill=_LABEL, anchor=anchor, align=align)
                break
    draw.line(points, fill=_CURVE, width=3)
    for step in steps:
        x, y = x_of(step), y_of(active_percent[step])
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=_MARKER, outline=_BACKGROUND)
    draw.line((left_edge, top_edge, left_edge, bottom_edge), fill=_INK)
    draw.line((left_edge, bottom_edge, right_edge, bottom_edge), fill=_INK)

    _draw_text(
        draw,
        ((left_edge + right_edge) / 2, bottom_edge + 26),
        "diffusion step t  (sampling runs T -> 0)",
        label_font,
        _INK,
        "mt",
    )
    _draw_text(
        draw,
        (left_edge + 10, top_edge - 6),
        "active area (% of pixels with M(t) = 1)",
        label_font,
        _INK,
        "lb",
    )
    _draw_text(
        draw,
        (canvas_width / 2, bottom_edge + 50),
        f"mean pixel-update fraction: mean(min(1, A + l)) = {100.0 * update:.1f}% of plain diffusion's updates",
        label_font,
        _CURVE,
        "mt",
    )
    return canvas
