"""The real ``loraops run`` process is killed with SIGKILL mid-training and started again.

Unlike ``test_train.py`` (whose restart happens inside the test's own process), the bot here is a real
OS process, ``python -m bot run``, with an environment built from scratch and pointed at the
simulators running in the test process: Discord, RunPod (its pods run the real worker with the
sd-scripts stand-in in their own subprocesses) and the Hugging Face file server. The first bot dies
without any chance to clean up; the second one, over the same database and data directory, must pick
the job up again, keep editing the same progress message and finish it on the same pod.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from sim.discord import DiscordSimulator, SimMessage, SimUser
from sim.harness import HARNESS_HF_TOKEN, HARNESS_RUNPOD_KEY, start_job
from sim.huggingface import HuggingFaceSim
from sim.meter import assert_sqlite_ledger_matches_meter
from sim.runpod import RunPodSim, worker_launcher
from sim.testdata import testdata_faces as faces_dir
from storage.models import JobState

from .process import BotProcess, bot_env, bot_messages, job_row, steps_shown, wait_for_new_bot_session

pytestmark = pytest.mark.slow

PRESET = "sd15-local"
STEPS = 40
OVERRIDES = f"steps={STEPS} save_every_n_steps=20 sample_every_n_steps=20"


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
        options = {"dataset": "elena", "preset": PRESET, "overrides": OVERRIDES}
        job_id, quote = await start_job(sim, options, trainer)
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
