"""Face curation benchmark (run on demand; never part of the test suite).

    .venv/bin/python benchmarks/faces/bench.py [--models-dir DIR] [--count 200] [--out /tmp/facebench]

Measures, on the same images in the same run:
  * `loraops curate DIR --engine E --json` (the real CLI, process pool sized to the machine): images/s
    and peak memory of the whole process tree (sum of RSS over the CLI and its workers, sampled);
  * the `face_recognition` package's own CLI (`face_recognition --cpus -1 known/ unknown/`: HOG
    upsample 1 + 5-point landmarks + the same ResNet descriptor), as an outside reference;
  * event-loop lag while FaceService.curate runs through the async facade (a 10 ms ticker's overshoot).

Image sets: the shared test photos resized to 1024 px on the long side, and `--count` images
generated from them (random crop, flip, small rotation, brightness/contrast, JPEG quality; seed 0).
insightface runs on real buffalo_l models when --models-dir has them; otherwise on the tiny generated
stand-in models of the tests, which measures the pipeline around the models only (say so when quoting).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent


def _resize_set(source: Path, out: Path) -> list[Path]:
    from PIL import Image, ImageOps

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.rglob("*.jp*")):
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        scale = 1024 / max(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
        target = out / f"{path.parent.name}_{path.stem}.jpg"
        image.save(target, quality=92)
        written.append(target)
    return written


def _generated_set(bases: list[Path], out: Path, count: int) -> list[Path]:
    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        image = Image.open(rng.choice(bases)).convert("RGB")
        w, h = image.size
        keep = rng.uniform(0.75, 1.0)
        cw, ch = int(w * keep), int(h * keep)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, expand=False)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
        scale = 1024 / max(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
        target = out / f"gen_{index:03d}.jpg"
        image.save(target, quality=rng.randint(70, 95))
        written.append(target)
    return written


def _tree_rss(root: object) -> int:
    import psutil

    assert isinstance(root, psutil.Process)
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """Run a command; return wall seconds, peak tree RSS (bytes), exit code, and its stderr tail."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    handle = psutil.Process(process.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(handle))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    return elapsed, peak, process.returncode, err.strip().splitlines()[-1] if err.strip() else ""


def _face_recognition_env(shim_dir: Path) -> dict[str, str]:
    # face_recognition_models' __init__ needs pkg_resources, which this setuptools no longer has.
    # Benchmark-only shim: resource_filename resolved through importlib.
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "pkg_resources.py").write_text(
        "import importlib.util, os\n"
        "def resource_filename(package, resource):\n"
        "    spec = importlib.util.find_spec(package)\n"
        "    return os.path.join(list(spec.submodule_search_locations)[0], resource)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(shim_dir)
    return env


async def _loop_lag(spec: object, images: list[Path], nice: int = 10) -> dict[str, float]:
    from bot.faces.service import FaceService

    service = FaceService(spec, nice=nice)  # type: ignore[arg-type]
    service.start()
    await service.warm_up()
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        await service.curate(images)
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await tick
        await service.close()
    lags.sort()
    return {
        "images_per_s": len(images) / elapsed,
        "lag_median_ms": 1000 * statistics.median(lags),
        "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "lag_max_ms": 1000 * lags[-1],
        "ticks": float(len(lags)),
    }


async def _idle_lag(seconds: float = 5.0) -> dict[str, float]:
    """The same ticker with nothing else running: what the machine's own scheduling costs."""
    lags: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)
    lags.sort()
    return {
        "lag_median_ms": 1000 * statistics.median(lags),
        "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "lag_max_ms": 1000 * lags[-1],
    }


def _lag_report(out: Path, count: int, pack: Path | None) -> int:
    from bot.faces.engines import EngineSpec

    label = "insightface"
    if pack is None:
        pack = out / "stand_in_models" / "buffalo_l"
        label = "insightface (stand-in models)"
    images = sorted((out / f"generated{count}").glob("*.jpg"))
    idle = asyncio.run(_idle_lag())
    print(
        f"event loop idle baseline (5 s): 10 ms ticker overshoot median {idle['lag_median_ms']:.2f} ms, "
        f"p99 {idle['lag_p99_ms']:.2f} ms, max {idle['lag_max_ms']:.2f} ms"
    )
    for name, spec in (("dlib", EngineSpec("dlib")), (label, EngineSpec("insightface", pack))):
        for nice in (0, 10):
            result = asyncio.run(_loop_lag(spec, images, nice))
            print(
                f"event loop during FaceService.curate, {name}, workers nice {nice}, {len(images)} images: "
                f"{result['images_per_s']:.2f} images/s, 10 ms ticker overshoot median "
                f"{result['lag_median_ms']:.2f} ms, p99 {result['lag_p99_ms']:.2f} ms, "
                f"max {result['lag_max_ms']:.2f} ms over {int(result['ticks'])} ticks"
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Face curation benchmark")
    parser.add_argument("--models-dir", type=Path, default=None, help="insightface model pack (buffalo_l)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "loraops-facebench")
    parser.add_argument("--lag-only", action="store_true", help="only the event-loop part (needs --out set)")
    parser.add_argument("--testdata", type=Path, default=ROOT.parent / "shared" / "testdata" / "faces")
    args = parser.parse_args()

    import psutil

    from bot.faces.engines import find_insightface_pack
    from bot.faces.service import default_workers

    if args.lag_only:
        return _lag_report(args.out, args.count, find_insightface_pack(args.models_dir))
    shutil.rmtree(args.out, ignore_errors=True)
    photos = _resize_set(args.testdata, args.out / "photos1024")
    generated = _generated_set(photos, args.out / f"generated{args.count}", args.count)
    known = args.out / "known"
    known.mkdir()
    shutil.copy(photos[0], known / "reference.jpg")

    pack = find_insightface_pack(args.models_dir)
    stand_in = pack is None
    if pack is None:
        from tests.faces.conftest import _make_detector, _make_recogniser

        pack = args.out / "stand_in_models" / "buffalo_l"
        pack.mkdir(parents=True)
        _make_detector(pack / "det_10g.onnx")
        _make_recogniser(pack / "w600k_r50.onnx")

    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
        f"python {platform.python_version()}; load average before: {os.getloadavg()[0]:.2f}"
    )
    print(f"curate worker processes: {default_workers()}")
    print()
    sets = {
        f"test photos @1024 ({len(photos)})": args.out / "photos1024",
        f"generated @1024 ({len(generated)})": args.out / f"generated{args.count}",
    }
    counts = {name: len(list(folder.glob("*.jpg"))) for name, folder in sets.items()}
    insightface_label = "loraops curate insightface" + (" (stand-in models)" if stand_in else "")
    header = f"{'tool':<48} {'set':<26} {'images/s':>9} {'wall s':>8} {'peak RSS MiB':>13}"
    print(header)
    print("-" * len(header))
    loraops = [str(VENV_BIN / "loraops")]
    fr_env = _face_recognition_env(args.out / "shim")
    for set_name, folder in sets.items():
        runs = [
            ("loraops curate dlib", [*loraops, "curate", str(folder), "--engine", "dlib", "--json"], None),
            (
                insightface_label,
                [*loraops, "curate", str(folder), "--engine", "insightface", "--json"],
                {**os.environ, "FACE_MODELS_DIR": str(pack)},
            ),
            (
                "face_recognition CLI 1.3.0 (--cpus -1)",
                [str(VENV_BIN / "face_recognition"), "--cpus", "-1", str(known), str(folder)],
                fr_env,
            ),
        ]
        for label, command, env in runs:
            elapsed, peak, code, tail = run_measured(command, env)
            status = "" if code == 0 else f"  (exit {code}: {tail})"
            print(
                f"{label:<48} {set_name:<26} {counts[set_name] / elapsed:>9.2f} {elapsed:>8.1f} "
                f"{peak / 2**20:>13.0f}{status}"
            )
    print()
    _lag_report(args.out, args.count, None if stand_in else pack)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
