"""The live progress of a job as plain data and text, free of Discord (the cog puts it in a message)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bot.text import plain
from bot.training.money import usd
from storage.models import Job, JobState
from storage.views import JobView

BAR_WIDTH = 20

_STATE_WORDS: dict[JobState, str] = {
    JobState.PENDING: "waiting for confirmation",
    JobState.PROVISIONING: "renting a GPU pod",
    JobState.UPLOADING: "uploading the dataset",
    JobState.TRAINING: "training",
    JobState.COLLECTING: "collecting results",
    JobState.SUCCEEDED: "finished",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.BUDGET_STOPPED: "stopped: budget reached",
}


@dataclass(frozen=True)
class ProgressView:
    """Everything the progress message shows, captured at one moment."""

    job_id: int
    guild_id: int
    state: JobState
    preset: str
    gpu_type: str | None
    step: int
    total_steps: int
    loss: float | None
    rate: float | None  # it/s
    eta_s: float | None
    cost_usd: Decimal
    budget_usd: Decimal
    price_per_hour: Decimal | None
    channel_id: int | None
    progress_message_id: int | None
    error: str | None = None
    has_pod: bool = False  # RunPod has given the job its pod (it may still be pulling the image)

    @classmethod
    def from_job(cls, job: Job | JobView) -> ProgressView:
        return cls(
            job_id=job.id,
            guild_id=job.guild_id,
            state=JobState(job.state),
            preset=job.preset,
            gpu_type=job.gpu_type,
            step=job.step,
            total_steps=job.total_steps,
            loss=job.loss,
            rate=job.rate,
            eta_s=job.eta_s,
            cost_usd=job.cost_usd,
            budget_usd=job.budget_usd,
            price_per_hour=job.price_per_hour,
            channel_id=job.channel_id,
            progress_message_id=job.progress_message_id,
            error=job.error,
            has_pod=job.pod_id is not None,
        )

    @property
    def fraction(self) -> float:
        if self.total_steps <= 0:
            return 0.0
        return min(max(self.step / self.total_steps, 0.0), 1.0)

    def render(self) -> str:
        """A few short lines (well under Discord's 2 000 characters)."""
        return render_progress(self)


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``9m 52s``, ``45s``; ``—`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:  # None, NaN, negative
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def render_progress(view: ProgressView) -> str:
    where = f" on {view.gpu_type}" if view.gpu_type else ""
    words = _STATE_WORDS[view.state]
    if view.state == JobState.PROVISIONING and view.has_pod:
        # RunPod reports no runtime for minutes while it pulls the worker image (several GB).
        words = "pod rented, pulling the image"
    lines = [f"Job #{view.job_id} · {view.preset} · {words}{where}"]
    if view.total_steps > 0:
        lines.append(f"`{progress_bar(view.fraction)}` {view.step}/{view.total_steps} ({view.fraction:.0%})")
    details = []
    if view.loss is not None:
        details.append(f"loss {view.loss:.4f}")
    if view.rate is not None:
        details.append(f"{view.rate:.2f} it/s")
    if view.state in (JobState.TRAINING, JobState.UPLOADING, JobState.PROVISIONING):
        details.append(f"ETA {format_duration(view.eta_s)}")
    if details:
        lines.append(" · ".join(details))
    money = f"{usd(view.cost_usd)} of {usd(view.budget_usd)} budget"
    if view.price_per_hour is not None:
        money += f" ({usd(view.price_per_hour)}/h)"
    lines.append(money)
    if view.error:
        lines.append(f"Cause: {plain(view.error, 300)}")  # may carry user or trainer text
    return "\n".join(lines)
