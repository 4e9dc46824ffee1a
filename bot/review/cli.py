"""``loraops grid IMAGE… --out FILE [--reference PATH…]``: a labelled (and scored) grid of local images.

Without ``--reference`` the images are laid out and labelled by file name; with it each is scored
against the identity of the reference photos and coloured like the review grids. Heavy imports stay
inside the handler so ``loraops --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


def register(subparsers: Any) -> None:
    """Add ``grid`` to the ``loraops`` parser."""
    grid = subparsers.add_parser(
        "grid",
        help="a labelled grid image of IMAGEs, scored against --reference photos if given",
        description=(
            "Lay IMAGEs (files or folders) out in one JPEG, each labelled with its name and, with "
            "--reference, "
            "its face similarity to the reference person (green/amber/red against the reference's ceiling). "
            "Put the images first, or end the reference list with --."
        ),
    )
    grid.add_argument("images", nargs="*", metavar="IMAGE", help="images or folders (searched recursively)")
    grid.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the JPEG")
    grid.add_argument(
        "--reference",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATH",
        help="photos or folders of the person to score against",
    )
    grid.add_argument(
        "--engine",
        choices=("auto", "insightface", "dlib"),
        default=None,
        help="face engine (default: FACE_ENGINE, auto)",
    )
    grid.add_argument(
        "--columns", type=int, default=None, metavar="N", help="images per row (default: square-ish)"
    )
    grid.add_argument("--cell", type=int, default=320, metavar="PX", help="cell size in pixels (default 320)")
    grid.add_argument(
        "--workers", type=int, default=None, help="face worker processes (default: one per core)"
    )
    grid.set_defaults(handler=_grid)


def _err(message: str) -> None:
    print(f"loraops: {message}", file=sys.stderr)


def _grid(args: argparse.Namespace) -> int:
    from bot.faces.service import image_files

    if not args.images:
        _err("no IMAGE given: put the images before --reference, or end the reference list with --")
        return EXIT_USAGE
    if args.columns is not None and args.columns < 1:
        _err("--columns must be at least 1")
        return EXIT_USAGE
    if args.cell < 64:
        _err("--cell must be at least 64")
        return EXIT_USAGE
    images = image_files(args.images)
    references = image_files(args.reference) if args.reference else []
    for path in [*images, *references]:
        if not path.is_file():
            _err(f"no such file: {path}")
            return EXIT_USAGE
    if not images:
        _err("no images found in the given paths")
        return EXIT_USAGE

    scores: list[Any] = [None] * len(images)
    if references:
        scored = _score(args, references, images)
        if scored is None:
            return EXIT_UNAVAILABLE
        scores = scored

    from bot.review.grid import GridCell, render_cells

    cells = [
        GridCell(image=path.read_bytes(), step=None, prompt_index=index, score=score, title=path.name)
        for index, (path, score) in enumerate(zip(images, scores, strict=True))
    ]
    rendered = render_cells(cells, columns=args.columns, cell_px=args.cell)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(rendered.data)
    for path, score in zip(images, scores, strict=True):
        if score is not None:
            value = "no face" if not score.face_found else f"{score.similarity:.3f}"
            pct = (
                f"  {score.percent_of_ceiling:.0f}% of ceiling"
                if score.percent_of_ceiling is not None
                else ""
            )
            print(f"{path.name}: {value}{pct}")
    print(f"wrote {args.out} ({rendered.width}x{rendered.height}, {len(rendered.data) / 1024:.0f} KiB)")
    return 0


def _score(args: argparse.Namespace, references: list[Path], images: list[Path]) -> list[Any] | None:
    from bot.config import SettingsError, load_settings
    from bot.faces.engines import FaceEngineUnavailableError, resolve_engine
    from bot.faces.report import build_report
    from bot.faces.service import analyse_sources

    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            _err(problem)
        return None
    try:
        spec, note = resolve_engine(args.engine or settings.face_engine, settings.face_models_dir)
        print(f"loraops: {note}", file=sys.stderr)
        # Samples skip the picture hash only deduplication needs (analyse_image(scoring=True)).
        analyses = analyse_sources(
            spec,
            [*references, *images],
            workers=args.workers,
            max_pixels=settings.max_image_pixels,
            scoring=[False] * len(references) + [True] * len(images),
        )
    except FaceEngineUnavailableError as exc:
        _err(str(exc))
        return None
    reference = build_report(
        analyses[: len(references)], phash_threshold=settings.phash_threshold
    ).reference()
    if reference is None:
        _err("no face found in the reference photos")
        return None
    return [reference.score(analysis) for analysis in analyses[len(references) :]]
