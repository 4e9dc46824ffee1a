"""The check every test that rents a pod ends with: the bot's ledger against the RunPod simulator's meter.

RunPod's billing splits what it charges into compute (GPU time) and storage (disks); the ledger
(``spend_ledger``) holds the same two, by kind. Both must agree to the cent: a ledger that counts less
than the meter hides money spent, one that counts more stops jobs early. The meter compared is the
account's: pods and the network volume (which the ledger shares between the guilds).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.training.money import COMPUTE_KINDS, STORAGE_KINDS
from sim.runpod.billing import Meter
from storage.models import SpendEntry

if TYPE_CHECKING:
    from sim.runpod import RunPodSim

# "To the cent": the two may differ by less than half a cent in each part (clock ticks between the
# simulator's deploy and the bot's record of it are worth a ten-thousandth of that).
TOLERANCE = Decimal("0.005")


def ledger_meter(entries: Iterable[tuple[str, Decimal]]) -> Meter:
    """(kind, amount) rows of the ledger as compute and storage."""
    compute = storage = Decimal(0)
    for kind, amount in entries:
        if kind in COMPUTE_KINDS:
            compute += Decimal(amount)
        elif kind in STORAGE_KINDS:
            storage += Decimal(amount)
        else:
            raise AssertionError(f"ledger entry of unknown kind {kind!r}")
    return Meter(compute, storage)


async def ledger_of(sessions: async_sessionmaker[AsyncSession]) -> Meter:
    async with sessions() as session:
        rows = (await session.execute(select(SpendEntry.kind, SpendEntry.amount_usd))).all()
    return ledger_meter((row.kind, row.amount_usd) for row in rows)


def ledger_of_sqlite(db: Path) -> Meter:
    """The same, read from the SQLite file of a bot running in another process."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("SELECT kind, amount_usd FROM spend_ledger").fetchall()
    return ledger_meter((str(kind), Decimal(str(amount))) for kind, amount in rows)


def pods_meter(sim: RunPodSim, exclude: Collection[str] = ()) -> Meter:
    """What RunPod billed the account (pods and network volumes), less ``exclude``: pods a test
    rented itself that belong to no job of the bot."""
    now = sim.clock.time()
    excluded = sum((sim.pods[pod_id].usage(now) for pod_id in exclude if pod_id in sim.pods), Meter())
    total = sim.meter()
    return Meter(total.compute - excluded.compute, total.storage - excluded.storage)


def mismatch(ledger: Meter, meter: Meter) -> str | None:
    """Why the two disagree, or None when they match to the cent in compute and in storage."""
    problems = [
        f"{part}: ledger ${mine:.6f} vs RunPod ${theirs:.6f}"
        for part, mine, theirs in (
            ("compute", ledger.compute, meter.compute),
            ("storage", ledger.storage, meter.storage),
        )
        if abs(mine - theirs) >= TOLERANCE
    ]
    return "; ".join(problems) or None


def assert_no_pod_bills(sim: RunPodSim) -> None:
    live = [(pod.id, pod.phase, pod.desired_status) for pod in sim.live_pods()]
    assert not live, f"pods still billing: {live}"


async def assert_ledger_matches_meter(
    sessions: async_sessionmaker[AsyncSession],
    sim: RunPodSim,
    *,
    settled: bool = True,
    exclude: Collection[str] = (),
) -> Meter:
    """Assert the ledger equals the simulator's meter to the cent (and, with ``settled``, that no pod
    is left billing). Returns the meter, for tests that check amounts too."""
    if settled:
        assert_no_pod_bills(sim)
    ledger, meter = await ledger_of(sessions), pods_meter(sim, exclude)
    problem = mismatch(ledger, meter)
    assert problem is None, problem
    return meter


def assert_sqlite_ledger_matches_meter(
    db: Path, sim: RunPodSim, *, settled: bool = True, exclude: Collection[str] = ()
) -> Meter:
    if settled:
        assert_no_pod_bills(sim)
    ledger, meter = ledger_of_sqlite(db), pods_meter(sim, exclude)
    problem = mismatch(ledger, meter)
    assert problem is None, problem
    return meter
