"""``loraops curate | score | faces fetch-models``: face work on local files.

Heavy imports (dlib, insightface, Pillow) stay inside the handlers so ``loraops --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bot.cli_progress import counting, downloading

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


def register(subparsers: Any) -> None:
    """Add the face commands to the ``loraops`` parser."""
    engines = ("auto", "insightface", "dlib")

    curate = subparsers.add_parser(
        "curate",
        help="face report for local photos: faces, size, sharpness, identity, flags, advice",
        description="Analyse the photos of one person for an identity LoRA and say what the set lacks.",
    )
    curate.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)"
    )
    curate.add_argument(
        "--engine", choices=engines, default=None, help="face engine (default: FACE_ENGINE, auto)"
    )
    curate.add_argument(
        "--crops", type=Path, metavar="DIR", help="write a face-centred square crop per face here"
    )
    curate.add_argument(
        "--crop-size", type=int, default=1024, metavar="PX", help="crop resolution (default 1024)"
    )
    curate.add_argument(
        "--crop-margin",
        type=float,
        default=1.0,
        metavar="M",
        help="space around the face box on each side, in face sizes (default 1.0)",
    )
    curate.add_argument("--sheet", type=Path, metavar="FILE", help="also write the report card (JPEG) here")
    curate.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    curate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    curate.set_defaults(handler=_curate)

    score = subparsers.add_parser(
        "score",
        help="face similarity of images to a reference set",
        description=(
            "Score IMAGEs (e.g. ComfyUI outputs) against the identity of the --reference photos. Put the "
            "images first, or end the reference list with --: loraops score --reference refs/ -- out/*.png"
        ),
    )
    score.add_argument(
        "--reference",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help="reference photos or folders of the person",
    )
    score.add_argument("images", nargs="*", metavar="IMAGE", help="images or folders to score")
    score.add_argument(
        "--engine", choices=engines, default=None, help="face engine (default: FACE_ENGINE, auto)"
    )
    score.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    score.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    score.set_defaults(handler=_score)

    faces = subparsers.add_parser("faces", help="face engine maintenance")
    faces_sub = faces.add_subparsers(dest="faces_command", metavar="COMMAND")
    fetch = faces_sub.add_parser(
        "fetch-models",
        help="download insightface buffalo_l (non-commercial research licence) into FACE_MODELS_DIR",
    )
    fetch.add_argument("--dir", type=Path, default=None, help="target directory (default: FACE_MODELS_DIR)")
    fetch.add_argument("--url", default=None, help="download from this mirror instead of GitHub")
    fetch.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    fetch.set_defaults(handler=_fetch_models)
    faces.set_defaults(handler=lambda _args: (faces.print_help(), EXIT_USAGE)[1])


def _err(message: str) -> None:
    print(f"loraops: {message}", file=sys.stderr)


def _settings() -> Any | None:
    from bot.config import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            _err(problem)
        return None


def _resolve(args: argparse.Namespace, settings: Any) -> Any | None:
    from bot.faces.engines import FaceEngineUnavailableError, resolve_engine

    try:
        spec, note = resolve_engine(args.engine or settings.face_engine, settings.face_models_dir)
    except FaceEngineUnavailableError as exc:
        _err(str(exc))
        return None
    print(f"loraops: {note}", file=sys.stderr)
    return spec


def _analyse(
    spec: Any,
    paths: list[Path],
    args: argparse.Namespace,
    settings: Any,
    verb: str,
    *,
    scoring: bool | list[bool] = False,
) -> list[Any] | None:
    from bot.faces.engines import FaceEngineUnavailableError
    from bot.faces.service import analyse_sources

    try:
        return analyse_sources(
            spec,
            paths,
            workers=args.workers,
            progress=counting(verb, quiet=args.json),
            max_pixels=settings.max_image_pixels,
            scoring=scoring,
        )
    except FaceEngineUnavailableError as exc:
        _err(str(exc))
        return None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _curate(args: argparse.Namespace) -> int:
    from bot.faces.service import image_files

    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    paths = image_files(args.paths)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        _err(f"no such file: {missing[0]}")
        return EXIT_USAGE
    if not paths:
        _err("no images found in the given paths")
        return EXIT_USAGE
    if args.crop_size < 64 or args.crop_margin < 0:
        _err("--crop-size must be at least 64 and --crop-margin at least 0")
        return EXIT_USAGE
    spec = _resolve(args, settings)
    if spec is None:
        return EXIT_UNAVAILABLE
    analyses = _analyse(spec, paths, args, settings, "analysed")
    if analyses is None:
        return EXIT_UNAVAILABLE

    from bot.faces.report import build_report

    report = build_report(analyses, phash_threshold=settings.phash_threshold, threads=2)
    payload = report.to_json()
    if args.crops:
        _write_crops(report, paths, args, payload)
    if args.sheet:
        from bot.faces.sheet import render_report_card

        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        args.sheet.write_bytes(render_report_card(report, paths, title="loraops curate"))
        payload["sheet"] = str(args.sheet)
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    _print_curate_table(payload)
    return 0


def _write_crops(report: Any, paths: list[Path], args: argparse.Namespace, payload: dict[str, Any]) -> None:
    from bot.faces.crops import make_face_crop

    args.crops.mkdir(parents=True, exist_ok=True)
    for item, path, entry in zip(report.images, paths, payload["images"], strict=True):
        if item.face is None:
            entry["crop"] = None
            continue
        crop = make_face_crop(path, item.face, margin=args.crop_margin, size=args.crop_size)
        out = args.crops / f"{path.stem}_face.jpg"
        suffix = 1
        while out.exists() and out.read_bytes() != crop.jpeg:  # two inputs with the same name
            suffix += 1
            out = args.crops / f"{path.stem}_face{suffix}.jpg"
        out.write_bytes(crop.jpeg)
        entry["crop"] = {"path": str(out), "box": list(crop.box), "upscaled": crop.upscaled}
        if crop.upscaled:
            entry["flags"].append("crop_upscaled")


def _print_curate_table(payload: dict[str, Any]) -> None:
    rows = payload["images"]
    width = min(40, max([len(Path(r["path"]).name) for r in rows] + [5]))
    print(
        f"engine {payload['engine']}   ceiling {_fmt(payload['ceiling'], '.3f')}   "
        f"reference faces {payload['reference_faces']}"
    )
    print(f"{'image':<{width}} {'faces':>5} {'face%':>6} {'sharp':>7} {'ident':>6}  flags")
    for row in rows:
        name = Path(row["path"]).name
        name = name if len(name) <= width else name[: width - 1] + "…"
        ratio = None if row["face_ratio"] is None else 100 * row["face_ratio"]
        print(
            f"{name:<{width}} {row['faces']:>5} {_fmt(ratio, '.1f'):>6} {_fmt(row['sharpness'], '.0f'):>7} "
            f"{_fmt(row['identity_similarity'], '.3f'):>6}  {', '.join(row['flags'])}"
        )
    print()
    for line in payload["advice"]:
        print(f"- {line[0].upper()}{line[1:]}")


def _score(args: argparse.Namespace) -> int:
    from bot.faces.service import image_files

    if not args.images:
        _err("no IMAGE to score: put the images before --reference, or end the reference list with --")
        return EXIT_USAGE
    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    references, images = image_files(args.reference), image_files(args.images)
    for path in [*references, *images]:
        if not path.is_file():
            _err(f"no such file: {path}")
            return EXIT_USAGE
    if not references or not images:
        _err("no images found in the given paths")
        return EXIT_USAGE
    spec = _resolve(args, settings)
    if spec is None:
        return EXIT_UNAVAILABLE
    # One pool for both; the images to score skip the picture hash only deduplication needs.
    flags = [False] * len(references) + [True] * len(images)
    analyses = _analyse(spec, [*references, *images], args, settings, "analysed", scoring=flags)
    if analyses is None:
        return EXIT_UNAVAILABLE
    reference_analyses, sample_analyses = analyses[: len(references)], analyses[len(references) :]

    from bot.faces.report import build_report

    report = build_report(reference_analyses, phash_threshold=settings.phash_threshold)
    reference = report.reference()
    if reference is None:
        _err("no face found in the reference photos")
        return EXIT_UNAVAILABLE
    results = []
    for analysis in sample_analyses:
        scored = reference.score(analysis)
        results.append(
            {
                "path": analysis.source,
                "face_found": scored.face_found,
                "faces": analysis.face_count,
                "similarity": None if scored.similarity is None else round(scored.similarity, 4),
                "percent_of_ceiling": None
                if scored.percent_of_ceiling is None
                else round(scored.percent_of_ceiling, 1),
                "same_person": scored.same_person,
            }
        )
    payload = {
        "engine": reference.engine,
        "ceiling": None if reference.ceiling is None else round(reference.ceiling, 4),
        "reference_faces": reference.count,
        "same_person_threshold": report.profile.same_person,
        "images": results,
    }
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    width = min(40, max([len(Path(r["path"]).name) for r in results] + [5]))
    print(
        f"engine {payload['engine']}   ceiling {_fmt(payload['ceiling'], '.3f')}   "
        f"reference faces {reference.count}   same person at >= {report.profile.same_person}"
    )
    print(f"{'image':<{width}} {'face':>4} {'similarity':>10} {'% ceiling':>9}  verdict")
    for row in results:
        verdict = "no face" if not row["face_found"] else "same person" if row["same_person"] else "different"
        print(
            f"{Path(row['path']).name[:width]:<{width}} {'yes' if row['face_found'] else 'no':>4} "
            f"{_fmt(row['similarity'], '.3f'):>10} {_fmt(row['percent_of_ceiling'], '.0f'):>9}  {verdict}"
        )
    return 0


def _fetch_models(args: argparse.Namespace) -> int:
    from bot.errors import UserError
    from bot.faces.models import BUFFALO_L_URL, LICENCE_NOTICE, fetch_buffalo_l

    target = args.dir
    if target is None:
        settings = _settings()
        if settings is None:
            return EXIT_USAGE
        target = settings.face_models_dir or settings.data_dir / "face_models"
    print(LICENCE_NOTICE, file=sys.stderr)
    url = args.url or BUFFALO_L_URL
    print(f"downloading {url} into {target}", file=sys.stderr)

    try:
        pack = fetch_buffalo_l(target, url=url, timeout=args.timeout, progress=downloading("buffalo_l"))
    except UserError as exc:
        _err(str(exc))
        return EXIT_UNAVAILABLE
    print(f"insightface models ready in {pack}; set FACE_MODELS_DIR={target} to use them", file=sys.stderr)
    return 0
