"""What several end-to-end tests share: the bot with training and faces, a dataset of real photos,
starting a job, and finding and waiting for the bot's messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sim.discord import SimMessage
from sim.harness import BotHarness, start_job
from sim.testdata import testdata_faces as faces_dir

PRESET = "sd15-local"  # the preset the stand-in trains on a CPU in seconds


async def eventually(check: Callable[[], object], timeout: float = 10) -> None:
    """Poll a condition that no Discord request signals (database, logs, RunPod)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def bot_messages(h: BotHarness, predicate: Callable[[SimMessage], bool]) -> list[SimMessage]:
    """The bot's public messages in the main channel that match ``predicate``, oldest first."""
    return [
        m
        for m in h.sim.messages_in(h.sim.channel)
        if m.author.id == h.sim.bot_user.id and not m.ephemeral and predicate(m)
    ]


async def wait_message(
    h: BotHarness, predicate: Callable[[SimMessage], bool], timeout: float = 60
) -> SimMessage:
    found: list[SimMessage] = await h.sim.wait_until(lambda: bot_messages(h, predicate), timeout=timeout)
    return found[0]


async def create_dataset_with_photos(h: BotHarness, photos: Sequence[Path], name: str = "elena") -> int:
    """``/dataset create`` through Discord, then the photos added straight through the gather service."""
    assert h.trainer is not None
    created = await h.sim.invoke_slash(
        "dataset create", {"name": name, "trigger": "ohwx", "class": "woman"}, user=h.trainer
    )
    assert (await created.response()) is not None
    services = h.bot_app.services
    info = await services.datasets.get(guild_id=h.sim.guild.id, name=name)
    report = await services.gather.from_attachments(
        info.id, [(p.name, p.read_bytes()) for p in photos], added_by=h.trainer.id
    )
    assert len(report.added) == len(photos)
    return info.id


@asynccontextmanager
async def faces_bot(
    tmp_path: Path, photos: Sequence[Path], *, face_from: Path | None = None, **standin_env: str
) -> AsyncIterator[BotHarness]:
    """The bot with training, dlib faces and a ComfyUI loras folder; dataset ``elena`` from ``photos``.
    Samples the run has not learned show ``face_from`` (default: someone else, Kit Harington)."""
    settings = {"comfyui_loras_dir": tmp_path / "comfyui" / "loras", "face_engine": "dlib"}
    other = face_from or faces_dir() / "kit_harington" / "kit_1.jpg"
    env = {"SDSTANDIN_FACE_FROM": str(other), **standin_env}
    async with BotHarness(
        tmp_path / "bot", settings_overrides=settings, with_training=True, standin_env=env
    ) as h:
        await create_dataset_with_photos(h, photos)
        yield h


async def run_job(h: BotHarness, overrides: str, *, gpu: str | None = None) -> int:
    """``/train start`` on ``elena`` with :data:`PRESET` by the trainer, and Confirm; the job id."""
    options = {"dataset": "elena", "preset": PRESET, "overrides": overrides}
    if gpu is not None:
        options["gpu"] = gpu
    job_id, _ = await start_job(h.sim, options, h.trainer)
    return job_id


def posted(h: BotHarness, content: str) -> dict[str, Any]:
    """The JSON (or multipart payload_json) the bot sent to create the message with ``content``."""
    for request in h.sim.requests:
        if request.method == "POST" and request.json and request.json.get("content") == content:
            return request.json
    raise AssertionError(f"no request posted {content[:60]!r}")


async def job_view(h: BotHarness, job_id: int):  # returns what the training service's get returns
    """The job as the training service shows it."""
    training = h.bot_app.services.training
    assert training is not None
    return await training.service.get(job_id)


def progress_of(job_id: int) -> Callable[[SimMessage], bool]:
    """The job's progress message (edited in place)."""
    return lambda m: m.content.startswith(f"Job #{job_id} ·")


def summary_of(job_id: int, dataset: str | None = None) -> Callable[[SimMessage], bool]:
    """The end-of-job summary (of a run on ``dataset``, when given)."""
    if dataset is not None:
        return lambda m: f"training job #{job_id} for **{dataset}**" in m.content
    return lambda m: f"training job #{job_id} for " in m.content


def row_of(step: int) -> Callable[[SimMessage], bool]:
    """A checkpoint's grid row."""
    return lambda m: m.content.startswith(f"**Checkpoint step {step}/")
