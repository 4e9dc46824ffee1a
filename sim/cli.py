"""``loraops sandbox [--out DIR]``: the whole journey against the local simulators, with a transcript.

The handler imports the simulators and the bot only when it runs, so ``loraops --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``sandbox`` to the ``loraops`` command line."""
    parser = subparsers.add_parser(
        "sandbox",
        help="the whole journey against local simulators (no account, no network), with a transcript",
        description=(
            "Runs the real bot against local simulators of Discord, Cloudinary, RunPod and Hugging Face: "
            "a dataset is created, gathered, curated and captioned, a LoRA is trained by the sd-scripts "
            "stand-in, reviewed and delivered. Writes transcript.html (open it in a browser), "
            "transcript.json and files/ into the output folder."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=Path("sandbox-out"), help="output folder (default: ./sandbox-out)"
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="a folder laid out like testdata/faces (obama/, biden/, multi/); "
        "default: ../shared/testdata/faces, else the images the insightface package ships",
    )
    parser.set_defaults(handler=_sandbox)


def _sandbox(args: argparse.Namespace) -> int:
    import logging

    from sim.sandbox import SandboxError, run

    # The bot logs to stderr at INFO in production; here the progress lines are the story.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord").setLevel(logging.ERROR)  # "voice will NOT be supported" is noise here
    out: Path = args.out
    if out.exists() and not out.is_dir():
        print(f"sandbox: --out {out} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        result = run(out, photos=args.photos, progress=lambda line: print(line, flush=True))
    except SandboxError as exc:
        print(f"sandbox failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the one line a user sees; the traceback is for us
        import traceback

        traceback.print_exc()
        print(f"sandbox failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"done in {result.seconds:.0f} s: {result.entries} transcript entries, {result.files} files"
        + (f"; job #{result.job_id} {result.job_state}" if result.job_id is not None else "")
    )
    for path in result.delivered:
        print(f"delivered to ComfyUI: {path}")
    for step in result.skipped:
        print(f"skipped: {step}")
    print(f"open {result.transcript_html}")
    return 0
