"""Budgets and the face engine are set by admins only, and shown to everyone privately."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sim.harness import BotHarness
from storage.db import unit_of_work
from storage.models import SpendEntry


async def test_admin_sets_budgets_and_others_cannot(harness: BotHarness) -> None:
    sim = harness.sim
    refused = await sim.invoke_slash("budget set", {"job": "3"}, user=harness.trainer)
    message = await refused.response()
    assert message is not None and refused.ephemeral and "needs the **admin** role" in message.content

    bad = await sim.invoke_slash("budget set", {"job": "-2"}, user=harness.admin)
    message = await bad.response()
    assert message is not None and "between $0.01" in message.content

    too_big = await sim.invoke_slash("budget set", {"job": "80", "month": "60"}, user=harness.admin)
    message = await too_big.response()
    assert message is not None and "can't exceed the monthly budget" in message.content

    ok = await sim.invoke_slash("budget set", {"job": "$2.50", "month": "40"}, user=harness.admin)
    message = await ok.response()
    assert message is not None and "$2.50 per job, $40.00 per month" in message.content

    now = datetime.now(UTC)
    async with unit_of_work(harness.bot_app.services.sessions) as session:
        session.add(
            SpendEntry(
                guild_id=sim.guild.id,
                amount_usd=Decimal("0.14"),
                period_start=now - timedelta(minutes=51),
                period_end=now,
            )
        )
    shown = await sim.invoke_slash("budget show", {}, user=harness.visitor)
    message = await shown.response()
    assert message is not None and shown.ephemeral
    assert "**$0.14** of $40.00" in message.content
    assert "Default budget per job: $2.50" in message.content


async def test_face_engine_choice(harness: BotHarness) -> None:
    sim = harness.sim
    shown = await sim.invoke_slash("faces engine", {}, user=harness.visitor)
    message = await shown.response()
    assert message is not None and "Face engine: **auto**" in message.content
    refused = await sim.invoke_slash("faces engine", {"engine": "dlib"}, user=harness.visitor)
    message = await refused.response()
    assert message is not None and "admin" in message.content
    chosen = await sim.invoke_slash("faces engine", {"engine": "dlib"}, user=harness.admin)
    message = await chosen.response()
    assert message is not None and "Face engine: **dlib**" in message.content
