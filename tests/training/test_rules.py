"""The job rules' one home (bot.training.rules): who may act on a job, who may raise its budget, and
the service checks the cog calls before deferring."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.errors import ConflictError, NotFoundError, PermissionDeniedError
from bot.roles import Member, RoleNames
from bot.training.presets import OverrideError
from bot.training.rules import (
    JobAction,
    budget_needs_admin,
    may_act,
    require_budget_authority,
    require_may_act,
)

from .conftest import GUILD, USER, Harness

NAMES = RoleNames(trainer="Trainer", reviewer="Reviewer", admin="LoRA Admin")
REQUESTER = 100
OTHER = 200


def member(user_id: int, *roles: str, administrator: bool = False) -> Member:
    return Member.of(user_id, roles, is_administrator=administrator)


@pytest.mark.parametrize(
    ("who", "action", "allowed"),
    [
        # The requester who is still a trainer may do both.
        (member(REQUESTER, "Trainer"), JobAction.CONFIRM, True),
        (member(REQUESTER, "Trainer"), JobAction.CANCEL, True),
        # The requester who lost the trainer role may stop spending, not start it.
        (member(REQUESTER), JobAction.CONFIRM, False),
        (member(REQUESTER), JobAction.CANCEL, True),
        # Another trainer may do neither: it is not their job.
        (member(OTHER, "Trainer"), JobAction.CONFIRM, False),
        (member(OTHER, "Trainer"), JobAction.CANCEL, False),
        (member(OTHER), JobAction.CANCEL, False),
        # Admins (the role, case-insensitively, or Discord's Administrator permission) may do anything.
        (member(OTHER, "lora admin"), JobAction.CONFIRM, True),
        (member(OTHER, "LoRA Admin"), JobAction.CANCEL, True),
        (member(OTHER, administrator=True), JobAction.CONFIRM, True),
        (member(OTHER, administrator=True), JobAction.CANCEL, True),
        # A job's face alarm asks the team: the requester (trainer or not), any trainer, an admin.
        (member(REQUESTER), JobAction.ANSWER_ALARM, True),
        (member(OTHER, "Trainer"), JobAction.ANSWER_ALARM, True),
        (member(OTHER, "LoRA Admin"), JobAction.ANSWER_ALARM, True),
        (member(OTHER, "Reviewer"), JobAction.ANSWER_ALARM, False),
        (member(OTHER), JobAction.ANSWER_ALARM, False),
    ],
)
def test_who_may_act_on_a_job(who: Member, action: JobAction, allowed: bool) -> None:
    assert may_act(who, REQUESTER, action, NAMES) is allowed
    if allowed:
        require_may_act(who, REQUESTER, 7, action, NAMES)
    else:
        with pytest.raises(PermissionDeniedError):
            require_may_act(who, REQUESTER, 7, action, NAMES)


def test_refusals_say_who_may() -> None:
    with pytest.raises(PermissionDeniedError, match=rf"Only <@{REQUESTER}> or an admin can cancel job #7\."):
        require_may_act(member(OTHER, "Trainer"), REQUESTER, 7, JobAction.CANCEL, NAMES)
    with pytest.raises(PermissionDeniedError, match=r"needs the \*\*Trainer\*\* role"):
        require_may_act(member(REQUESTER), REQUESTER, 7, JobAction.CONFIRM, NAMES)
    with pytest.raises(PermissionDeniedError, match=r"needs the \*\*Trainer\*\* role"):
        require_may_act(member(OTHER, "Reviewer"), REQUESTER, 7, JobAction.ANSWER_ALARM, NAMES)


@pytest.mark.parametrize(
    ("amount", "who", "allowed"),
    [
        (Decimal("5.00"), member(OTHER, "Trainer"), True),  # the default itself: any trainer
        (Decimal("4.99"), member(OTHER, "Trainer"), True),
        (Decimal("5.01"), member(OTHER, "Trainer"), False),
        (Decimal("5.01"), member(OTHER, "LoRA Admin"), True),
        (Decimal("500"), member(OTHER, administrator=True), True),
    ],
)
def test_a_budget_above_the_default_needs_an_admin(amount: Decimal, who: Member, allowed: bool) -> None:
    default = Decimal("5.00")
    assert budget_needs_admin(amount, default) is (amount > default)
    if allowed:
        require_budget_authority(who, amount, default, NAMES)
    else:
        with pytest.raises(
            PermissionDeniedError, match=r"above this server's default \(\$5\.00\) needs an admin"
        ):
            require_budget_authority(who, amount, default, NAMES)


async def test_service_checks_a_request_before_planning(harness: Harness) -> None:
    service = harness.service
    trainer = member(USER, "trainer")
    names = RoleNames("trainer", "reviewer", "admin")
    params = await service.check_request(
        guild_id=GUILD, preset="sdxl-face", overrides="steps=40", budget_usd=None, member=trainer, roles=names
    )
    assert params == {"steps": "40"}
    with pytest.raises(NotFoundError, match="There is no preset `nope`"):
        await service.check_request(
            guild_id=GUILD, preset="nope", overrides=None, budget_usd=None, member=trainer, roles=names
        )
    with pytest.raises(OverrideError):
        await service.check_request(
            guild_id=GUILD,
            preset="sdxl-face",
            overrides="stepz=8",
            budget_usd=None,
            member=trainer,
            roles=names,
        )
    # The server's default job budget is $5.00 (training_settings).
    with pytest.raises(PermissionDeniedError, match="needs an admin"):
        await service.check_request(
            guild_id=GUILD,
            preset="sdxl-face",
            overrides=None,
            budget_usd=Decimal("5.01"),
            member=trainer,
            roles=names,
        )
    await service.check_request(
        guild_id=GUILD,
        preset="sdxl-face",
        overrides=None,
        budget_usd=Decimal("40"),
        member=member(USER, "admin"),
        roles=names,
    )


async def test_service_authorizes_acting_on_a_job(harness: Harness) -> None:
    service = harness.service
    names = RoleNames("trainer", "reviewer", "admin")
    quote = await service.start(guild_id=GUILD, dataset="elena", preset="test-sdxl", user_id=USER)
    assert quote.job_id is not None
    job_id = quote.job_id
    requester = member(USER, "trainer")
    job = await service.authorize(
        job_id, guild_id=GUILD, member=requester, roles=names, action=JobAction.CONFIRM
    )
    assert job.id == job_id
    with pytest.raises(PermissionDeniedError, match=f"Only <@{USER}> or an admin can confirm"):
        await service.authorize(
            job_id, guild_id=GUILD, member=member(OTHER, "trainer"), roles=names, action=JobAction.CONFIRM
        )
    with pytest.raises(NotFoundError):  # another server's job is not there at all
        await service.authorize(
            job_id, guild_id=GUILD + 1, member=requester, roles=names, action=JobAction.CANCEL
        )
    await service.cancel(job_id, user_id=USER)
    with pytest.raises(ConflictError, match=rf"Job #{job_id} has already ended \(cancelled\)"):
        await service.authorize(
            job_id, guild_id=GUILD, member=requester, roles=names, action=JobAction.CANCEL
        )
