"""Time and peak memory to score and render a 10-checkpoint × 4-prompt run (the review of one job).

Generates 40 sample images (1024×1024 JPEG, a real face photo from testdata/faces composed on a
generated background, so every sample is distinct and the face is a realistic share of the frame),
then measures, each phase in a fresh process so its peak RSS is its own:

- ``score``: dlib engine in this process (single-threaded, as one face worker), 40 samples against a
  reference built from 3 photos (reference build timed separately);
- ``rows``: the 10 per-checkpoint grid rows (384 px cells), as posted while training runs;
- ``grid``: the full 10 × 4 grid at the end (256 px cells);
- ``charts``: the chart renewed at each of the 10 checkpoints (PNG).

Run: ``.venv/bin/python benchmarks/review/bench.py`` (prints a Markdown table). Figures are recorded in
benchmarks/review/README.md.
"""

from __future__ import annotations

import io
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from sim.testdata import TESTDATA_FACES

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
FACES = TESTDATA_FACES
CHECKPOINTS, PROMPTS = 10, 4
STEPS = [250 * (i + 1) for i in range(CHECKPOINTS)]
# From strangers to the person as training goes on: prompt p at checkpoint c shows SOURCES[...]
STRANGERS = [
    "biden/biden_2.jpg",
    "kit_harington/kit_1.jpg",
    "rose_leslie/rose_1.jpg",
    "alex_lacamoire/alex_1.jpg",
]
PERSON = ["obama/obama_4.jpg", "obama/obama_small.jpg"]
REFERENCE = ["obama/obama_1.jpg", "obama/obama_2.jpg", "obama/obama_3.jpg"]


def _source_for(checkpoint: int, prompt: int) -> str:
    # The share of prompts showing the person grows with the step; checkpoint 0's first sample is blank.
    if checkpoint == 0 and prompt == 0:
        return ""
    person_prompts = round(checkpoint * PROMPTS / (CHECKPOINTS - 1))
    if prompt < person_prompts:
        return PERSON[(checkpoint + prompt) % len(PERSON)]
    return STRANGERS[(checkpoint + prompt) % len(STRANGERS)]


def make_samples() -> list[list[bytes]]:
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(1234)
    rows: list[list[bytes]] = []
    for c in range(CHECKPOINTS):
        row: list[bytes] = []
        for p in range(PROMPTS):
            canvas = Image.new("RGB", (1024, 1024), tuple(rng.randrange(40, 220) for _ in range(3)))  # type: ignore[arg-type]
            draw = ImageDraw.Draw(canvas)
            for _ in range(30):  # a busy background, like a generated scene
                x, y = rng.randrange(1024), rng.randrange(1024)
                draw.ellipse(
                    (x, y, x + rng.randrange(40, 300), y + rng.randrange(40, 300)),
                    fill=tuple(rng.randrange(256) for _ in range(3)),
                )  # type: ignore[arg-type]
            canvas = canvas.filter(ImageFilter.GaussianBlur(6))
            source = _source_for(c, p)
            if source:
                with Image.open(FACES / source) as face:
                    face = face.convert("RGB")
                    face.thumbnail((720, 720))
                    canvas.paste(face, ((1024 - face.width) // 2, 1024 - face.height))
            out = io.BytesIO()
            canvas.save(out, format="JPEG", quality=92)
            row.append(out.getvalue())
        rows.append(row)
    return rows


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # face worker processes
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def phase(name: str, cache: Path) -> dict[str, float]:
    samples = [[(cache / f"{c}_{p}.jpg").read_bytes() for p in range(PROMPTS)] for c in range(CHECKPOINTS)]
    scores_file = cache / "scores.json"
    result: dict[str, float] = {"rss_start_mib": _peak_mib()}
    cpu0 = _cpu_s()
    if name == "score_pool":
        import asyncio

        from bot.faces.engines import EngineSpec
        from bot.faces.service import FaceService
        from bot.review.scoring import PooledScorer

        async def run() -> None:
            faces = FaceService(EngineSpec("dlib"), workers=2)
            faces.start()
            t0 = time.perf_counter()
            await faces.warm_up()
            t1 = time.perf_counter()
            reference = (await faces.curate([FACES / r for r in REFERENCE])).reference()
            assert reference is not None
            t2 = time.perf_counter()
            scorer = PooledScorer(faces, reference)
            for row in samples:  # one checkpoint at a time, as the service does
                await scorer.score_many(row)
            t3 = time.perf_counter()
            await faces.close()
            result.update(
                engine_load_s=t1 - t0, reference_s=t2 - t1, score_s=t3 - t2, per_sample_s=(t3 - t2) / 40
            )

        asyncio.run(run())
    elif name == "score":
        from bot.faces.engines import DlibEngine
        from bot.review.scoring import ReferenceScorer, aggregate, score_images

        t0 = time.perf_counter()
        engine = DlibEngine()
        t1 = time.perf_counter()
        scorer = ReferenceScorer.from_photos(engine, [FACES / r for r in REFERENCE])
        t2 = time.perf_counter()
        scores = [score_images(scorer, row) for row in samples]
        t3 = time.perf_counter()
        result.update(
            engine_load_s=t1 - t0, reference_s=t2 - t1, score_s=t3 - t2, per_sample_s=(t3 - t2) / 40
        )
        means = [aggregate(row).mean for row in scores]
        scores_file.write_text(
            json.dumps(
                {
                    "ceiling": scorer.ceiling,
                    "rows": [
                        [[s.engine, s.face_found, s.similarity, s.percent_of_ceiling] for s in row]
                        for row in scores
                    ],
                    "means": means,
                }
            )
        )
    else:
        from bot.faces.report import SampleScore
        from bot.review.chart import ChartPoint, render_chart
        from bot.review.grid import GridCell, GridRow, render_grid, render_row
        from bot.review.scoring import aggregate

        data = json.loads(scores_file.read_text())
        scores = [[SampleScore(e, f, s, pc, None) for e, f, s, pc in row] for row in data["rows"]]
        ceiling = data["ceiling"]
        t0 = time.perf_counter()
        if name == "rows":
            sizes = []
            for c, step in enumerate(STEPS):
                row = render_row([GridCell(samples[c][p], step, p, scores[c][p]) for p in range(PROMPTS)])
                sizes.append(len(row.data))
            result["row_kib_max"] = max(sizes) / 1024
            result["row_px"] = float(row.width)  # type: ignore[possibly-undefined]
        elif name == "grid":
            rows = [
                GridRow(
                    step,
                    [GridCell(samples[c][p], step, p, scores[c][p]) for p in range(PROMPTS)],
                    summary=aggregate(scores[c]),
                    ceiling=ceiling,
                )
                for c, step in enumerate(STEPS)
            ]
            grid = render_grid(rows, best_step=STEPS[-1])
            result.update(grid_kib=len(grid.data) / 1024, grid_w=float(grid.width), grid_h=float(grid.height))
        elif name == "charts":
            for c in range(CHECKPOINTS):
                points = [
                    ChartPoint(STEPS[i], aggregate(scores[i]).mean, aggregate(scores[i]).max)
                    for i in range(c + 1)
                ]
                png = render_chart(
                    points,
                    ceiling=ceiling,
                    loss=[(s, 0.12 - s / 40_000) for s in range(50, STEPS[c] + 1, 50)],
                    engine="dlib-resnet128-v1",
                    total_steps=STEPS[-1],
                )
            result["chart_kib"] = len(png) / 1024  # type: ignore[possibly-undefined]
        result["seconds"] = time.perf_counter() - t0
    result["cpu_s"] = _cpu_s() - cpu0
    result["rss_peak_mib"] = _peak_mib()
    if name == "score_pool":
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result["worker_rss_peak_mib"] = children
    return result


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--phase":
        print(json.dumps(phase(sys.argv[3], Path(sys.argv[2]))))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        t0 = time.perf_counter()
        for c, row in enumerate(make_samples()):
            for p, data in enumerate(row):
                (cache / f"{c}_{p}.jpg").write_bytes(data)
        print(
            f"generated {CHECKPOINTS * PROMPTS} samples (1024x1024 JPEG) in {time.perf_counter() - t0:.1f} s"
        )
        results = {}
        for name in ("score", "score_pool", "rows", "grid", "charts"):
            out = subprocess.run(
                [sys.executable, __file__, "--phase", str(cache), name],
                capture_output=True,
                text=True,
                check=True,
            )
            results[name] = json.loads(out.stdout)
        means = json.loads((cache / "scores.json").read_text())["means"]
    print(json.dumps(results, indent=2))
    print("checkpoint means:", ", ".join("-" if m is None else f"{m:.3f}" for m in means))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
