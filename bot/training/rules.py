"""The rules of who may do what to a training job, each decided here once (design §1, §7).

- **Who may act on a job** (the ``/train cancel`` command, the quote's Confirm / Cancel buttons, a ✅
  on the quote): an admin always; otherwise only the member who requested it. Confirming rents a pod
  and so spends money: the requester must still hold the trainer role for that. Cancelling only ever
  stops spending, so a requester who lost the role may still cancel their own job.
- **Who may answer a job's face alarm** (its Stop / Let it run / Retry buttons): the requester, any
  trainer or an admin — the alarm asks the team, not only the requester, to save or spend money.
- **Budget authority**: a job budget above the server's default job budget needs an admin.
- **Live states** are :data:`storage.models.LIVE_STATES` (beside the enum, so queries can use them);
  :func:`bot.training.states.is_live` is the domain's test.

Discord never enters here: the cog turns the member into a :class:`bot.roles.Member`.
"""

from __future__ import annotations

import enum
from decimal import Decimal

from bot.errors import PermissionDeniedError
from bot.roles import Member, Role, RoleNames, has_role
from bot.training.money import usd


class JobAction(enum.StrEnum):
    """What a member asks to do to a job."""

    CONFIRM = "confirm"  # pending → provisioning: a pod is rented
    CANCEL = "cancel"  # the job ends and its pod (if any) is terminated
    ANSWER_ALARM = "answer_alarm"  # its face alarm: stop the run, let it run, or retry it changed


def may_act(member: Member, requested_by: int, action: JobAction, names: RoleNames) -> bool:
    """Whether ``member`` may ``action`` a job requested by user ``requested_by``."""
    if has_role(member, Role.ADMIN, names):
        return True
    if action == JobAction.ANSWER_ALARM:
        return member.user_id == requested_by or has_role(member, Role.TRAINER, names)
    if member.user_id != requested_by:
        return False
    return action == JobAction.CANCEL or has_role(member, Role.TRAINER, names)


def require_may_act(
    member: Member, requested_by: int, job_id: int, action: JobAction, names: RoleNames
) -> None:
    """Raise a short, user-facing :class:`PermissionDeniedError` unless :func:`may_act`."""
    if may_act(member, requested_by, action, names):
        return
    if member.user_id != requested_by and action != JobAction.ANSWER_ALARM:
        raise PermissionDeniedError(f"Only <@{requested_by}> or an admin can {action.value} job #{job_id}.")
    raise PermissionDeniedError(f"This needs the **{names.name_of(Role.TRAINER)}** role.")


def budget_needs_admin(amount: Decimal, default_job_budget: Decimal) -> bool:
    """A job budget above the server's default needs an admin (at or below it, any trainer)."""
    return amount > default_job_budget


def require_budget_authority(
    member: Member, amount: Decimal, default_job_budget: Decimal, names: RoleNames
) -> None:
    """Raise :class:`PermissionDeniedError` when ``member`` may not set a job budget of ``amount``."""
    if budget_needs_admin(amount, default_job_budget) and not has_role(member, Role.ADMIN, names):
        raise PermissionDeniedError(
            f"A budget above this server's default ({usd(default_job_budget)}) needs an admin."
        )
