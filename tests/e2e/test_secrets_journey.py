"""A whole journey at LOG_LEVEL=DEBUG with distinctive secrets: none of them, nor the job's worker token,
may reach the log, the database, a Discord message or the transcript.

The bot logs through the same ``setup_logging`` as ``loraops run`` (root logger at DEBUG, every library
included), the Discord, Cloudinary, RunPod and Hugging Face simulators run in the same process (their
logs go to the same handler), and the real worker runs in the simulated pod.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.log import setup_logging
from bot.training.tokens import worker_token
from sim.cloudinary import CloudinarySim
from sim.discord import DiscordSimulator, SimMessage
from sim.harness import HARNESS_HF_TOKEN, HARNESS_RUNPOD_KEY, BotHarness, confirm_job, quoted_job_id
from sim.testdata import testdata_faces as faces_dir
from sim.transcript import write_transcript
from storage.models import JobState

from .helpers import wait_message

pytestmark = pytest.mark.slow

DISCORD_TOKEN = "MTk4NjIyNDgzNDcxOTI1MjQ4.Gx7Yq2.DISTINCT-discord-zq8w4r1t6y0p"
CLOUDINARY_SECRET = "DISTINCT-cloudinary-secret-zq8w4r"
WORKER_TOKEN_KEY = "DISTINCT-worker-token-key-zq8w4r"
SECRETS = [DISCORD_TOKEN, CLOUDINARY_SECRET, WORKER_TOKEN_KEY, HARNESS_RUNPOD_KEY, HARNESS_HF_TOKEN]


def _messages_text(sim: DiscordSimulator) -> str:
    """Every state of every message, and every body the bot sent to Discord."""
    parts: list[str] = []
    for message in sim.messages.values():
        parts.append(message.content)
        parts += [v.content + json.dumps(v.embeds) for v in message.versions]
    parts += [json.dumps(r.json, default=str) for r in sim.requests if r.json is not None]
    return "\n".join(parts)


def _dump(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        return "\n".join(connection.iterdump())


async def test_a_debug_journey_leaves_no_secret_nor_worker_token_anywhere(
    tmp_path: Path, root_logging: None
) -> None:
    log = io.StringIO()
    # As `loraops run` does: the settings' secrets by value, everything else by shape.
    setup_logging("DEBUG", SECRETS, stream=log)
    cloud = CloudinarySim(api_secret=CLOUDINARY_SECRET)
    for photo in sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]:
        cloud.add_asset(f"elena/{photo.stem}", photo.read_bytes(), asset_folder="elena")
    harness = BotHarness(
        tmp_path / "bot",
        sim=DiscordSimulator(bot_token=DISCORD_TOKEN),
        cloudinary=cloud,
        with_training=True,
        settings_overrides={"log_level": "DEBUG", "worker_token_key": SecretStr(WORKER_TOKEN_KEY)},
    )
    async with harness as h:
        assert h.settings is not None and h.runpod is not None and h.trainer is not None
        setup_logging(h.settings.log_level, h.settings.secret_values(), stream=log)
        created = await h.sim.invoke_slash(
            "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=h.trainer
        )
        assert await created.response() is not None
        gather = await h.sim.invoke_slash(
            "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=h.trainer
        )
        await h.sim.wait_until(
            lambda: gather.original is not None and "added 3 images" in gather.original.content, 60
        )
        start = await h.sim.invoke_slash(
            "train start",
            {
                "dataset": "elena",
                "preset": "sd15-local",
                "overrides": "steps=8 save_every_n_steps=4 sample_every_n_steps=4",
            },
            user=h.trainer,
        )
        quote = await start.response(timeout=30)
        assert quote is not None
        job_id = quoted_job_id(quote)
        assert job_id is not None, quote.content
        await confirm_job(h.sim, job_id, quote, h.trainer)
        done: SimMessage = await wait_message(h, lambda m: f"training job #{job_id} for " in m.content, 120)
        assert done is not None
        training = h.bot_app.services.training
        assert training is not None
        job = await training.service.get(job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error
        # The nonce the token derives from stays in storage: the job view handed upward leaves it out.
        database = h.settings.data_dir / "loraops.db"
        with sqlite3.connect(database) as db:
            (nonce,) = db.execute("SELECT worker_token_nonce FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert not hasattr(job, "worker_token_nonce")
        token = worker_token(h.settings, job_id, nonce)
        assert token is not None
        # The token was real: the pod got it and the bot used it for every call.
        (pod,) = h.runpod.pods.values()
        assert pod.env["LORAOPS_WORKER_TOKEN"] == token
        pod_log = pod.log_path.read_text(errors="replace") if pod.log_path.exists() else ""
        written = write_transcript(h.sim, tmp_path / "transcript")
        messages = _messages_text(h.sim)
        database = h.settings.data_dir / "loraops.db"

    text = log.getvalue()
    # The log really was at DEBUG, libraries included, and it followed the job.
    assert " DEBUG " in text and "RunPod pod" in text and "created (loraops-" in text
    places = {
        "log": text,
        "database": _dump(database),
        "discord": messages,
        "transcript.json": written.json.read_text(encoding="utf-8"),
        "transcript.html": written.html.read_text(encoding="utf-8"),
        "pod log": pod_log,
    }
    for secret in [*SECRETS, token]:
        for place, content in places.items():
            assert secret not in content, f"{secret[:12]}… found in the {place}"
    assert token[4:20] not in text  # not even a piece of it
