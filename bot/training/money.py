"""Cost accrual and budgets (design §7). Money is ``Decimal`` everywhere; times are aware UTC.

A pod costs its ``costPerHr`` (read from RunPod at launch, stored in ``Job.price_per_hour``) for
every second it runs: from ``Job.pod_created_at`` until now, until ``Job.pod_terminated_at``, or until
the pod left RUNNING on its own (a ``pod_exited`` event: exited, died, stopped for lack of credit).
Its disks are billed too (``bot.training.pricing``): container and volume disk while it runs, the
volume at the stopped rate after that until termination. Pods the job rented but did not keep (a
ghost made by a create that answered with an error) are charged once each (``charge_extra_pod``).
That cost is written to the spend ledger (``SpendEntry``) as it accrues, and ``Job.cost_usd`` is the
sum of the job's entries. Each accrual covers only
the time since the job's last ledger ``period_end`` and is computed as the difference between the
cumulative cost and what the ledger already holds, so repeated or restarted accruals never count a
second twice and rounding never drifts. Entries are split at calendar-month boundaries (UTC) so a
guild's monthly spend is a plain sum over that month's entries.

Concurrent accruals of the same job (the orchestrator's poll and the reconciler's sweep) are made
safe by a compare-and-set on ``Job.cost_usd``: the loser of a race rolls back and recomputes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.training.pricing import PodDisks, network_volume_per_hour
from storage import guilds, jobs, ledger
from storage.db import unit_of_work
from storage.models import Job, SpendEntry
from storage.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CENT = Decimal("0.01")
MICRO = Decimal("0.000001")  # the ledger's resolution (NUMERIC(14, 6))
_US_PER_HOUR = Decimal(3_600_000_000)
# Ledger kinds: the job's pod's GPU time, its disks, and pods the job rented but did not keep.
POD_TIME = "pod_time"
STORAGE = "storage"
EXTRA_POD = "extra_pod"
EXTRA_POD_STORAGE = "extra_pod_storage"
NETWORK_VOLUME = "network_volume"  # the account's network volume, shared by the guilds (no job)
# What RunPod's billing calls compute, and storage.
COMPUTE_KINDS = frozenset({POD_TIME, EXTRA_POD})
STORAGE_KINDS = frozenset({STORAGE, EXTRA_POD_STORAGE, NETWORK_VOLUME})
# The job event that says when the job's pod left RUNNING on its own (payload ``at``, ISO time).
POD_EXITED_EVENT = "pod_exited"


def usd(amount: Decimal) -> str:
    """``$1.23`` for display (rounded half up to the cent).

    A positive amount under a cent keeps four decimals (``$0.0012``): a short pod costs that much, and
    "$0.00" would read as if nothing had been spent.
    """
    if Decimal(0) < amount < CENT / 2:
        return f"${amount.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP)}"
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP)}"


def cost_of(price_per_hour: Decimal, duration: timedelta) -> Decimal:
    """Exact cost of ``duration`` at ``price_per_hour``, rounded to the ledger's micro-dollar."""
    micros = max(duration, timedelta(0)) // timedelta(microseconds=1)
    return (price_per_hour * Decimal(micros) / _US_PER_HOUR).quantize(MICRO, rounding=ROUND_HALF_UP)


def month_start(at: datetime) -> datetime:
    """The first instant of ``at``'s calendar month, UTC."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month_start(at: datetime) -> datetime:
    start = month_start(at)
    return datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)


def split_by_month(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at each month boundary it crosses."""
    pieces: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        boundary = min(next_month_start(cursor), end)
        pieces.append((cursor, boundary))
        cursor = boundary
    return pieces


@dataclass(frozen=True)
class BudgetStop:
    """Why a job must stop: ``scope`` is ``job`` (its own budget) or ``month`` (the guild's month)."""

    scope: Literal["job", "month"]
    spent: Decimal
    budget: Decimal
    message: str


class _RacedError(Exception):
    """Another accrual of the same job committed between our read and our write."""


@dataclass(frozen=True)
class Accrual:
    job_id: int
    delta: Decimal
    cost: Decimal


class Money:
    """Accrues pod time into the ledger and answers budget questions. One per process is enough."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        clock: Clock = utcnow,
        min_period_s: float = 0.0,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        # While a pod runs, ledger rows shorter than this are not written (fewer rows when polling
        # often); the final accrual after termination is always written.
        self.min_period = timedelta(seconds=min_period_s)

    def now(self) -> datetime:
        return self._clock()

    async def accrue(self, job_id: int) -> Accrual:
        """Bring the job's ledger up to now (or to the pod's termination). Returns what was added."""
        for _attempt in range(5):
            try:
                return await self._accrue_once(job_id)
            except _RacedError:
                continue
        raise RuntimeError(f"job {job_id}: cost accrual kept racing; giving up this round")

    async def _accrue_once(self, job_id: int) -> Accrual:
        now = self._clock()
        async with unit_of_work(self._sessions) as session:
            job = await jobs.job(session, job_id)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            entries = await ledger.job_entries(session, job_id)
            before = sum((entry.amount_usd for entry in entries), Decimal(0))
            added: list[SpendEntry] = []
            created, price = job.pod_created_at, job.price_per_hour
            if created is not None and price is not None:
                terminated = job.pod_terminated_at
                end = max(terminated or now, created)
                exited = await _exited_at(session, job_id)
                # GPU time and running disks end when the pod left RUNNING; a volume bills on, stopped.
                stop = min(end, max(exited, created)) if exited is not None else end
                disks = PodDisks.of(job.params)
                running_rate, stopped_rate = disks.running_per_hour(), disks.stopped_per_hour()

                def compute(at: datetime) -> Decimal:
                    return cost_of(price, min(at, stop) - created)

                def storage(at: datetime) -> Decimal:
                    return cost_of(running_rate, min(at, stop) - created) + cost_of(
                        stopped_rate, max(at - stop, timedelta(0))
                    )

                label = f"{job.pod_name or 'pod'} {job.gpu_type or ''}".strip()
                for kind, cumulative, note in (
                    (POD_TIME, compute, f"{label} @ {price}/h"),
                    (STORAGE, storage, f"{label} disks {disks.container_gb}+{disks.volume_gb} GB"),
                ):
                    mine = [entry for entry in entries if entry.kind == kind]
                    running = sum((entry.amount_usd for entry in mine), Decimal(0))
                    last_end = max((entry.period_end for entry in mine), default=created)
                    pieces = split_by_month(last_end, end)
                    if not pieces or (terminated is None and end - last_end < self.min_period):
                        # No new time to bill; still take back what a stop learnt late makes wrong.
                        pieces = [(last_end, last_end)]
                    for piece_start, piece_end in pieces:
                        # Cumulative, so rounding never drifts; negative when a stop learnt late
                        # takes back GPU time already counted.
                        amount = cumulative(piece_end) - running
                        if amount == 0:
                            continue
                        running += amount
                        added.append(
                            ledger.add_entry(
                                session,
                                guild_id=job.guild_id,
                                job_id=job_id,
                                kind=kind,
                                amount=amount,
                                start=piece_start,
                                end=piece_end,
                                note=note,
                                at=now,
                            )
                        )
            total = before + sum((entry.amount_usd for entry in added), Decimal(0))
            if total == job.cost_usd and not added:
                return Accrual(job_id, Decimal(0), total)
            await self._set_cost(session, job, total)
            return Accrual(job_id, total - job.cost_usd, total)

    async def _set_cost(self, session: AsyncSession, job: Job, total: Decimal) -> None:
        # Compare-and-set: if another accrual moved cost_usd since we read it, start over.
        if not await ledger.set_cost_if_unchanged(session, job.id, job.cost_usd, total):
            raise _RacedError  # leaves the unit of work, which rolls our entries back

    async def charge_extra_pod(
        self,
        job_id: int,
        *,
        pod_id: str,
        price_per_hour: Decimal,
        disks: PodDisks,
        start: datetime,
        end: datetime,
    ) -> Decimal:
        """Put a pod the job did not keep (a ghost from an ambiguous create, an orphan) in its ledger:
        GPU and running disks from ``start`` to ``end``. Once per pod; returns what was charged."""
        for _attempt in range(5):
            try:
                return await self._charge_extra_once(job_id, pod_id, price_per_hour, disks, start, end)
            except _RacedError:
                continue
        raise RuntimeError(f"job {job_id}: charging pod {pod_id} kept racing; giving up this round")

    async def _charge_extra_once(
        self,
        job_id: int,
        pod_id: str,
        price: Decimal,
        disks: PodDisks,
        start: datetime,
        end: datetime,
    ) -> Decimal:
        marker = f"pod {pod_id} "
        async with unit_of_work(self._sessions) as session:
            job = await jobs.job(session, job_id)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            entries = await ledger.job_entries(session, job_id)
            if any(e.kind == EXTRA_POD and e.note.startswith(marker) for e in entries):
                return Decimal(0)
            end = max(end, start)
            charged = Decimal(0)
            for kind, rate, what in (
                (EXTRA_POD, price, f"@ {price}/h"),
                (
                    EXTRA_POD_STORAGE,
                    disks.running_per_hour(),
                    f"disks {disks.container_gb}+{disks.volume_gb} GB",
                ),
            ):
                running = Decimal(0)
                for piece_start, piece_end in split_by_month(start, end) or [(start, end)]:
                    amount = cost_of(rate, piece_end - start) - running
                    running += amount
                    ledger.add_entry(
                        session,
                        guild_id=job.guild_id,
                        job_id=job_id,
                        kind=kind,
                        amount=amount,
                        start=piece_start,
                        end=piece_end,
                        note=f"{marker}{what}",
                        at=self._clock(),
                    )
                charged += running
            before = sum((entry.amount_usd for entry in entries), Decimal(0))
            await self._set_cost(session, job, before + charged)
            return charged

    async def accrue_network_volume(self, volume_id: str, size_gb: int, guild_ids: Sequence[int]) -> Decimal:
        """Bill the network volume pods use since the ledger last did (from the first time the bot
        sees it), split evenly between ``guild_ids``: RunPod bills it always, so it counts against
        each month's budget whether or not a job runs. Returns what was added."""
        if not guild_ids:
            return Decimal(0)
        now = self._clock()
        marker = f"volume {volume_id} "
        async with unit_of_work(self._sessions) as session:
            ends = await ledger.period_ends(session, NETWORK_VOLUME, marker)
            note = f"{marker}{size_gb} GB"

            def entry(guild_id: int, amount: Decimal, start: datetime, end: datetime) -> None:
                ledger.add_entry(
                    session,
                    guild_id=guild_id,
                    job_id=None,
                    kind=NETWORK_VOLUME,
                    amount=amount,
                    start=start,
                    end=end,
                    note=note,
                    at=now,
                )

            if not ends:  # first sight: billing starts now
                entry(guild_ids[0], Decimal(0), now, now)
                return Decimal(0)
            last_end = max(ends)
            if now - last_end < max(self.min_period, timedelta(seconds=1)):
                return Decimal(0)
            rate = network_volume_per_hour(size_gb)
            added = Decimal(0)
            for piece_start, piece_end in split_by_month(last_end, now):
                total = cost_of(rate, piece_end - piece_start)
                share = (total / len(guild_ids)).quantize(MICRO, rounding=ROUND_HALF_UP)
                for index, guild_id in enumerate(guild_ids):
                    last = index == len(guild_ids) - 1
                    amount = total - share * (len(guild_ids) - 1) if last else share
                    entry(guild_id, amount, piece_start, piece_end)
                added += total
            return added

    async def month_spent(self, guild_id: int, at: datetime | None = None) -> Decimal:
        """What the guild's ledger holds for ``at``'s calendar month (UTC)."""
        at = at or self._clock()
        start, end = month_start(at), next_month_start(at)
        async with self._sessions() as session:
            amounts = await ledger.guild_amounts(session, guild_id, start, end)
        # Summed here, not in SQL: SQLite stores Money as text.
        return sum(amounts, Decimal(0))

    async def month_budget(self, guild_id: int) -> Decimal:
        """The guild's monthly budget: its own setting, else the default from settings."""
        async with self._sessions() as session:
            guild = await guilds.settings(session, guild_id)
        if guild is not None and guild.monthly_budget_usd is not None:
            return guild.monthly_budget_usd
        return self._settings.monthly_budget_usd

    async def default_job_budget(self, guild_id: int) -> Decimal:
        """The per-job budget when none is given: the guild's setting, else settings' default."""
        async with self._sessions() as session:
            guild = await guilds.settings(session, guild_id)
        if guild is not None and guild.job_budget_usd is not None:
            return guild.job_budget_usd
        return self._settings.default_job_budget_usd

    async def budget_stop(self, job_id: int, *, lookahead_s: float = 0.0) -> BudgetStop | None:
        """Whether the job has crossed its budget or its guild's month budget.

        ``lookahead_s`` counts the cost of that many more seconds of this pod, so a poller that
        checks every N seconds stops *before* the next check would find the budget overrun.
        """
        async with self._sessions() as session:
            job = await jobs.job(session, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        extra = Decimal(0)
        if job.price_per_hour is not None and job.pod_terminated_at is None and lookahead_s > 0:
            rate = job.price_per_hour + PodDisks.of(job.params).running_per_hour()
            extra = cost_of(rate, timedelta(seconds=lookahead_s))
        if job.cost_usd + extra >= job.budget_usd:
            return BudgetStop(
                "job",
                job.cost_usd,
                job.budget_usd,
                f"job budget {usd(job.budget_usd)} reached ({usd(job.cost_usd)} spent)",
            )
        spent, budget = await self.month_spent(job.guild_id), await self.month_budget(job.guild_id)
        if spent + extra >= budget:
            return BudgetStop(
                "month",
                spent,
                budget,
                f"this month's budget {usd(budget)} reached ({usd(spent)} spent this month)",
            )
        return None


async def _exited_at(session: AsyncSession, job_id: int) -> datetime | None:
    """When the job's pod left RUNNING on its own (the first ``pod_exited`` event), if it did."""
    payload = await jobs.first_payload(session, job_id, POD_EXITED_EVENT)
    if not payload or not payload.get("at"):
        return None
    moment = datetime.fromisoformat(str(payload["at"]))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
