"""Grids (JPEG within Discord's 10 MiB, labelled and coloured cells) and the similarity/loss chart (PNG)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from bot.review.chart import ChartPoint, nice_ticks, render_chart
from bot.review.grid import (
    BAND_COLOURS,
    DISCORD_FILE_LIMIT,
    Band,
    GridCell,
    GridRow,
    band_for_pct,
    band_for_score,
    cell_label,
    likeness_pct,
    render_cells,
    render_grid,
    render_row,
)
from bot.review.scoring import SampleScore, aggregate

from ._helpers import blank, photo

ENGINE = "insightface-buffalo_l"  # strangers score about 0: bands are plain percentages of the ceiling


def _score(pct: float | None, ceiling: float = 0.8) -> SampleScore:
    if pct is None:
        return SampleScore(ENGINE, False, None, None, None)
    return SampleScore(ENGINE, True, ceiling * pct / 100, pct, pct >= 50)


def _noise(side: int, seed: int) -> bytes:
    """Incompressible pixels: the worst case for JPEG size."""
    image = Image.frombytes(
        "RGB", (side, side), os.urandom(side * side * 3) if seed < 0 else _bytes(side, seed)
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _bytes(side: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(side * side * 3)


def test_bands_against_the_ceiling() -> None:
    assert band_for_pct(49.9) is Band.LOW
    assert band_for_pct(50) is Band.MID
    assert band_for_pct(79.9) is Band.MID
    assert band_for_pct(80) is Band.HIGH
    assert band_for_pct(None) is Band.UNSCORED
    assert band_for_score(_score(None)) is Band.NO_FACE
    assert band_for_score(None) is Band.UNSCORED
    assert band_for_score(_score(85)) is Band.HIGH


def test_dlib_bands_account_for_its_compressed_scale() -> None:
    # A stranger on dlib scores ~0.83 against a 0.97 ceiling: 86 % of the ceiling, but no likeness at all.
    stranger = SampleScore("dlib-resnet128-v1", True, 0.83, 100 * 0.83 / 0.97, False)
    same = SampleScore("dlib-resnet128-v1", True, 0.975, 100 * 0.975 / 0.97, True)
    assert band_for_score(stranger) is Band.LOW
    assert band_for_score(same) is Band.HIGH
    assert likeness_pct(0.84, 0.97, "dlib-resnet128-v1") == pytest.approx(0.0)
    assert likeness_pct(0.4, 0.8, ENGINE) == pytest.approx(50.0)


def test_cell_labels_show_step_prompt_and_score() -> None:
    # ✓: recognised as the person (the engine's same-person threshold, 0.40 for ArcFace).
    assert cell_label(GridCell(b"x", 1500, 1, _score(75))) == (
        "step 1500 · prompt 2",
        "0.600  75% of ceiling  ✓",
    )
    assert cell_label(GridCell(b"x", 1500, 1, _score(40)))[1] == "0.320  40% of ceiling"
    # At or above the dataset's ceiling reads as such, never "101%"; 99.6 is not rounded up to "100%".
    assert cell_label(GridCell(b"x", 1500, 1, _score(101)))[1] == "0.808  at ceiling  ✓"
    assert cell_label(GridCell(b"x", 1500, 1, _score(99.6)))[1] == "0.797  99% of ceiling  ✓"
    # A sample that copies a training photo (face and picture) says which.
    assert (
        cell_label(GridCell(b"x", 1500, 1, _score(101), copy_of=3))[1] == "COPY of #3 · 0.808  at ceiling  ✓"
    )
    assert cell_label(GridCell(b"x", 1500, 0, _score(None)))[1] == "NO FACE"
    assert cell_label(GridCell(None, 1500, 0, None))[1] == "missing sample"
    assert cell_label(GridCell(b"x", None, 0, None, title="a.png")) == ("a.png", "not scored")


def test_row_cells_are_coloured_by_band(faces_dir: Path) -> None:
    image = photo(faces_dir, "obama/obama_small.jpg", side=256)
    cells = [
        GridCell(image, 500, i, s) for i, s in enumerate([_score(90), _score(65), _score(20), _score(None)])
    ]
    row = render_row(cells, cell_px=256)
    assert row.format == "JPEG" and row.data[:3] == b"\xff\xd8\xff"
    decoded = Image.open(io.BytesIO(row.data)).convert("RGB")
    assert decoded.size == (row.width, row.height) == (4 * 256, row.height)
    for column, band in enumerate([Band.HIGH, Band.MID, Band.LOW, Band.NO_FACE]):
        # the middle of the label bar, under the picture, left of the text
        pixel = decoded.getpixel((column * 256 + 2, row.height - 3))
        expected = BAND_COLOURS[band][0]
        assert all(abs(a - b) < 40 for a, b in zip(pixel, expected, strict=True)), (band, pixel)  # type: ignore[arg-type]


def test_full_grid_geometry_and_header(faces_dir: Path) -> None:
    images = [photo(faces_dir, "obama/obama_small.jpg", side=200), blank()]
    rows = [
        GridRow(
            step,
            [GridCell(images[p % 2], step, p, _score(30 + step / 50)) for p in range(4)],
            summary=aggregate([_score(30 + step / 50)] * 4),
            ceiling=0.8,
        )
        for step in (250, 500, 750)
    ]
    grid = render_grid(rows, cell_px=200, best_step=500)
    decoded = Image.open(io.BytesIO(grid.data))
    assert decoded.format == "JPEG" and decoded.size == (grid.width, grid.height)
    assert grid.cell_px == 200
    assert grid.width > 4 * 200  # the checkpoint column sits left of the four prompt columns
    assert grid.height > 3 * 200  # three rows plus a header
    assert len(grid.data) <= DISCORD_FILE_LIMIT


def test_grids_shrink_to_fit_the_size_limit() -> None:
    cells = [GridCell(_noise(512, seed), 100 * seed, seed % 4, _score(70)) for seed in range(8)]
    rows = [GridRow(step, cells[i * 4 : i * 4 + 4]) for i, step in enumerate((100, 200))]
    roomy = render_grid(rows, cell_px=512)
    limit = len(roomy.data) // 3
    tight = render_grid(rows, cell_px=512, max_bytes=limit)
    assert len(tight.data) <= limit
    assert tight.cell_px < 512 and tight.width < roomy.width
    Image.open(io.BytesIO(tight.data)).verify()


def test_a_big_run_stays_within_discord_limits() -> None:
    # 20 checkpoints × 4 prompts of incompressible 400 px samples (real samples compress far better)
    cells = [GridCell(_noise(400, s), None, s % 4, _score(60)) for s in range(4)]
    rows = [GridRow(step * 100, cells) for step in range(1, 21)]
    grid = render_grid(rows, cell_px=400)
    assert len(grid.data) <= DISCORD_FILE_LIMIT
    assert max(grid.width, grid.height) <= 16_000


def test_unreadable_and_missing_samples_still_render() -> None:
    row = render_row([GridCell(b"garbage", 100, 0, None), None, GridCell(None, 100, 2, None)], cell_px=128)
    assert Image.open(io.BytesIO(row.data)).size == (3 * 128, row.height)


def test_loose_images_layout() -> None:
    cells = [GridCell(blank(side=64), None, i, None, title=f"{i}.png") for i in range(5)]
    grid = render_cells(cells, cell_px=100)
    assert grid.width == 3 * 100  # ceil(sqrt(5)) columns
    assert render_cells(cells, columns=5, cell_px=100).width == 500


def test_chart_is_a_png_with_readable_axes() -> None:
    points = [ChartPoint(s, 0.3 + s / 10_000, 0.4 + s / 10_000) for s in range(250, 2001, 250)]
    points.append(ChartPoint(2250, None, None))  # no face at this checkpoint: a gap, not a zero
    png = render_chart(
        points,
        ceiling=0.72,
        loss=[(s, 0.1 - s / 50_000) for s in range(50, 2251, 50)],
        engine="dlib-resnet128-v1",
        total_steps=2500,
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1000, 560)
    assert render_chart([], ceiling=None)[:8] == b"\x89PNG\r\n\x1a\n"  # before the first checkpoint


def test_nice_ticks() -> None:
    assert nice_ticks(0, 2500, 6) == [0, 500, 1000, 1500, 2000, 2500]
    assert nice_ticks(0, 0.9, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = nice_ticks(0.13, 0.14, 5)
    assert ticks[0] <= 0.13 and ticks[-1] >= 0.14
    assert nice_ticks(1, 1) == [1.0, 1.5, 2.0] or nice_ticks(1, 1)[0] <= 1


def test_chart_shows_each_checkpoints_verdict_and_the_latest_in_words() -> None:
    import numpy as np

    plain = [ChartPoint(s, 0.85 + s / 10_000, 0.9) for s in (100, 200, 300)]
    labelled = [ChartPoint(p.step, p.mean, p.max, f"{i}/4") for i, p in enumerate(plain)]
    base = np.asarray(Image.open(io.BytesIO(render_chart(plain, ceiling=0.96))).convert("L"), dtype=np.int16)
    marked = np.asarray(
        Image.open(io.BytesIO(render_chart(labelled, ceiling=0.96))).convert("L"), dtype=np.int16
    )
    worded = np.asarray(
        Image.open(
            io.BytesIO(render_chart(plain, ceiling=0.96, verdict="step 300: recognised as elena in 2 of 4"))
        ).convert("L"),
        dtype=np.int16,
    )
    # The labels sit above the points (inside the plot); the words under the title (above the plot).
    label_rows = np.nonzero(np.abs(marked - base).sum(axis=1))[0]
    word_rows = np.nonzero(np.abs(worded - base).sum(axis=1))[0]
    assert label_rows.size and word_rows.size
    assert word_rows.max() < 560 * 0.2 < label_rows.min()
