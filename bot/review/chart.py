"""The progress chart (design §2 step 6): face similarity (mean and max) and loss against step, as a PNG.

Each checkpoint's point carries its verdict at a glance ("2/4": samples recognised as the person), and
the latest verdict in words sits under the title (see :mod:`bot.review.verdict`).

Drawn with Pillow alone (no matplotlib: a heavy dependency for one line chart). Similarity is on the
left axis with the identity ceiling as a dashed line; loss on the right axis. The chart is renewed at
every checkpoint; ``render_chart`` is synchronous CPU work (wrap it with ``asyncio.to_thread``).
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.fonts import ui_font

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

MEAN_COLOUR = (31, 119, 180)
MAX_COLOUR = (148, 103, 189)
CEILING_COLOUR = (46, 160, 67)
LOSS_COLOUR = (214, 39, 40)
AXIS_COLOUR = (60, 60, 60)
GRID_COLOUR = (225, 225, 225)
TEXT_COLOUR = (30, 30, 30)


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One checkpoint on the chart. ``mean``/``max`` are None when no face was found in its samples."""

    step: int
    mean: float | None
    max: float | None
    label: str | None = None  # the verdict at a glance, e.g. "1/4" (samples recognised) or "1/4 copy"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5, 5 × 10^k steps) covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("tick bounds must be finite")
    if high < low:
        low, high = high, low
    if high == low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), 10 * magnitude)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def render_chart(
    points: Sequence[ChartPoint],
    *,
    ceiling: float | None,
    loss: Sequence[tuple[int, float]] = (),
    engine: str | None = None,
    total_steps: int | None = None,
    size: tuple[int, int] = (1000, 560),
    verdict: str | None = None,
) -> bytes:
    """PNG bytes of the similarity/loss chart. Works with no points yet (an empty, labelled chart)."""
    from PIL import Image, ImageDraw

    width, height = size
    font_px = max(11, height // 40)
    left, right, top, bottom = font_px * 5, font_px * 5, font_px * 4, font_px * 4
    plot = (left, top, width - right, height - bottom)
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)

    steps = [p.step for p in points] + [s for s, _ in loss]
    x_high = max([*steps, total_steps or 0, 1])
    x_ticks = nice_ticks(0, x_high, 6)
    x_range = (0.0, x_ticks[-1])

    sims = [v for p in points for v in (p.mean, p.max) if v is not None and math.isfinite(v)]
    if ceiling is not None and math.isfinite(ceiling):
        sims.append(ceiling)
    y_low = min([0.0, *sims])
    y_high = max(sims) * 1.08 if sims else 1.0
    y_ticks = nice_ticks(y_low, y_high, 5)
    y_range = (y_ticks[0], y_ticks[-1])

    losses = [v for _, v in loss if math.isfinite(v)]
    loss_ticks = nice_ticks(min(0.0, *losses), max(0.0, *losses) * 1.08, 5) if losses else []
    loss_range = (loss_ticks[0], loss_ticks[-1]) if loss_ticks else (0.0, 1.0)

    def to_x(step: float) -> float:
        return plot[0] + (step - x_range[0]) / (x_range[1] - x_range[0]) * (plot[2] - plot[0])

    def to_y(value: float, axis: tuple[float, float]) -> float:
        return plot[3] - (value - axis[0]) / (axis[1] - axis[0]) * (plot[3] - plot[1])

    font = ui_font(font_px)
    # Grid and axes.
    for tick in y_ticks:
        y = to_y(tick, y_range)
        draw.line((plot[0], y, plot[2], y), fill=GRID_COLOUR)
        draw.text((plot[0] - 6, y), _fmt(tick), font=font, fill=MEAN_COLOUR, anchor="rm")
    for tick in x_ticks:
        x = to_x(tick)
        draw.line((x, plot[1], x, plot[3]), fill=GRID_COLOUR)
        draw.text((x, plot[3] + 6), _fmt(tick), font=font, fill=TEXT_COLOUR, anchor="mt")
    for tick in loss_ticks:
        draw.text((plot[2] + 6, to_y(tick, loss_range)), _fmt(tick), font=font, fill=LOSS_COLOUR, anchor="lm")
    draw.rectangle(plot, outline=AXIS_COLOUR, width=1)

    title = "Face similarity and loss by step" + (f" ({engine} engine)" if engine else "")
    draw.text((width / 2, font_px * 1.2), title, font=ui_font(font_px + 3), fill=TEXT_COLOUR, anchor="mm")
    if verdict:  # the latest checkpoint's verdict in words, under the title
        draw.text((width / 2, font_px * 2.7), verdict[:140], font=font, fill=TEXT_COLOUR, anchor="mm")
    draw.text((width / 2, height - font_px * 1.3), "step", font=font, fill=TEXT_COLOUR, anchor="mm")
    _vertical_text(image, "face similarity", (font_px * 1.2, (plot[1] + plot[3]) / 2), font_px, MEAN_COLOUR)
    if loss_ticks:
        _vertical_text(image, "loss", (width - font_px * 1.2, (plot[1] + plot[3]) / 2), font_px, LOSS_COLOUR)

    # Series: ceiling (dashed), loss (thin, right axis), max (dashed), mean (thick with markers).
    if ceiling is not None and math.isfinite(ceiling):
        y = to_y(ceiling, y_range)
        _dashed(draw, [(plot[0], y), (plot[2], y)], CEILING_COLOUR, 2, dash=10)
    if losses:
        loss_xy = [(to_x(s), to_y(v, loss_range)) for s, v in sorted(loss) if math.isfinite(v)]
        if len(loss_xy) > 1:
            draw.line(loss_xy, fill=LOSS_COLOUR, width=1)
        if len(loss_xy) <= 40:  # markers only while they stay readable
            for x, y in loss_xy:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=LOSS_COLOUR)
    ordered = sorted(points, key=lambda p: p.step)
    for segment in _segments([(p.step, p.max) for p in ordered]):
        xy = [(to_x(s), to_y(v, y_range)) for s, v in segment]
        if len(xy) > 1:
            _dashed(draw, xy, MAX_COLOUR, 2, dash=6)
        for x, y in xy:
            draw.rectangle((x - 3, y - 3, x + 3, y + 3), outline=MAX_COLOUR, width=2)
    for segment in _segments([(p.step, p.mean) for p in ordered]):
        xy = [(to_x(s), to_y(v, y_range)) for s, v in segment]
        if len(xy) > 1:
            draw.line(xy, fill=MEAN_COLOUR, width=3, joint="curve")
        for x, y in xy:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=MEAN_COLOUR)
    # The verdict of each checkpoint above its point: how many samples were recognised as the person.
    small = ui_font(max(10, font_px - 2))
    for p in ordered:
        if p.label:
            anchor_y = to_y(p.mean, y_range) if p.mean is not None else plot[3]
            draw.text((to_x(p.step), anchor_y - 10), p.label, font=small, fill=TEXT_COLOUR, anchor="mb")
    # Checkpoints without any face: a mark on the x axis, so the gap in the line is explained.
    for p in ordered:
        if p.mean is None:
            x = to_x(p.step)
            draw.line((x - 5, plot[3] - 5, x + 5, plot[3] + 5), fill=(120, 120, 120), width=2)
            draw.line((x - 5, plot[3] + 5, x + 5, plot[3] - 5), fill=(120, 120, 120), width=2)

    _legend(
        draw,
        plot,
        font,
        font_px,
        has_ceiling=ceiling is not None,
        has_loss=bool(losses),
        has_no_face=any(p.mean is None for p in points),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _segments(values: Sequence[tuple[int, float | None]]) -> list[list[tuple[int, float]]]:
    """Split a series at missing values so a checkpoint without faces shows as a gap, not as zero."""
    segments: list[list[tuple[int, float]]] = [[]]
    for step, value in values:
        if value is None or not math.isfinite(value):
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append((step, value))
    return [s for s in segments if s]


def _legend(
    draw: ImageDraw.ImageDraw,
    plot: tuple[int, int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    font_px: int,
    *,
    has_ceiling: bool,
    has_loss: bool,
    has_no_face: bool,
) -> None:
    entries: list[tuple[str, tuple[int, int, int], str]] = [
        ("similarity mean (samples with a face)", MEAN_COLOUR, "solid"),
        ("similarity max", MAX_COLOUR, "dashed"),
    ]
    if has_ceiling:
        entries.append(("ceiling (dataset's own photos)", CEILING_COLOUR, "dashed"))
    if has_loss:
        entries.append(("loss (right axis)", LOSS_COLOUR, "thin"))
    if has_no_face:
        entries.append(("no face in any sample", (120, 120, 120), "cross"))
    line_h = font_px + 6
    text_w = max(int(draw.textlength(label, font=font)) for label, _, _ in entries)
    x0, y0 = plot[0] + 10, plot[1] + 10
    box = (x0, y0, x0 + 44 + text_w + 10, y0 + len(entries) * line_h + 8)
    draw.rectangle(box, fill=(255, 255, 255), outline=(200, 200, 200))
    for number, (label, colour, style) in enumerate(entries):
        y = y0 + 4 + number * line_h + line_h / 2
        if style == "solid":
            draw.line((x0 + 6, y, x0 + 36, y), fill=colour, width=3)
        elif style == "dashed":
            _dashed(draw, [(x0 + 6, y), (x0 + 36, y)], colour, 2, dash=6)
        elif style == "thin":
            draw.line((x0 + 6, y, x0 + 36, y), fill=colour, width=1)
        else:
            draw.line((x0 + 16, y - 5, x0 + 26, y + 5), fill=colour, width=2)
            draw.line((x0 + 16, y + 5, x0 + 26, y - 5), fill=colour, width=2)
        draw.text((x0 + 44, y), label, font=font, fill=TEXT_COLOUR, anchor="lm")


def _dashed(
    draw: ImageDraw.ImageDraw,
    xy: Sequence[tuple[float, float]],
    colour: tuple[int, int, int],
    width: int,
    dash: int,
) -> None:
    """A dashed polyline: Pillow has none built in."""
    on = True
    remaining = float(dash)
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        length = math.hypot(x1 - x0, y1 - y0)
        position = 0.0
        while position < length:
            run = min(remaining, length - position)
            if on:
                t0, t1 = position / length, (position + run) / length
                draw.line(
                    (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0, x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1),
                    fill=colour,
                    width=width,
                )
            position += run
            remaining -= run
            if remaining <= 0:
                on = not on
                remaining = float(dash)


def _vertical_text(
    image: PILImage.Image, text: str, centre: tuple[float, float], px: int, colour: tuple[int, int, int]
) -> None:
    from PIL import Image, ImageDraw

    font = ui_font(px)
    probe = ImageDraw.Draw(image)
    w = int(probe.textlength(text, font=font)) + 4
    label = Image.new("RGBA", (w, px + 6), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2, 1), text, font=font, fill=(*colour, 255))
    rotated = label.rotate(90, expand=True)
    image.paste(rotated, (int(centre[0] - rotated.width / 2), int(centre[1] - rotated.height / 2)), rotated)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 and float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:g}"


