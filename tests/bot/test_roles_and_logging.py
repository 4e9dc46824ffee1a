from __future__ import annotations

import logging

import pytest

from bot.errors import PermissionDeniedError
from bot.log import RedactSecrets
from bot.roles import Member, Role, RoleNames, has_role, require_role

NAMES = RoleNames("trainer", "reviewer", "admin")


def test_roles_by_name_case_insensitive_and_admin_implies_all() -> None:
    trainer = Member.of(1, ["Trainer"])
    assert has_role(trainer, Role.TRAINER, NAMES)
    assert not has_role(trainer, Role.REVIEWER, NAMES)
    admin = Member.of(2, ["admin"])
    assert all(has_role(admin, role, NAMES) for role in Role)
    owner = Member.of(3, [], is_administrator=True)
    assert has_role(owner, Role.ADMIN, NAMES)
    with pytest.raises(PermissionDeniedError, match="reviewer"):
        require_role(trainer, Role.REVIEWER, NAMES)


def test_secret_values_are_redacted_from_log_records() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("abcdef123456",), None)
    RedactSecrets(["abcdef123456"]).filter(record)
    assert record.getMessage() == "token is ***"
