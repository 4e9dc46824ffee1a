"""Calibrate the per-engine face thresholds on the shared test photos; prints the figures.

    .venv/bin/python benchmarks/faces/calibrate.py [--engine dlib|insightface] [--models-dir DIR]

Photos: <repo>/../shared/testdata/faces (one folder per person; multi/ and partial/ are special),
insightface's t1.jpg (six other people) and scikit-image's astronaut (one more person, and a
known HOG false positive). Every image is analysed the way `loraops curate` does (downscaled to
1024 px). The figures printed are the ones quoted beside the constants in bot/faces/engines.py and
bot/faces/report.py.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.faces.analysis import analyse_image  # noqa: E402
from bot.faces.engines import EngineSpec, build_engine, find_insightface_pack  # noqa: E402


def _stats(values: list[float]) -> str:
    if not values:
        return "n=0"
    a = np.asarray(values)
    return f"n={len(a):3d}  min {a.min():.4f}  mean {a.mean():.4f}  max {a.max():.4f}"


def _jpeg(image, quality: int = 90) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description="Calibrate the per-engine face thresholds.")
    parser.add_argument("--engine", choices=("dlib", "insightface"), default="dlib")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--testdata", type=Path, default=ROOT.parent / "shared" / "testdata" / "faces")
    args = parser.parse_args()

    from PIL import Image, ImageFilter

    if args.engine == "insightface":
        pack = find_insightface_pack(args.models_dir)
        if pack is None:
            print(f"no insightface models in {args.models_dir}", file=sys.stderr)
            return 1
        spec = EngineSpec("insightface", pack)
    else:
        spec = EngineSpec("dlib")
    engine = build_engine(spec)
    print(f"engine {engine.engine_id}")

    people: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    det_true: list[float] = []
    sharp: list[float] = []
    blurred: list[float] = []
    same_photo: list[float] = []
    for folder in sorted(
        p for p in args.testdata.iterdir() if p.is_dir() and p.name not in ("multi", "partial")
    ):
        for path in sorted(folder.glob("*.jp*")):
            if path.name == "obama_small.jpg":  # a downscaled copy of obama_1: counted as "same photo"
                continue
            analysis = analyse_image(engine, path)
            if not analysis.faces:
                print(f"  no face found in {path.name}")
                continue
            face = analysis.faces[0]
            det_true.extend(f.det_score for f in analysis.faces[:1])
            people.setdefault(folder.name, []).append(face.embedding)
            names.setdefault(folder.name, []).append(path.name)
            sharp.append(face.sharpness)
            # Same photo, re-encoded at half size and JPEG 60: what a re-upload looks like.
            image = Image.open(path).convert("RGB")
            small = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
            copy = analyse_image(engine, _jpeg(small, 60))
            if copy.faces:
                same_photo.append(float(copy.faces[0].embedding @ face.embedding))
            # The same face blurred: a Gaussian of 2.5 px at the sharpness measuring scale (128 px face).
            radius = 2.5 * max(1.0, (face.bbox[2] - face.bbox[0]) / 128)
            soft = analyse_image(engine, _jpeg(image.filter(ImageFilter.GaussianBlur(radius)), 90))
            if soft.faces:
                blurred.append(soft.faces[0].sharpness)
    small_path = args.testdata / "obama" / "obama_small.jpg"
    if small_path.exists():
        small_analysis = analyse_image(engine, small_path)
        if small_analysis.faces:
            same_photo.append(float(small_analysis.faces[0].embedding @ people["obama"][0]))

    import insightface
    import skimage.data

    t1 = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    group = analyse_image(engine, t1)
    print(f"t1.jpg: {group.face_count} faces (6 expected)")
    for k, face in enumerate(group.faces):
        people[f"t1_{k}"] = [face.embedding]
        det_true.append(face.det_score)
    astro = analyse_image(engine, _jpeg(Image.fromarray(skimage.data.astronaut()), 95), label="astronaut")
    print(f"astronaut: {astro.face_count} faces above threshold (1 expected)")
    if astro.faces:
        people["astronaut"] = [astro.faces[0].embedding]

    # Detector scores: every candidate, to see the gap between real faces and false positives.
    from bot.faces import engines as engines_module

    if args.engine == "dlib":
        import importlib

        dlib: Any = importlib.import_module("dlib")
        detector = dlib.get_frontal_face_detector()
        astro_rgb = np.ascontiguousarray(skimage.data.astronaut())
        _, scores, _ = detector.run(astro_rgb, 1, -0.5)
        print(f"astronaut HOG candidate scores: {[round(float(s), 2) for s in scores]}")
        print(f"det_score_min in use: {engines_module.DLIB_PROFILE.det_score_min}")
    multi = args.testdata / "multi"
    for path in sorted(multi.glob("*.jp*")):
        analysis = analyse_image(engine, path)
        scores_text = ", ".join(f"{f.det_score:.2f}" for f in analysis.faces)
        print(f"multi/{path.name}: {analysis.face_count} faces, scores {scores_text}")
        det_true.extend(f.det_score for f in analysis.faces)

    same = [float(a @ b) for embeddings in people.values() for a, b in itertools.combinations(embeddings, 2)]
    different = [
        float(a @ b) for (p, ea), (q, eb) in itertools.combinations(people.items(), 2) for a in ea for b in eb
    ]
    print()
    print(f"same person, different photos   {_stats(same)}")
    print(f"different persons               {_stats(different)}")
    print(f"same photo, half size + JPEG 60 {_stats(same_photo)}")
    # Leave-one-out against a centroid, as the dataset report does.
    own, other = [], []
    for person, embeddings in people.items():
        if len(embeddings) < 2:
            continue
        stack = np.stack(embeddings)
        for k in range(len(stack)):
            rest = np.delete(stack, k, axis=0).mean(axis=0)
            own.append(float(stack[k] @ (rest / np.linalg.norm(rest))))
        centre = stack.mean(axis=0)
        centre /= np.linalg.norm(centre)
        for q, others in people.items():
            if q != person:
                other.extend(float(e @ centre) for e in others)
    print(f"own photo vs centroid of others {_stats(own)}")
    print(f"other person vs a centroid      {_stats(other)}")
    print(f"detector score of real faces    {_stats(det_true)}")
    print(f"sharpness, photos as they are   {_stats(sharp)}  median {np.median(sharp):.0f}")
    print(f"sharpness, Gaussian-blurred     {_stats(blurred)}")
    if same and different:
        gap_low, gap_high = max(different), min(same)
        print(
            f"same/different gap: {gap_low:.4f} .. {gap_high:.4f} "
            f"(threshold midpoint {(gap_low + gap_high) / 2:.4f})"
        )
    if own and other:
        print(
            f"outlier gap vs centroid: {max(other):.4f} .. {min(own):.4f} "
            f"(midpoint {(max(other) + min(own)) / 2:.4f})"
        )
    print(f"near-duplicate gap: {max(same):.4f} .. {min(same_photo):.4f}" if same and same_photo else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
