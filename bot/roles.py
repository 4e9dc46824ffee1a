"""Who may do what (design §1), decided in one place.

trainer: gather, curate, spend money. reviewer: vote on checkpoints. admin: budgets and channels, and
everything the others may do. Members with Discord's Administrator permission count as admins, so a
server owner is never locked out of their own bot. Role names come from settings, overridable per guild.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from bot.errors import PermissionDeniedError


class Role(enum.StrEnum):
    TRAINER = "trainer"
    REVIEWER = "reviewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class RoleNames:
    trainer: str
    reviewer: str
    admin: str

    def name_of(self, role: Role) -> str:
        return getattr(self, role.value)


@dataclass(frozen=True)
class Member:
    """What the domain needs to know about a Discord member: no discord objects cross into bot/."""

    user_id: int
    role_names: frozenset[str]
    is_administrator: bool = False

    @classmethod
    def of(cls, user_id: int, role_names: Iterable[str], *, is_administrator: bool = False) -> Member:
        return cls(user_id, frozenset(name.casefold() for name in role_names), is_administrator)


def has_role(member: Member, role: Role, names: RoleNames) -> bool:
    if member.is_administrator or names.admin.casefold() in member.role_names:
        return True
    return names.name_of(role).casefold() in member.role_names


def require_role(member: Member, role: Role, names: RoleNames) -> None:
    """Raise a short, user-facing error when ``member`` lacks ``role``."""
    if not has_role(member, role, names):
        raise PermissionDeniedError(f"This needs the **{names.name_of(role)}** role.")
