"""The progress chart (design §2 step 6): face similarity (mean and max) and loss against step, as a PNG.

Each checkpoint's point carries its verdict at a glance ("2/4": samples recognised as the person), and
the latest verdict in words sits under the title (see :mod:`bot.review.verdict`).

Drawn by matplotlib on its Agg canvas: a ``Figure`` of our own with no pyplot, so nothing global (the
backend, open figures, rcParams) is touched and two threads may draw at once. Similarity is on the left
axis with the identity ceiling as a dashed line; loss on the right axis. The chart is renewed at every
checkpoint; ``render_chart`` is synchronous CPU work (callers run it with ``asyncio.to_thread``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MEAN_COLOUR = "#1f77b4"
MAX_COLOUR = "#9467bd"
CEILING_COLOUR = "#2ea043"
LOSS_COLOUR = "#d62728"
NO_FACE_COLOUR = "#787878"
GRID_COLOUR = "#e1e1e1"
TEXT_COLOUR = "#1e1e1e"
_DPI = 100
_LOSS_MARKERS_UP_TO = 40  # loss points get markers only while they stay readable
_PX = 72 / _DPI  # one pixel in points: line widths and marker sizes below are the Pillow chart's pixels


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One checkpoint on the chart. ``mean``/``max`` are None when no face was found in its samples."""

    step: int
    mean: float | None
    max: float | None
    label: str | None = None  # the verdict at a glance, e.g. "1/4" (samples recognised) or "1/4 copy"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5, 5 × 10^k steps) from one at or below ``low`` to one
    at or above ``high``: the axes end on a labelled tick."""
    from matplotlib.ticker import MaxNLocator

    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("tick bounds must be finite")
    low, high = min(low, high), max(low, high)
    if high == low:
        high = low + (abs(low) or 1.0)
    ticks = [
        round(float(t), 10) for t in MaxNLocator(nbins=count, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
    ]
    first = max(i for i, t in enumerate(ticks) if t <= low)
    last = min(i for i, t in enumerate(ticks) if t >= high)
    return ticks[first : last + 1]


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
    # Imported here: `loraops --help` imports this module and must stay fast.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    font_pt = max(8.0, height / 40 * _PX)  # the Pillow chart's text height (a 40th of the picture)
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    # Fixed margins (not a layout engine): the plot stays put whether or not a verdict is shown.
    figure.subplots_adjust(left=0.08, right=0.92, top=0.86, bottom=0.11)
    ax = figure.add_subplot()
    ordered = sorted(points, key=lambda p: p.step)
    steps = [p.step for p in ordered]
    ceiling = ceiling if ceiling is not None and math.isfinite(ceiling) else None
    losses = sorted((s, v) for s, v in loss if math.isfinite(v))

    x_ticks = nice_ticks(0, max([*steps, *(s for s, _ in losses), total_steps or 0, 1]), 6)
    sims = [v for p in ordered for v in (p.mean, p.max) if v is not None and math.isfinite(v)]
    sims += [ceiling] if ceiling is not None else []
    y_ticks = nice_ticks(min([0.0, *sims]), max(sims) * 1.08 if sims else 1.0, 5)
    _axis(ax, x_ticks, y_ticks, font_pt, "face similarity", MEAN_COLOUR)
    ax.set_xlabel("step", fontsize=font_pt, color=TEXT_COLOUR)
    title = "Face similarity and loss by step" + (f" ({engine} engine)" if engine else "")
    figure.suptitle(title, y=0.975, fontsize=font_pt + 2, color=TEXT_COLOUR)
    if verdict:  # the latest checkpoint's verdict in words, under the title
        figure.text(0.5, 0.905, verdict[:140], ha="center", va="center", fontsize=font_pt, color=TEXT_COLOUR)

    # NaN where a checkpoint had no face: matplotlib leaves a gap in the line there, not a zero.
    legend = [
        *ax.plot(
            steps,
            [_or_nan(p.mean) for p in ordered],
            color=MEAN_COLOUR,
            linewidth=3 * _PX,
            marker="o",
            markersize=9 * _PX,
            zorder=4,
            label="similarity mean (samples with a face)",
        ),
        *ax.plot(
            steps,
            [_or_nan(p.max) for p in ordered],
            color=MAX_COLOUR,
            linewidth=2 * _PX,
            linestyle=(0, (4, 4)),
            marker="s",
            markersize=7 * _PX,
            markerfacecolor="none",
            markeredgewidth=2 * _PX,
            zorder=3,
            label="similarity max",
        ),
    ]
    if ceiling is not None:
        legend.append(
            ax.axhline(
                ceiling,
                color=CEILING_COLOUR,
                linewidth=2 * _PX,
                linestyle=(0, (7, 7)),
                label="ceiling (dataset's own photos)",
            )
        )
    top = ax
    if losses:
        top = ax.twinx()
        values = [v for _, v in losses]
        loss_ticks = nice_ticks(min(0.0, *values), max(0.0, *values) * 1.08, 5)
        _axis(top, x_ticks, loss_ticks, font_pt, "loss", LOSS_COLOUR, grid=False)
        legend += top.plot(
            [s for s, _ in losses],
            values,
            color=LOSS_COLOUR,
            linewidth=_PX,
            markersize=4 * _PX,
            marker="o" if len(losses) <= _LOSS_MARKERS_UP_TO else None,
            label="loss (right axis)",
        )
    no_face = [p.step for p in ordered if p.mean is None]
    if no_face:  # a cross on the x axis, so the gap in the line is explained
        legend += ax.plot(
            no_face,
            [y_ticks[0]] * len(no_face),
            linestyle="none",
            marker="x",
            markersize=10 * _PX,
            markeredgewidth=2 * _PX,
            color=NO_FACE_COLOUR,
            clip_on=False,
            zorder=5,
            label="no face in any sample",
        )
    # The verdict of each checkpoint above its point: how many samples were recognised as the person.
    for p in ordered:
        if p.label:
            at = p.mean if p.mean is not None else y_ticks[0]
            ax.annotate(
                p.label,
                (p.step, at),
                xytext=(0, 10 * _PX),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=font_pt - 1,
                color=TEXT_COLOUR,
                annotation_clip=False,
            )
    # On the topmost axes, so no line of either axis is drawn over it.
    top.legend(
        handles=legend,
        loc="upper left",
        fontsize=font_pt,
        framealpha=1.0,
        edgecolor="#c8c8c8",
        fancybox=False,
    )

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _axis(
    ax: Axes,
    x_ticks: list[float],
    y_ticks: list[float],
    font_pt: float,
    label: str,
    colour: str,
    grid: bool = True,
) -> None:
    """Limits and ticks from :func:`nice_ticks` (the axes end on a round value); the y axis in ``colour``."""
    ax.set_xlim(x_ticks[0], x_ticks[-1])
    ax.set_xticks(x_ticks, [_fmt(t) for t in x_ticks])
    ax.set_ylim(y_ticks[0], y_ticks[-1])
    ax.set_yticks(y_ticks, [_fmt(t) for t in y_ticks])
    ax.set_ylabel(label, fontsize=font_pt, color=colour)
    ax.tick_params(labelsize=font_pt, colors=TEXT_COLOUR)
    ax.tick_params(axis="y", labelcolor=colour)
    if grid:
        ax.grid(True, color=GRID_COLOUR, linewidth=_PX)
    ax.set_axisbelow(True)


def _or_nan(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan


def _fmt(value: Any) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 and float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:g}"
