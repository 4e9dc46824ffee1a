"""Sample grids (design §2 step 6): one row per checkpoint, one column per prompt, every cell scored.

Every cell carries a label bar with the step, the prompt number and the face score, coloured against
the identity ceiling (red below 50 %, amber below 80 %, green from 80 %; grey and crossed out: "NO FACE").
The bands measure likeness between a stranger's typical similarity and the ceiling (``likeness_pct``), so
they read the same for every engine; the label shows the raw similarity and its percentage of the ceiling.
The row image is posted as each checkpoint arrives; the full grid (checkpoints × prompts, with a header row of
prompt numbers and a column of per-checkpoint means) is posted at the end.

Output is JPEG and always fits Discord's 10 MiB per file: quality is lowered first, then the cells are
downscaled until it fits. These functions are synchronous CPU work: async callers wrap them with
``asyncio.to_thread``. Prompt numbers are shown 1-based ("prompt 1" is ``prompt_index`` 0, the first
line of the prompts file).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from bot.discord_limits import DISCORD_FILE_LIMIT
from bot.fonts import ui_font
from bot.review.scoring import CheckpointScore, SampleScore

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from PIL import ImageDraw

# Stay a little under Discord's file limit: the multipart envelope is not counted, but being exactly at
# the edge buys nothing.
DEFAULT_MAX_BYTES = DISCORD_FILE_LIMIT - 64 * 1024
# Far beyond anything useful on screen, well inside JPEG's 65 535 px limit.
MAX_SIDE_PX = 16_000
MIN_CELL_PX = 64

LOW_PCT = 50.0
HIGH_PCT = 80.0


class Band(StrEnum):
    """How a score reads against the ceiling."""

    HIGH = "high"  # ≥ 80 % of ceiling
    MID = "mid"  # 50–80 %
    LOW = "low"  # < 50 %
    NO_FACE = "no_face"
    UNSCORED = "unscored"  # no reference to score against
    MISSING = "missing"  # no sample image


# Background and text colour of the label bar per band.
BAND_COLOURS: dict[Band, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    Band.HIGH: ((46, 160, 67), (255, 255, 255)),
    Band.MID: ((240, 173, 0), (20, 20, 20)),
    Band.LOW: ((206, 44, 44), (255, 255, 255)),
    Band.NO_FACE: ((70, 70, 70), (255, 255, 255)),
    Band.UNSCORED: ((40, 40, 48), (230, 230, 230)),
    Band.MISSING: ((40, 40, 48), (160, 160, 160)),
}
BACKGROUND = (24, 24, 28)
HEADER_TEXT = (235, 235, 235)
BEST_COLOUR = (255, 215, 0)


def band_for_pct(pct: float | None, *, low: float = LOW_PCT, high: float = HIGH_PCT) -> Band:
    """The band of a percentage of the ceiling (None means unscored)."""
    if pct is None:
        return Band.UNSCORED
    if pct >= high:
        return Band.HIGH
    if pct >= low:
        return Band.MID
    return Band.LOW


# The similarity two *different* people reach on average, per engine family. The colour bands measure
# likeness between that floor and the ceiling, so they mean the same for every engine: dlib's cosine is
# compressed (strangers score 0.73-0.91, mean 0.84, in benchmarks/faces calibration on testdata/faces,
# i.e. about 85 % of a typical 0.97 ceiling), ArcFace's is not (strangers about -0.1 to 0.25, mean ~0).
CHANCE_SIMILARITY: dict[str, float] = {"dlib": 0.84, "insightface": 0.0}


def likeness_pct(similarity: float | None, ceiling: float | None, engine: str | None) -> float | None:
    """Where ``similarity`` sits between a stranger (0 %) and the person's own photos (100 % = ceiling).

    For engines whose strangers score about 0 this equals the percentage of the ceiling.
    """
    if similarity is None or ceiling is None:
        return None
    floor = CHANCE_SIMILARITY.get((engine or "").split("-", 1)[0], 0.0)
    if ceiling <= floor:
        return None
    return 100.0 * (similarity - floor) / (ceiling - floor)


def band_for_score(score: SampleScore | None) -> Band:
    """The band of one sample's score (engine-aware: see ``likeness_pct``)."""
    if score is None:
        return Band.UNSCORED
    if not score.face_found or score.similarity is None:
        return Band.NO_FACE
    pct = score.percent_of_ceiling
    if pct is None or pct == 0:
        return band_for_pct(pct)
    # The score carries the ratio, not the ceiling: recover the ceiling from the two.
    return band_for_pct(likeness_pct(score.similarity, 100.0 * score.similarity / pct, score.engine))


@dataclass(frozen=True, slots=True)
class GridCell:
    """One sample in a grid: its encoded image bytes (None if missing), where it belongs, and its score.

    ``title`` replaces the "step N · prompt M" line (the ``loraops grid`` command labels by file name).
    """

    image: bytes | None
    step: int | None
    prompt_index: int
    score: SampleScore | None = None
    title: str | None = None
    copy_of: int | None = None  # the training photo (its number) this sample copies, face and picture


@dataclass(frozen=True, slots=True)
class GridRow:
    """One checkpoint's row in the full grid: its samples in prompt order and, if scored, its aggregate."""

    step: int | None
    cells: Sequence[GridCell | None]
    summary: CheckpointScore | None = None
    ceiling: float | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedImage:
    """Encoded image bytes with their geometry (the cog attaches ``data`` as ``filename``)."""

    data: bytes
    width: int
    height: int
    cell_px: int
    quality: int
    format: str = "JPEG"

    @property
    def mime_type(self) -> str:
        return "image/png" if self.format == "PNG" else "image/jpeg"


def cell_label(cell: GridCell) -> tuple[str, str]:
    """The two label lines of a cell: where it is, and what it scored."""
    where = cell.title if cell.title is not None else _where(cell.step, cell.prompt_index)
    score = cell.score
    if cell.image is None:
        what = "missing sample"
    elif score is None:
        what = "not scored"
    elif not score.face_found or score.similarity is None:
        what = "NO FACE"
    elif score.percent_of_ceiling is None:
        what = f"{score.similarity:.3f}"
    else:
        from bot.review.verdict import is_recognised, likeness_short

        ceiling = 100.0 * score.similarity / score.percent_of_ceiling if score.percent_of_ceiling else None
        mark = "  ✓" if is_recognised(score.similarity, score.engine) else ""
        what = f"{score.similarity:.3f}  {likeness_short(score.similarity, ceiling, score.engine)}{mark}"
    if cell.copy_of is not None and cell.image is not None:
        what = f"COPY of #{cell.copy_of} · {what}"
    return where, what


def _where(step: int | None, prompt_index: int) -> str:
    prompt = f"prompt {prompt_index + 1}"
    return prompt if step is None else f"step {step} · {prompt}"


def render_row(
    cells: Sequence[GridCell | None],
    *,
    cell_px: int = 384,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RenderedImage:
    """One checkpoint's samples side by side, each labelled and coloured (JPEG, under ``max_bytes``)."""
    if not cells:
        raise ValueError("a grid row needs at least one cell")
    return _fit(
        lambda px: _draw_rows([GridRow(step=None, cells=cells)], px, header=False, side=False),
        cell_px,
        max_bytes,
        columns=len(cells),
        rows=1,
    )


def render_grid(
    rows: Sequence[GridRow],
    *,
    cell_px: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    best_step: int | None = None,
) -> RenderedImage:
    """The full grid: checkpoints × prompts, a header row of prompt numbers and a column of checkpoint scores.

    ``best_step`` outlines that checkpoint's row. JPEG, under ``max_bytes`` (cells shrink to fit).
    """
    if not rows:
        raise ValueError("a grid needs at least one row")
    columns = max(len(row.cells) for row in rows)
    if columns == 0:
        raise ValueError("a grid needs at least one column")
    return _fit(
        lambda px: _draw_rows(rows, px, header=True, side=True, best_step=best_step),
        cell_px,
        max_bytes,
        columns=columns + 1,  # the side column is about one cell wide at most
        rows=len(rows) + 1,
    )


def render_cells(
    cells: Sequence[GridCell],
    *,
    columns: int | None = None,
    cell_px: int = 320,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RenderedImage:
    """Loose images (not checkpoint × prompt) in a roughly square grid, each labelled and scored."""
    if not cells:
        raise ValueError("no images to lay out")
    columns = columns or math.ceil(math.sqrt(len(cells)))
    rows = [
        GridRow(step=None, cells=list(cells[start : start + columns]))
        for start in range(0, len(cells), columns)
    ]
    return _fit(
        lambda px: _draw_rows(rows, px, header=False, side=False),
        cell_px,
        max_bytes,
        columns=columns,
        rows=len(rows),
    )


# --- layout and drawing -------------------------------------------------------------------------------


def _fit(
    draw: Callable[[int], PILImage.Image], cell_px: int, max_bytes: int, *, columns: int, rows: int
) -> RenderedImage:
    """Draw at ``cell_px``, encode, and shrink quality then cells until the JPEG fits ``max_bytes``."""
    # Keep the canvas within MAX_SIDE_PX before drawing anything.
    cell_px = max(MIN_CELL_PX, min(cell_px, MAX_SIDE_PX // max(columns, 1), MAX_SIDE_PX // max(rows, 1)))
    while True:
        canvas = draw(cell_px)
        for quality in (88, 78, 65):
            data = _encode_jpeg(canvas, quality)
            if len(data) <= max_bytes:
                return RenderedImage(data, canvas.width, canvas.height, cell_px, quality)
            if len(data) > 2 * max_bytes:
                break  # lower quality will not halve it: shrink the cells instead
        if cell_px <= MIN_CELL_PX:
            raise ValueError(f"cannot fit the grid into {max_bytes} bytes even with {MIN_CELL_PX}px cells")
        # JPEG size grows roughly with the pixel count: shrink the side by the square root of the excess.
        cell_px = max(MIN_CELL_PX, int(cell_px * math.sqrt(max_bytes / len(data)) * 0.92))


def _encode_jpeg(canvas: PILImage.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    # optimize (Huffman tables) is cheap; progressive costs 4× the time for ~1 % and is left out.
    canvas.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _metrics(cell_px: int) -> tuple[int, int, int]:
    """Font size, label bar height and border width for a cell size."""
    font_px = max(9, cell_px // 20)
    bar = int(font_px * 2.7) + 4
    border = max(2, cell_px // 96)
    return font_px, bar, border


def _draw_rows(
    rows: Sequence[GridRow], cell_px: int, *, header: bool, side: bool, best_step: int | None = None
) -> PILImage.Image:
    from PIL import Image, ImageDraw

    font_px, bar, _ = _metrics(cell_px)
    columns = max(len(row.cells) for row in rows)
    cell_h = cell_px + bar
    # A gap between rows leaves room for the best row's outline without covering any label.
    gap = max(3, cell_px // 48) if best_step is not None else 0
    header_h = int(font_px * 2.2) if header else 0
    side_w = max(cell_px * 2 // 3, font_px * 9) if side else 0
    width = side_w + columns * cell_px + gap
    height = header_h + gap + len(rows) * (cell_h + gap)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    if header:
        for column in range(columns):
            x = side_w + column * cell_px
            _text_centered(draw, (x, 0, x + cell_px, header_h), f"prompt {column + 1}", font_px, HEADER_TEXT)
        if side:
            _text_centered(draw, (0, 0, side_w, header_h), "checkpoint", font_px, HEADER_TEXT)

    for row_number, row in enumerate(rows):
        y = header_h + gap + row_number * (cell_h + gap)
        is_best = best_step is not None and row.step == best_step
        if side:
            _draw_side(draw, row, (gap, y, side_w, y + cell_h), font_px, best=is_best)
        for column, cell in enumerate(row.cells):
            x = side_w + column * cell_px
            if cell is None:
                cell = GridCell(image=None, step=row.step, prompt_index=column)
            _draw_cell(canvas, draw, cell, x, y, cell_px)
        if is_best:
            draw.rectangle((0, y - gap, width - 1, y + cell_h + gap - 1), outline=BEST_COLOUR, width=gap)
    return canvas


def _draw_cell(
    canvas: PILImage.Image, draw: ImageDraw.ImageDraw, cell: GridCell, x: int, y: int, cell_px: int
) -> None:
    font_px, bar, border = _metrics(cell_px)
    band = Band.MISSING if cell.image is None else band_for_score(cell.score)
    bar_colour, text_colour = BAND_COLOURS[band]
    inner = cell_px - 2 * border
    thumbnail = _thumbnail(cell.image, inner) if cell.image is not None else None
    if thumbnail is not None:
        # Centre the picture in its square so portrait and landscape samples line up.
        canvas.paste(
            thumbnail,
            (x + border + (inner - thumbnail.width) // 2, y + border + (inner - thumbnail.height) // 2),
        )
    else:
        message = "missing" if cell.image is None else "unreadable"
        _text_centered(draw, (x, y, x + cell_px, y + cell_px), message, font_px, (150, 150, 150))
    # A frame in the band colour so the verdict is visible even when the image is viewed small.
    draw.rectangle((x, y, x + cell_px - 1, y + cell_px + bar - 1), outline=bar_colour, width=border)
    if band is Band.NO_FACE:
        # "No face" must not be mistaken for a low score: cross the picture out as well.
        draw.line(
            (x + border, y + border, x + cell_px - border, y + cell_px - border),
            fill=bar_colour,
            width=border,
        )
        draw.line(
            (x + cell_px - border, y + border, x + border, y + cell_px - border),
            fill=bar_colour,
            width=border,
        )
    draw.rectangle((x, y + cell_px, x + cell_px - 1, y + cell_px + bar - 1), fill=bar_colour)
    first, second = cell_label(cell)
    pad = max(3, font_px // 3)
    _text_left(draw, (x + pad, y + cell_px + pad // 2), first, font_px, text_colour, cell_px - 2 * pad)
    _text_left(
        draw, (x + pad, y + cell_px + pad // 2 + font_px + 2), second, font_px, text_colour, cell_px - 2 * pad
    )


def _draw_side(
    draw: ImageDraw.ImageDraw,
    row: GridRow,
    box: tuple[int, int, int, int],
    font_px: int,
    *,
    best: bool = False,
) -> None:
    x0, y0, x1, _ = box
    summary = row.summary
    pct = summary.pct(row.ceiling) if summary is not None else None
    if summary is None:
        band = Band.UNSCORED
    elif summary.mean is None:
        band = Band.NO_FACE
    else:
        band = band_for_pct(likeness_pct(summary.mean, row.ceiling, summary.engine))
    colour, _ = BAND_COLOURS[band]
    lines = [row.title or (f"step {row.step}" if row.step is not None else "")]
    if summary is not None:
        if summary.mean is None:
            lines.append("no face")
        else:
            lines.append(f"mean {summary.mean:.3f}")
            if pct is not None:
                from bot.review.verdict import likeness_short

                lines.append(likeness_short(summary.mean, row.ceiling, summary.engine))
        lines.append(f"faces {summary.faces}/{summary.samples}")
        if summary.engine is not None and summary.recognised is not None:
            lines.append(f"recognised {summary.recognised}/{summary.samples}")
    if best:
        lines.append("BEST")
    pad = max(4, font_px // 2)
    draw.rectangle(
        (x0 + 2, y0 + pad, x0 + 2 + max(4, font_px // 3), y0 + pad + len(lines) * (font_px + 4)), fill=colour
    )
    for number, line in enumerate(lines):
        _text_left(
            draw,
            (x0 + pad + font_px // 2, y0 + pad + number * (font_px + 4)),
            line,
            font_px,
            HEADER_TEXT,
            x1 - x0 - 2 * pad - font_px // 2,
        )


def _thumbnail(data: bytes, side: int) -> PILImage.Image | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            # draft() lets the JPEG decoder skip to a smaller scale: much faster for big samples.
            opened.draft("RGB", (side, side))
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    image.thumbnail((side, side))  # bicubic with a reducing gap: 3× faster than Lanczos, same look
    return image


def _fitting(draw: ImageDraw.ImageDraw, text: str, px: int, max_width: int) -> tuple[str, int]:
    """Shrink the font (down to 70 %) and then cut the text with an ellipsis so it fits ``max_width``."""
    size = px
    while size > max(8, int(px * 0.7)) and draw.textlength(text, font=ui_font(size)) > max_width:
        size -= 1
    font = ui_font(size)
    if draw.textlength(text, font=font) <= max_width:
        return text, size
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…", size


def _text_left(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    text: str,
    px: int,
    fill: tuple[int, int, int],
    max_width: int,
) -> None:
    text, size = _fitting(draw, text, px, max_width)
    draw.text(at, text, font=ui_font(size), fill=fill)


def _text_centered(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, px: int, fill: tuple[int, int, int]
) -> None:
    x0, y0, x1, y1 = box
    text, size = _fitting(draw, text, px, x1 - x0 - 4)
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=ui_font(size), fill=fill, anchor="mm")
