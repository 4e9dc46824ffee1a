"""Errors whose message is safe and useful to show the user (short, no secrets, no internals).

Cogs turn these into a private (ephemeral) reply; anything else is logged with a reference id.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix. ``str(error)`` is shown to them as is."""


class InvalidInputError(UserError):
    pass


class NotFoundError(UserError):
    pass


class PermissionDeniedError(UserError):
    pass


class ConflictError(UserError):
    pass


class BudgetExceededError(UserError):
    pass


class ServiceUnavailableError(UserError):
    """An outside service (RunPod, Cloudinary, a URL) failed in a way worth telling the user."""


class StartupError(Exception):
    """The bot cannot start for a reason the operator must fix; the message is one line."""
