"""The real ``loraops run`` process is killed with SIGKILL mid-training and started again.

Unlike ``test_train.py`` (whose restart happens inside the test's own process), the bot here is a real
OS process, ``python -m bot run``, with an environment built from scratch and pointed at the
simulators running in the test process: Discord, RunPod (its pods run the real worker with the
sd-scripts stand-in in their own subprocesses) and the Hugging Face file server. The first bot dies
without any chance to clean up; the second one, over the same database and data directory, must pick
the job up again, keep editing the same progress message and finish it on the same pod.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from sim.discord import DiscordSimulator, SimMessage, SimUser
from sim.harness import HARNESS_HF_TOKEN, HARNESS_RUNPOD_KEY
from sim.huggingface import HuggingFaceSim
from sim.meter import assert_sqlite_ledger_matches_meter
from sim.runpod import RunPodSim, worker_launcher

# tests/conftest.py (pytest puts tests/ on sys.path; pyright resolves the e2e one)
from sim.testdata import testdata_faces as faces_dir
from storage.models import JobState

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PRESET = "sd15-local"
STEPS = 40
OVERRIDES = f"steps={STEPS} save_every_n_steps=20 sample_every_n_steps=20"
STEP_OF = re.compile(r"(\d+)/(\d+) \(")


class BotProcess:
    """``python -m bot run`` in a subprocess; its stdout and stderr go to one log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(b"\n===== python -m bot run =====\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            cwd=self.env["HOME"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own process group: its face workers die with it
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        """SIGKILL the bot process itself (nothing runs its clean-up), then its leftover children."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._kill_group()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._kill_group()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_group(self) -> None:
        # The face engine's pool workers are in the bot's process group (and nothing else is).
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def bot_env(home: Path, settings: dict[str, str]) -> dict[str, str]:
    """An environment from scratch: nothing of the host's RUNPOD_*/DISCORD_*/HF_* leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        **settings,
    }


def bot_messages(sim: DiscordSimulator, predicate: Callable[[SimMessage], bool]) -> list[SimMessage]:
    return [
        m
        for m in sim.messages_in(sim.channel)
        if m.author.id == sim.bot_user.id and not m.ephemeral and predicate(m)
    ]


def steps_shown(sim: DiscordSimulator, message_id: int) -> list[int]:
    contents = [v.content for v in sim.message(message_id).versions]
    return [int(m[1]) for m in (STEP_OF.search(c) for c in contents) if m is not None]


def job_row(db: Path, job_id: int) -> sqlite3.Row:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None
    return row


async def wait_for_new_bot_session(sim: DiscordSimulator, known: set[str], timeout: float) -> None:
    await sim.wait_until(
        lambda: any(s.connected for sid, s in sim.gateway.sessions.items() if sid not in known),
        timeout=timeout,
    )


async def test_sigkilled_bot_process_resumes_the_job_on_the_same_pod(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data_dir = tmp_path / "data"
    home.mkdir()
    data_dir.mkdir()
    db = data_dir / "loraops.db"
    log_path = tmp_path / "bot.log"

    sim = DiscordSimulator()
    hub = HuggingFaceSim(token=HARNESS_HF_TOKEN)
    runpod: RunPodSim | None = None
    bots: list[BotProcess] = []
    try:
        await sim.start()
        trainer: SimUser = sim.add_member("alice", roles=["trainer"])
        await hub.start()
        launcher = worker_launcher(
            trainer_cmd=f"{sys.executable} -m sim.sdscripts accelerate launch",
            extra_env={
                "SDSTANDIN_STEP_SECONDS": "0.3",
                "LORAOPS_SCAN_SECONDS": "0.1",
                "LORAOPS_HF_BASE_URL": hub.base_url,
            },
            stop_grace_s=2.0,
        )
        # The bot is another process on the wall clock: RunPod's clock must not run faster than it
        # (a short pull, no warp), or the meter would bill minutes the ledger never saw.
        runpod = RunPodSim(
            api_key=HARNESS_RUNPOD_KEY,
            data_dir=tmp_path / "runpod",
            launcher=launcher,
            boot_delay_s=2.0,
            pull_warp=1.0,
        )
        await runpod.start()

        env = bot_env(
            home,
            {
                "DISCORD_TOKEN": sim.bot_token,
                "DISCORD_GUILD_IDS": str(sim.guild.id),
                "DISCORD_API_BASE": sim.api_url,
                "DISCORD_GATEWAY_URL": sim.gateway_url,
                "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
                "DATA_DIR": str(data_dir),
                "RUNPOD_API_KEY": HARNESS_RUNPOD_KEY,
                "RUNPOD_API_BASE_URL": runpod.base_url,
                "RUNPOD_PROXY_URL_TEMPLATE": runpod.proxy_url_template,
                "HF_TOKEN": HARNESS_HF_TOKEN,
                "ALLOW_PRIVATE_URLS": "true",
                "PROGRESS_EDIT_INTERVAL_S": "1.0",
                "POLL_INTERVAL_S": "0.2",
            },
        )

        first = BotProcess(env, log_path)
        bots.append(first)
        first.start()
        await sim.wait_for_bot(timeout=60)
        await sim.wait_until(lambda: sim.commands(sim.guild), timeout=30)  # synced at start-up
        assert first.alive()

        # A dataset of a few real photos, through Discord.
        created = await sim.invoke_slash(
            "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=trainer
        )
        assert (await created.response(timeout=20)) is not None and not created.ephemeral
        photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]
        assert len(photos) == 3
        added = await sim.invoke_slash(
            "dataset add",
            {"name": "elena"},
            user=trainer,
            attachments=[(p.name, p.read_bytes()) for p in photos],
        )
        report = await added.response(timeout=60)
        assert report is not None and not added.ephemeral
        await sim.wait_until(lambda: "added 3 images" in sim.message(report.id).content, timeout=60)

        # /train start, then Confirm.
        handle = await sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": PRESET, "overrides": OVERRIDES}, user=trainer
        )
        quote = await handle.response(timeout=30)
        assert quote is not None and not handle.ephemeral, quote and quote.content
        match = re.search(r"Job #(\d+) is waiting for confirmation", quote.content)
        assert match is not None, quote.content
        job_id = int(match[1])
        click = await sim.invoke_component(quote.id, f"loraops:train:confirm:{job_id}", trainer)
        await click.ack()
        await sim.wait_until(lambda: "Confirmed by" in sim.message(quote.id).content, timeout=30)

        def is_progress(m: SimMessage) -> bool:
            return m.content.startswith(f"Job #{job_id} ·")

        found: list[SimMessage] = await sim.wait_until(lambda: bot_messages(sim, is_progress), timeout=60)
        progress = found[0]
        await sim.wait_until(lambda: any(s >= 2 for s in steps_shown(sim, progress.id)), timeout=60)

        # SIGKILL the bot process mid-training; the pod (the RunPod simulator's subprocess) goes on.
        known_sessions = set(sim.gateway.sessions)
        first.sigkill()
        assert not first.alive()
        assert first.proc is not None and first.proc.returncode == -signal.SIGKILL
        (pod,) = runpod.pods.values()
        assert pod.phase == "running" and runpod.live_pods() == [pod]
        running = job_row(db, job_id)
        assert running["state"] == JobState.TRAINING.value and running["pod_id"] == pod.id
        assert running["step"] < STEPS
        assert running["progress_message_id"] == progress.id
        versions_before = len(sim.message(progress.id).versions)

        # The same command, the same environment: a new process over the same database.
        second = BotProcess(env, log_path)
        bots.append(second)
        second.start()
        await wait_for_new_bot_session(sim, known_sessions, timeout=60)

        found = await sim.wait_until(
            lambda: bot_messages(sim, lambda m: f"training job #{job_id} for " in m.content), timeout=90
        )
        done = found[0]
        assert "finished" in done.content, done.content
        assert second.alive()

        job = job_row(db, job_id)
        assert job["state"] == JobState.SUCCEEDED.value, job["error"]
        assert job["step"] == STEPS and job["pod_id"] == pod.id
        assert job["pod_terminated_at"] is not None
        assert len(runpod.calls_for("podFindAndDeployOnDemand")) == 1  # no second pod
        assert list(runpod.pods) == [pod.id]
        await runpod.wait_for(lambda: pod.phase == "terminated", within=15)
        assert runpod.live_pods() == []
        assert_sqlite_ledger_matches_meter(db, runpod)  # what RunPod billed is what the ledger says

        # The restarted process kept editing the same progress message; it posted no second one.
        assert [m.id for m in bot_messages(sim, is_progress)] == [progress.id]
        assert len(sim.message(progress.id).versions) > versions_before
        assert f"{STEPS}/{STEPS}" in sim.message(progress.id).content
        steps = steps_shown(sim, progress.id)
        assert steps == sorted(steps) and steps[-1] == STEPS
    except BaseException:
        for bot in bots:
            bot.stop()
        sys.stderr.write(f"----- {log_path} -----\n")
        sys.stderr.write(log_path.read_text(errors="replace") if log_path.exists() else "(no log)\n")
        raise
    finally:
        for bot in bots:
            bot.stop()
        if runpod is not None:
            await runpod.close()
        await hub.close()
        await sim.close()
