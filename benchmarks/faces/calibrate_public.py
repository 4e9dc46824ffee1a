"""Calibrate the same-person threshold on a large labelled set of public photos (many people).

    .venv/bin/python benchmarks/faces/calibrate_public.py --fetch-lfw --cache ~/.cache/loraops-lfw
    .venv/bin/python benchmarks/faces/calibrate_public.py --photos DIR [--holdout DIR] [--json OUT]

Data: a folder with one sub-folder per person (``DIR/<person>/<photo>.jpg``), e.g. Labeled Faces in
the Wild (LFW: 13 233 photos of 5 749 people, 1 680 of them with two or more; University of
Massachusetts Amherst, released for research with the request to cite Huang et al. 2007 — record the
terms in force when you fetch it). ``--fetch-lfw`` downloads and unpacks the official tarball into
``--cache`` (nothing is committed: only the numbers this prints, pasted into benchmarks/faces/README.md).

Held out: the labelled photos of serengil/deepface's test suite are for *evaluation* only. Give their
folder as ``--holdout``: any calibration photo that is the same picture (sha256 or perceptual hash
within 4 bits) is dropped, and the thresholds found are then evaluated on the held-out pairs.

Every photo is analysed the way ``loraops curate`` does (dlib engine, downscaled to 1024 px); photos
with no face or several are skipped. Pairs: every same-person pair of a person's first ``--per-person``
photos, and as many different-person pairs drawn at random (seeded). Printed: both distributions
(percentiles), the error rates at candidate thresholds, the widest gap between the 99.9th percentile
of different-person pairs and the 0.1th of same-person pairs, and the threshold in its middle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.faces.analysis import analyse_image  # noqa: E402
from bot.faces.engines import DLIB_PROFILE, EngineSpec, build_engine  # noqa: E402

LFW_URL = "http://vis-www.cs.umass.edu/lfw/lfw.tgz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def fetch_lfw(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "lfw.tgz"
    if not archive.is_file():
        print(f"downloading {LFW_URL} …", file=sys.stderr)
        urllib.request.urlretrieve(LFW_URL, archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    print(f"lfw.tgz sha256 {digest} (record it with the numbers)")
    target = cache / "lfw"
    if not target.is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    return target


def people(folder: Path, per_person: int) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:per_person]
        if photos:
            found[person.name] = photos
    return found


def fingerprints(folder: Path | None) -> tuple[set[str], list[int]]:
    """sha256s and perceptual hashes of the held-out photos."""
    if folder is None:
        return set(), []
    import imagehash
    from PIL import Image

    shas, hashes = set(), []
    for path in folder.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            shas.add(hashlib.sha256(path.read_bytes()).hexdigest())
            with Image.open(path) as image:
                hashes.append(int(str(imagehash.phash(image)), 16))
    return shas, hashes


def held_out(path: Path, shas: set[str], hashes: list[int]) -> bool:
    if not shas:
        return False
    import imagehash
    from PIL import Image

    if hashlib.sha256(path.read_bytes()).hexdigest() in shas:
        return True
    with Image.open(path) as image:
        value = int(str(imagehash.phash(image)), 16)
    return any((value ^ other).bit_count() <= 4 for other in hashes)


def embeddings(
    engine: object, photos: dict[str, list[Path]], shas: set[str], hashes: list[int]
) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    done = 0
    for person, paths in photos.items():
        for path in paths:
            done += 1
            if held_out(path, shas, hashes):
                continue
            analysis = analyse_image(engine, path)  # type: ignore[arg-type]
            if analysis.face_count == 1:
                out.setdefault(person, []).append(analysis.faces[0].embedding)
            if done % 500 == 0:
                print(f"  {done} photos analysed", file=sys.stderr)
    return out


def pairs(faces: dict[str, list[np.ndarray]], seed: int) -> tuple[list[float], list[float]]:
    same = [float(a @ b) for items in faces.values() for i, a in enumerate(items) for b in items[i + 1 :]]
    rng = random.Random(seed)
    names = [n for n in faces if faces[n]]
    different = []
    for _ in range(max(len(same), 1000)):
        x, y = rng.sample(names, 2)
        different.append(float(rng.choice(faces[x]) @ rng.choice(faces[y])))
    return same, different


def report(same: list[float], different: list[float]) -> dict[str, object]:
    s, d = np.asarray(same), np.asarray(different)
    pct = (0.1, 1, 5, 50, 95, 99, 99.9)
    result: dict[str, object] = {
        "same_person": {"n": len(s), **{f"p{p}": float(np.percentile(s, p)) for p in pct}},
        "different": {"n": len(d), **{f"p{p}": float(np.percentile(d, p)) for p in pct}},
    }
    low, high = float(np.percentile(d, 99.9)), float(np.percentile(s, 0.1))
    result["gap_p99.9_different_to_p0.1_same"] = [low, high]
    result["threshold_midpoint"] = (low + high) / 2
    rates = {}
    for t in (0.90, 0.91, 0.92, DLIB_PROFILE.same_person, 0.93, 0.94, 0.95):
        rates[f"{t:.3f}"] = {"false_accept": float((d >= t).mean()), "false_reject": float((s < t).mean())}
    result["error_rates"] = rates
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="Calibrate the same-person threshold on a large public set.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--photos", type=Path, help="one folder per person")
    source.add_argument("--fetch-lfw", action="store_true", help="download LFW into --cache")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "loraops-lfw")
    parser.add_argument("--holdout", type=Path, default=None, help="deepface's test photos (evaluation only)")
    parser.add_argument("--per-person", type=int, default=6)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    folder = fetch_lfw(args.cache) if args.fetch_lfw else args.photos
    engine = build_engine(EngineSpec("dlib"))
    shas, hashes = fingerprints(args.holdout)
    photos = people(folder, args.per_person)
    print(f"{sum(len(v) for v in photos.values())} photos of {len(photos)} people from {folder}")
    faces = embeddings(engine, photos, shas, hashes)
    same, different = pairs(faces, args.seed)
    result = report(same, different)
    if args.holdout is not None:
        held = embeddings(engine, people(args.holdout, args.per_person), set(), [])
        held_same, held_different = pairs(held, args.seed)
        threshold = float(result["threshold_midpoint"])  # type: ignore[arg-type]
        result["holdout_evaluation"] = {
            "threshold": threshold,
            "false_accept": float((np.asarray(held_different) >= threshold).mean())
            if held_different
            else None,
            "false_reject": float((np.asarray(held_same) < threshold).mean()) if held_same else None,
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
