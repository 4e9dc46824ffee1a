"""The bot's real snapshot and job spec, trained by the real worker with the sd-scripts stand-in.

Nothing here is hand-written to suit the worker: the configs, the zip and the base-model sources come
from ``bot.training.render`` + ``bot.training.snapshots`` for a real preset, and the base-model files
are served under the preset's own Hugging Face names by a local file server (``LORAOPS_HF_BASE_URL``).
So the work directory the worker builds (``models/<local_name>``, the zip unpacked into ``dataset/``,
config/dataset/prompts from the spec) is checked against what render wrote into the configs.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image
from worker_harness import FACES, HF_TOKEN, Worker

from bot.training import sdscripts_schema as schema
from bot.training.render import TrainingImage, render
from bot.training.snapshots import build_job_spec, freeze
from worker.fetch import source_url
from worker.protocol import BaseModelSource, WorkerStatus

STEPS = 4
OVERRIDES = {
    "steps": str(STEPS),
    "lr_warmup_steps": "0",  # the presets warm up longer than this whole run
    "save_every_n_steps": "2",
    "sample_every_n_steps": str(STEPS),
}


class ModelServer:
    """Plays Hugging Face for the files it is given: ``/{repo}/resolve/main/{filename}``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.base_url = ""

    @staticmethod
    def key(source: BaseModelSource) -> str:
        return source_url(source, "").lstrip("/")

    def add(self, source: BaseModelSource) -> None:
        self.files[self.key(source)] = f"weights of {source.repo}/{source.filename}\n".encode() * 64

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.requests.append(path)
        if request.headers.get("Authorization") != f"Bearer {HF_TOKEN}":
            return web.Response(status=401)
        if path not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[path])


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    server = ModelServer()
    app = web.Application()
    app.router.add_get("/{path:.+}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


def training_images(tmp_path: Path) -> list[TrainingImage]:
    """Three photos with a face box (masked when the preset says so) and one face crop."""
    images: list[TrainingImage] = []
    for path in sorted((FACES / "obama").glob("obama_[0-9].jpg"))[:3]:
        with Image.open(path) as img:
            w, h = img.size
        box = (w * 0.35, h * 0.15, w * 0.65, h * 0.5)
        images.append(TrainingImage(source=path, caption="ohwx man, photo", face_bbox=box))
    crop = tmp_path / "crop.jpg"
    with Image.open(images[0].source) as img:
        assert images[0].face_bbox is not None
        x0, y0, x1, y1 = images[0].face_bbox
        img.convert("RGB").crop((int(x0), int(y0), int(x1), int(y1))).save(crop)
    images.append(TrainingImage(source=crop, caption="ohwx man, close-up", subset="face_crops"))
    return images


@pytest.mark.parametrize("preset", ["sd15-local", "flux-dev-face"])
async def test_rendered_snapshot_trains_to_finished(
    preset: str, start_worker, model_server: ModelServer, tmp_path: Path
) -> None:
    result = render(
        training_images(tmp_path), preset=preset, trigger="ohwx", class_word="man", overrides=OVERRIDES
    )
    frozen = freeze(result)
    spec = build_job_spec(
        result, dataset_sha256=frozen.archive_sha256, job_id=11, deadline_unix=time.time() + 600
    )
    for source in spec.base_model.files():
        model_server.add(source)

    worker: Worker = await start_worker(
        spec,
        {"LORAOPS_HF_BASE_URL": model_server.base_url, "SDSTANDIN_STEP_SECONDS": "0.01"},
    )
    response = await worker.upload(frozen.archive)
    assert response.status == 201
    status = WorkerStatus.from_json(await worker.wait_state("finished", "failed", "cancelled", timeout=60))
    assert status.state == "finished", f"{status.error}\n" + "\n".join(status.log_tail)
    assert (status.step, status.total_steps) == (STEPS, STEPS)

    name = result.output_name
    assert [(c.name, c.step) for c in status.checkpoints] == [
        (f"{name}-step00000002.safetensors", 2),
        (f"{name}-step00000004.safetensors", 4),
        (f"{name}.safetensors", 4),
    ]
    assert [(s.step, s.prompt_index) for s in status.samples] == [(STEPS, i) for i in range(4)]
    assert all(len(c.sha256) == 64 and c.size > 0 for c in [*status.checkpoints, *status.samples])

    # The work directory is what the configs say: every file of the zip under dataset/ (no doubling),
    # each image_dir present, each models/ path the file fetched for it.
    work = worker.work_dir
    for item in result.files:
        assert (work / item.path).read_bytes() == item.read(), item.path
    dataset = tomllib.loads((work / "dataset.toml").read_text())
    subsets = dataset["datasets"][0]["subsets"]
    assert [s["image_dir"] for s in subsets] == ["dataset/full", "dataset/face_crops"]
    assert not (work / "dataset" / "dataset").exists()
    assert (work / "config.toml").read_text() == spec.config_toml
    assert (work / "prompts.txt").read_text() == spec.prompts_txt
    config = schema.flatten_config(tomllib.loads(spec.config_toml))[0]
    sources = spec.base_model.files()
    assert len(result.model_paths) == len(sources) == (4 if result.family == "flux" else 1)
    for (key, path), source in zip(result.model_paths.items(), sources, strict=True):
        assert config[key] == path == f"models/{source.local_name}"
        assert (work / path).read_bytes() == model_server.files[model_server.key(source)], key
    assert sorted(model_server.requests) == sorted(model_server.key(s) for s in sources)
