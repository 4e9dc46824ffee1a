"""Who a message really pings, resolved as Discord does from its content, ``allowed_mentions`` and
the author's permissions; and the validation of ``allowed_mentions`` itself.

Rules (docs: message resource, "Allowed Mentions Object"; PR discord-api-docs#7629):
- Only the content is parsed: mentions inside embeds never ping.
- Without ``allowed_mentions``, regular messages parse users, roles and @everyone/@here; interaction
  responses and webhook messages parse users only.
- ``parse`` names the kinds parsed from the content; ``users``/``roles`` whitelist ids instead, and
  naming a kind in ``parse`` together with its list is refused (MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE).
- @everyone/@here ping only if the author has MENTION_EVERYONE in the channel; a role pings only if it
  is mentionable or the author has MENTION_EVERYONE.
- A reply pings the replied-to author unless ``allowed_mentions.replied_user`` is false (it defaults to
  false once ``allowed_mentions`` is given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .util import form_error

MENTION_EVERYONE = 1 << 17
MENTION_TYPES = ("users", "roles", "everyone")
MAX_IDS = 100

_USER = re.compile(r"<@!?(\d{1,20})>")
_ROLE = re.compile(r"<@&(\d{1,20})>")
_EVERYONE = re.compile(r"@(?:everyone|here)")


@dataclass
class Resolved:
    """Who a message pings."""

    user_ids: list[int] = field(default_factory=list)
    role_ids: list[int] = field(default_factory=list)
    everyone: bool = False


def check_allowed_mentions(allowed: Any) -> None:
    """400 50035 for an ``allowed_mentions`` object Discord refuses."""
    if allowed is None:
        return
    if not isinstance(allowed, dict):
        raise form_error(
            ["allowed_mentions"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
        )
    parse = allowed.get("parse") or []
    for i, kind in enumerate(parse):
        if kind not in MENTION_TYPES:
            raise form_error(
                ["allowed_mentions", "parse", i],
                "BASE_TYPE_CHOICES",
                "Value must be one of {'users', 'roles', 'everyone'}.",
            )
    for kind in ("users", "roles"):
        ids = allowed.get(kind) or []
        if len(ids) > MAX_IDS:
            raise form_error(
                ["allowed_mentions", kind], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_IDS} or fewer in length."
            )
        if ids and kind in parse:
            raise form_error(
                ["allowed_mentions"],
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )


def resolve(
    content: str,
    allowed: dict[str, Any] | None,
    *,
    webhook: bool,
    author_permissions: int,
    known_users: set[int],
    roles: dict[int, bool],
    replied_author: int | None = None,
) -> Resolved:
    """The users, roles and @everyone a message pings.

    ``roles`` maps the guild's role ids to whether each is mentionable; ``known_users`` are the ids
    Discord can resolve; ``replied_author`` the author of the message replied to, if any."""
    if allowed is None:
        parse = {"users"} if webhook else set(MENTION_TYPES)
        user_list: set[int] | None = None
        role_list: set[int] | None = None
        replied = True
    else:
        parse = set(allowed.get("parse") or [])
        user_list = {int(u) for u in allowed.get("users") or []}
        role_list = {int(r) for r in allowed.get("roles") or []}
        replied = bool(allowed.get("replied_user"))
    can_everyone = bool(author_permissions & MENTION_EVERYONE)
    out = Resolved()
    for match in _USER.finditer(content):
        uid = int(match.group(1))
        if uid not in known_users or uid in out.user_ids:
            continue
        if "users" in parse or (user_list is not None and uid in user_list):
            out.user_ids.append(uid)
    for match in _ROLE.finditer(content):
        rid = int(match.group(1))
        if rid not in roles or rid in out.role_ids:
            continue
        if not (roles[rid] or can_everyone):
            continue
        if "roles" in parse or (role_list is not None and rid in role_list):
            out.role_ids.append(rid)
    if "everyone" in parse and can_everyone and _EVERYONE.search(content):
        out.everyone = True
    if replied and replied_author is not None and replied_author not in out.user_ids:
        out.user_ids.append(replied_author)
    return out
