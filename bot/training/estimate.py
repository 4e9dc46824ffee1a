"""GPU choice, time and cost estimates (design §7).

Which GPU: those with at least the preset's memory floor, priced (offered) in the configured cloud,
ordered by the estimated cost of the whole run (a faster, dearer GPU can be the cheaper run), then by
hourly price. The first is the pick; the rest are the fall-backs tried in order when RunPod has no
capacity for the first.

How fast: the preset states a default speed (it/s) per GPU type; once the project has finished jobs
of that preset on that GPU, the median of their measured speeds replaces the default. Boot time
(pod start, base-model download) is refined the same way from the jobs' own timelines.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.training.money import cost_of, usd
from storage import jobs as stored_jobs
from storage.models import JobState

CloudType = Literal["SECURE", "COMMUNITY", "ALL"]

# Safety margins. The deadline must never cut a healthy run short, and must bound a stuck one.
DEADLINE_FACTOR = 2.0
DEADLINE_SLACK_S = 15 * 60
# Measured speeds older than this many jobs are ignored (newer images, newer drivers).
HISTORY_JOBS = 20


class GpuTypeLike(Protocol):
    """What :class:`bot.clients.runpod.GpuType` provides."""

    @property
    def id(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def memory_gb(self) -> int: ...
    @property
    def secure_price(self) -> Decimal | None: ...
    @property
    def community_price(self) -> Decimal | None: ...


@dataclass(frozen=True)
class SpeedProfile:
    """What estimating needs from a preset.

    ``default_its`` maps a GPU type id or display name to the preset's stated speed in it/s; GPUs
    not listed get ``fallback_its`` (set it conservatively). ``boot_s`` covers pod start and the
    base-model download; ``collect_s`` the final downloads.
    """

    preset: str
    min_vram_gb: int
    default_its: Mapping[str, float]
    fallback_its: float
    boot_s: float = 8 * 60
    collect_s: float = 2 * 60

    def stated_its(self, gpu: GpuTypeLike) -> tuple[float, bool]:
        """(it/s, whether the preset states it for this GPU)."""
        for key in (gpu.id, gpu.display_name):
            if key in self.default_its:
                return self.default_its[key], True
        return self.fallback_its, False


@dataclass(frozen=True)
class GpuOption:
    gpu_type_id: str
    display_name: str
    memory_gb: int
    price_per_hour: Decimal
    its: float
    speed_source: Literal["history", "preset", "fallback"]
    train_s: float
    total_s: float
    cost_usd: Decimal  # GPU time and disks
    storage_usd: Decimal = Decimal(0)  # the disks' part of cost_usd

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["price_per_hour"] = str(self.price_per_hour)
        data["cost_usd"] = str(self.cost_usd)
        data["storage_usd"] = str(self.storage_usd)
        return data


@dataclass(frozen=True)
class Estimate:
    """The pick and its fall-backs for one run. ``options[0]`` is the pick."""

    preset: str
    total_steps: int
    options: tuple[GpuOption, ...]
    boot_s: float
    boot_source: Literal["history", "preset"]
    notes: tuple[str, ...] = field(default=())

    @property
    def pick(self) -> GpuOption:
        return self.options[0]

    @property
    def total_s(self) -> float:
        return self.pick.total_s

    @property
    def cost_usd(self) -> Decimal:
        return self.pick.cost_usd

    def deadline(self, start: datetime) -> datetime:
        """Hard deadline for a run starting at ``start``: twice the estimate plus slack.

        Based on the slowest fall-back so that a pod on the second-choice GPU is not cut short.
        """
        slowest = max(option.total_s for option in self.options)
        return start + timedelta(seconds=DEADLINE_FACTOR * slowest + DEADLINE_SLACK_S)

    def to_json(self) -> dict[str, Any]:
        """Stored on ``Job.estimate``: what the user was shown, and the GPU order to try."""
        return {
            "preset": self.preset,
            "total_steps": self.total_steps,
            "boot_s": self.boot_s,
            "boot_source": self.boot_source,
            "total_s": self.total_s,
            "cost_usd": str(self.cost_usd),
            "options": [option.to_json() for option in self.options],
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        pick = self.pick
        minutes = self.total_s / 60
        disks = f" (disks {usd(pick.storage_usd)})" if pick.storage_usd > 0 else ""
        return (
            f"{pick.display_name} ({pick.memory_gb} GB) at {usd(pick.price_per_hour)}/h · "
            f"{self.total_steps} steps at ~{pick.its:.2f} it/s · ~{minutes:.0f} min · "
            f"~{usd(pick.cost_usd)}{disks}"
        )


class NoSuitableGpuError(LookupError):
    """No offered GPU type has enough memory for the preset."""


def price_in(gpu: GpuTypeLike, cloud: CloudType) -> Decimal | None:
    """The hourly price in the configured cloud; ``None`` when not offered there."""
    secure = gpu.secure_price if gpu.secure_price else None
    community = gpu.community_price if gpu.community_price else None
    if cloud == "SECURE":
        return secure
    if cloud == "COMMUNITY":
        return community
    offered = [price for price in (secure, community) if price is not None]
    # ALL: RunPod may place the pod in either cloud; estimate with the dearer to stay on the safe side.
    return max(offered) if offered else None


def rank_gpus(
    gpus: Sequence[GpuTypeLike],
    profile: SpeedProfile,
    total_steps: int,
    *,
    cloud: CloudType,
    measured_its: Mapping[str, float] | None = None,
    boot_s: float | None = None,
    storage_per_hour: Decimal = Decimal(0),
) -> list[GpuOption]:
    """Every GPU that fits: in stock first, then cheapest run (ties: lower hourly price, more memory).

    ``storage_per_hour``: what the pod's disks bill while it runs (RunPod bills them on top of the
    GPU), counted in every option's cost."""
    measured_its = measured_its or {}
    boot = profile.boot_s if boot_s is None else boot_s
    options: list[GpuOption] = []
    for gpu in gpus:
        price = price_in(gpu, cloud)
        if price is None or gpu.memory_gb < profile.min_vram_gb:
            continue
        if gpu.id in measured_its:
            its, source = measured_its[gpu.id], "history"
        else:
            its, stated = profile.stated_its(gpu)
            source = "preset" if stated else "fallback"
        its = max(its, 1e-3)
        train_s = total_steps / its
        total_s = boot + train_s + profile.collect_s
        storage = cost_of(storage_per_hour, timedelta(seconds=total_s))
        options.append(
            GpuOption(
                gpu_type_id=gpu.id,
                display_name=gpu.display_name,
                memory_gb=gpu.memory_gb,
                price_per_hour=price,
                its=its,
                speed_source=source,  # type: ignore[arg-type]
                train_s=train_s,
                total_s=total_s,
                cost_usd=cost_of(price, timedelta(seconds=total_s)) + storage,
                storage_usd=storage,
            )
        )
    # RunPod's stock hint: types it reports none of go last (still tried: a listing is not a promise).
    in_stock = {gpu.id: bool(getattr(gpu, "available", True)) for gpu in gpus}
    options.sort(
        key=lambda o: (
            not in_stock.get(o.gpu_type_id, True),
            o.cost_usd,
            o.price_per_hour,
            -o.memory_gb,
            o.gpu_type_id,
        )
    )
    return options


async def measured_speeds(
    sessions: async_sessionmaker[AsyncSession], preset: str
) -> tuple[dict[str, float], float | None]:
    """From the project's own succeeded jobs of ``preset``: median it/s per GPU type, median boot s.

    Training speed is steps over the time between entering ``training`` and ``collecting``; boot is
    the time from ``provisioning`` to ``training`` (pod start, model download, dataset upload).
    """
    async with sessions() as session:
        history = await stored_jobs.succeeded_jobs(session, preset, limit=HISTORY_JOBS)
        if not history:
            return {}, None
        events = await stored_jobs.state_events_of(session, [job.id for job in history])
    entered: dict[int, dict[str, datetime]] = {}
    for event in events:
        if event.to_state:
            entered.setdefault(event.job_id, {}).setdefault(event.to_state, event.at)
    speeds: dict[str, list[float]] = {}
    boots: list[float] = []
    for job in history:
        times = entered.get(job.id, {})
        train_at, collect_at = times.get(JobState.TRAINING.value), times.get(JobState.COLLECTING.value)
        if train_at and collect_at and job.total_steps > 0:
            seconds = (collect_at - train_at).total_seconds()
            if seconds > 0:
                speeds.setdefault(job.gpu_type or "", []).append(job.total_steps / seconds)
        provision_at = times.get(JobState.PROVISIONING.value)
        if provision_at and train_at and train_at > provision_at:
            boots.append((train_at - provision_at).total_seconds())
    medians = {gpu: statistics.median(values) for gpu, values in speeds.items() if values}
    return medians, (statistics.median(boots) if boots else None)


async def estimate_run(
    sessions: async_sessionmaker[AsyncSession],
    gpus: Sequence[GpuTypeLike],
    profile: SpeedProfile,
    total_steps: int,
    *,
    cloud: CloudType,
    storage_per_hour: Decimal = Decimal(0),
) -> Estimate:
    """The estimate for one run against the live GPU list. Raises :class:`NoSuitableGpuError`."""
    measured, boot = await measured_speeds(sessions, profile.preset)
    options = rank_gpus(
        gpus,
        profile,
        total_steps,
        cloud=cloud,
        measured_its=measured,
        boot_s=boot,
        storage_per_hour=storage_per_hour,
    )
    if not options:
        raise NoSuitableGpuError(
            f"no GPU offered in the {cloud.lower()} cloud has the {profile.min_vram_gb} GB "
            f"that preset {profile.preset} needs"
        )
    notes = []
    if options[0].speed_source == "fallback":
        notes.append(f"no stated speed for {options[0].display_name}: a conservative guess was used")
    return Estimate(
        preset=profile.preset,
        total_steps=total_steps,
        options=tuple(options),
        boot_s=profile.boot_s if boot is None else boot,
        boot_source="preset" if boot is None else "history",
        notes=tuple(notes),
    )


# Pod start, image pull and base-model download, by model family (refined from history once it exists).
BOOT_S_BY_FAMILY: dict[str, float] = {"sd15": 5 * 60, "sdxl": 8 * 60, "flux": 15 * 60}
# GPUs a preset states no speed for are assumed this much slower than its slowest stated GPU.
UNSTATED_SPEED_FACTOR = 0.7


def speed_profile(preset: Any) -> SpeedProfile:
    """The estimator's view of a :class:`bot.training.presets.Preset` (``speed_s_per_it`` is s/step)."""
    its = {gpu: 1.0 / s_per_it for gpu, s_per_it in preset.speed_s_per_it.items() if s_per_it > 0}
    fallback = (min(its.values()) if its else 0.5) * UNSTATED_SPEED_FACTOR
    return SpeedProfile(
        preset=preset.name,
        min_vram_gb=preset.min_vram_gb,
        default_its=its,
        fallback_its=fallback,
        boot_s=BOOT_S_BY_FAMILY.get(preset.family, 10 * 60),
    )
