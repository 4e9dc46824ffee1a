"""A pod whose accelerate settings would train on the CPU: refused within seconds, through every layer.

The image of the bug: ``accelerate config default`` ran while the image was built, where no GPU is
visible, and left ``"use_cpu": true`` in ``$HF_HOME/accelerate/default_config.yaml`` (the file in
tests/fixtures is exactly what accelerate 1.6.0 writes there). The real bot on the Discord simulator starts
a job, the RunPod simulator boots a GPU pod with that file, the real worker refuses before it fetches the
base model or launches the trainer, the cause is posted in the channel, the pod is terminated and its
seconds are in the ledger.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.models import JobState, SpendEntry
from worker.device import ALLOW_CPU_ENV

from .helpers import job_view, progress_of, summary_of, wait_message
from .test_train import confirm, start_job, training_bot

pytestmark = pytest.mark.slow

CPU_BUILT_HF_HOME = Path(__file__).resolve().parents[1] / "fixtures" / "hf_home_built_without_gpu"


async def test_a_pod_configured_for_the_cpu_fails_at_once_and_says_why(tmp_path: Path) -> None:
    async with training_bot(tmp_path, HF_HOME=str(CPU_BUILT_HF_HOME)) as h:
        assert h.runpod is not None and h.hub is not None and h.trainer is not None
        job_id, quote = await start_job(h)
        await confirm(h, job_id, quote)
        done = await wait_message(h, summary_of(job_id), timeout=90)

        job = await job_view(h, job_id)
        assert job.state == JobState.FAILED.value and job.error is not None
        assert job.error.startswith("refusing to train on the CPU: accelerate's config file ")
        assert "use_cpu: true" in job.error and job.step == 0
        # The channel is told, in plain words, once.
        assert "failed." in done.content and "refusing to train on the CPU" in done.content
        progress = await wait_message(h, progress_of(job_id))
        # Its final edit can queue behind the channel's edit bucket while the announcement goes out.
        await h.sim.wait_until(lambda: "Cause:" in h.sim.message(progress.id).content, timeout=20)
        # (user-visible text is markdown-escaped: use\_cpu)
        assert "would train on the CPU" in h.sim.message(progress.id).content

        # The switch that lets tests train on a CPU is not something the bot can hand a pod: the pod's
        # environment from the bot is the token, the job spec and HF_TOKEN, nothing a user typed.
        (pod,) = h.runpod.pods.values()
        assert set(pod.env) == {"LORAOPS_WORKER_TOKEN", "LORAOPS_JOB_SPEC", "HF_TOKEN"}
        assert ALLOW_CPU_ENV not in pod.env

        # Nothing was downloaded or launched: the refusal came first.
        assert h.hub.downloads() == []
        log = pod.log_text()
        assert "refusing to train on the CPU" in log
        assert "fetching base model" not in log and "launching:" not in log

        # The pod is gone; the seconds it ran are in the ledger (and training_bot ends by checking the
        # ledger against the RunPod simulator's meter, to the cent).
        await h.runpod.wait_for(lambda: h.runpod is not None and h.runpod.live_pods() == [], within=10)
        assert pod.phase == "terminated" and pod.cost(h.runpod.clock.time()) > 0
        job = await job_view(h, job_id)
        assert job.pod_terminated_at is not None
        async with h.bot_app.services.sessions() as session:
            ledger = (await session.scalars(select(SpendEntry).where(SpendEntry.job_id == job_id))).all()
        assert ledger and job.cost_usd > 0
        assert sum((e.amount_usd for e in ledger), Decimal(0)) == job.cost_usd
