"""Budgets and the face engine: admin-only commands, hidden without Manage Server, checked by role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from sim.discord.server import SimulatorUsageError
from sim.harness import BotHarness
from storage.db import unit_of_work
from storage.models import SpendEntry


async def test_admin_sets_budgets_and_others_cannot(harness: BotHarness) -> None:
    sim = harness.sim
    # Manage Server shows the command; only the admin role may use it (the run-time check stands).
    moderator = sim.add_member("mo", roles=[sim.add_role("moderator", permissions=1 << 5)])
    refused = await sim.invoke_slash("budget set", {"job": "3"}, user=moderator)
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
    shown = await sim.invoke_slash("budget show", {}, user=harness.admin)
    message = await shown.response()
    assert message is not None and shown.ephemeral
    assert "**$0.14** of $40.00" in message.content
    assert "Default budget per job: $2.50" in message.content


async def test_admin_commands_are_hidden_from_members_without_manage_server(harness: BotHarness) -> None:
    sim = harness.sim
    synced = {cmd["name"]: cmd for cmd in sim.commands(sim.guild)}
    manage_guild = str(1 << 5)
    assert synced["budget"]["default_member_permissions"] == manage_guild
    assert synced["faces"]["default_member_permissions"] == manage_guild
    assert synced["train"].get("default_member_permissions") is None
    for command in ("budget show", "budget set", "faces engine"):
        with pytest.raises(SimulatorUsageError, match="cannot see"):
            await sim.invoke_slash(command, {}, user=harness.visitor)


async def test_face_engine_choice(harness: BotHarness) -> None:
    sim = harness.sim
    shown = await sim.invoke_slash("faces engine", {}, user=harness.admin)
    message = await shown.response()
    assert message is not None and "Face engine: **auto**" in message.content
    chosen = await sim.invoke_slash("faces engine", {"engine": "dlib"}, user=harness.admin)
    message = await chosen.response()
    assert message is not None and "Face engine: **dlib**" in message.content
