"""``loraops render-config`` and ``loraops presets``: the training configuration for local use.

``render-config`` writes the kohya work directory (``dataset/…`` with one ``.txt`` caption per image,
``dataset.toml``, ``config.toml``, ``prompts.txt``) from a folder of images. A caption file beside an
image (``<stem>.txt``) is kept, with the trigger and class put first when missing; an image without one
gets ``{trigger} {class}``. Face crops (``--crops DIR``) form the second subset when the preset uses it.
The base model is not copied: config.toml points at ``models/<file name>`` inside the output directory
(the preset's Hugging Face file name, e.g. ``models/sd_xl_base_1.0.safetensors``; Flux also its CLIP-L,
T5-XXL and autoencoder files), the same place the pod's worker puts them. The command prints each file's
source and path; put (or link) them there before running::

    cd OUT && accelerate launch --num_cpu_threads_per_process 1 <script> \\
        --config_file config.toml --dataset_config dataset.toml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def register(subparsers: Any) -> None:
    render = subparsers.add_parser(
        "render-config",
        help="write a kohya folder, dataset.toml, config.toml and prompts.txt for local training",
    )
    render.add_argument("--preset", required=True, help="preset name (see `loraops presets`)")
    render.add_argument("--images", required=True, type=Path, help="folder of training images")
    render.add_argument(
        "--crops", type=Path, help="folder of face crops (second subset, when the preset uses it)"
    )
    render.add_argument("--trigger", required=True, help="trigger word, e.g. ohwx")
    render.add_argument("--class", dest="class_word", required=True, help="class word, e.g. woman")
    render.add_argument("--out", required=True, type=Path, help="output work directory")
    render.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset value (sd-scripts argument or dataset key); repeatable",
    )
    render.add_argument("--name", help="output (LoRA) name; default <trigger>_<preset>")
    render.add_argument("--force", action="store_true", help="replace an existing dataset/ folder in --out")
    render.set_defaults(handler=_render_config)

    presets = subparsers.add_parser("presets", help="list the training presets and what each is for")
    presets.set_defaults(handler=_presets)


def _collect(folder: Path, subset: str, trigger: str, class_word: str, notes: list[str]) -> list[Any]:
    from bot.training.captions import ensure_trigger, starts_with_trigger
    from bot.training.render import TrainingImage

    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder")
    images = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
            continue
        caption_file = path.with_suffix(".txt")
        caption = f"{trigger} {class_word}"
        if caption_file.is_file():
            text = caption_file.read_text(encoding="utf-8").strip().splitlines()
            original = text[0] if text else ""
            caption = ensure_trigger(original, trigger, class_word)
            if original and not starts_with_trigger(original, trigger):
                notes.append(f"{caption_file.name}: trigger put first")
        images.append(TrainingImage(source=path, caption=caption, subset=subset))
    return images


def _render_config(args: argparse.Namespace) -> int:
    from bot.errors import UserError
    from bot.training.presets import parse_override_strings
    from bot.training.render import describe_source, render
    from bot.training.triggers import check_trigger

    notes: list[str] = []
    try:
        images = _collect(args.images, "full", args.trigger, args.class_word, notes)
        if args.crops:
            images += _collect(args.crops, "face_crops", args.trigger, args.class_word, notes)
        if not images:
            print(
                f"error: no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) in {args.images}", file=sys.stderr
            )
            return 2
        result = render(
            images,
            preset=args.preset,
            trigger=args.trigger,
            class_word=args.class_word,
            overrides=parse_override_strings(args.overrides),
            output_name=args.name,
        )
        result.write(args.out, overwrite=args.force)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = check_trigger(args.trigger, seed=args.trigger)
    for warning in [*result.warnings, *notes]:
        print(f"warning: {warning}", file=sys.stderr)
    if report.suggestions:
        print(f"rare trigger suggestions: {', '.join(report.suggestions)}", file=sys.stderr)
    if result.preset.face.get("alpha_mask"):
        print(
            "note: face-weighted masks need face boxes; this command has none, so images are unmasked "
            "(the bot's /dataset export includes them)",
            file=sys.stderr,
        )
    print(f"wrote {args.out}: {len(result.images)} images, {result.script}, {result.total_steps} steps")
    print("put (or link) the base model files where config.toml names them:")
    for (key, path), source in zip(result.model_paths.items(), result.base_model.files(), strict=True):
        print(f"  {key}: {describe_source(source)} -> {args.out / path}")
    print(f"then in {args.out}:")
    print(
        f"  accelerate launch --num_cpu_threads_per_process 1 {result.script} "
        "--config_file config.toml --dataset_config dataset.toml"
    )
    return 0


def _presets(_args: argparse.Namespace) -> int:
    from bot.training.presets import all_presets

    rows = [("NAME", "FAMILY", "MIN VRAM", "STEPS", "WHAT FOR")]
    for preset in all_presets():
        rows.append(
            (
                preset.name,
                preset.family,
                f"{preset.min_vram_gb} GB",
                str(preset.max_train_steps),
                preset.summary,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    return 0
