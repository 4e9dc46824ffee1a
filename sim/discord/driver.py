"""Test driver: realistic INTERACTION_CREATE payloads validated against the synced commands,
reactions and user messages, and :class:`InteractionHandle` to await what the bot answered."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .emoji import MAX_DISTINCT_REACTIONS
from .state import (
    MESSAGE_FLAG_EPHEMERAL,
    SimAttachment,
    SimChannel,
    SimInteraction,
    SimMember,
    SimMessage,
    SimRole,
    SimUser,
)

if TYPE_CHECKING:
    from .server import DiscordSimulator

# Application command option types.
(
    SUB_COMMAND,
    SUB_COMMAND_GROUP,
    STRING,
    INTEGER,
    BOOLEAN,
    USER,
    CHANNEL,
    ROLE,
    MENTIONABLE,
    NUMBER,
    ATTACHMENT,
) = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
)


def _usage_error(message: str) -> Exception:
    from .server import SimulatorUsageError

    return SimulatorUsageError(message)


class InteractionHandle:
    """What a test holds after invoking an interaction: await the bot's answers through it."""

    def __init__(self, sim: DiscordSimulator, interaction: SimInteraction) -> None:
        self.sim = sim
        self.interaction = interaction

    @property
    def id(self) -> int:
        """The interaction id."""
        return self.interaction.id

    @property
    def token(self) -> str:
        """The interaction token."""
        return self.interaction.token

    @property
    def acked(self) -> bool:
        """Whether the bot sent an accepted initial response."""
        return self.interaction.acked

    @property
    def response_type(self) -> int | None:
        """Callback type of the initial response (4 message, 5 defer, 6 defer update, 7 update,
        9 modal), or None."""
        return self.interaction.response_type

    @property
    def deferred(self) -> bool:
        """Whether the initial response was a defer (type 5 or 6)."""
        return self.interaction.response_type in (5, 6)

    @property
    def original(self) -> SimMessage | None:
        """The original response message (for component updates: the clicked message)."""
        mid = self.interaction.original_message_id
        return self.sim.messages.get(mid) if mid else None

    @property
    def ephemeral(self) -> bool:
        """Whether the initial response is ephemeral (message or defer flag 64)."""
        original = self.original
        if original is not None and self.interaction.response_type in (4, 5):
            return original.ephemeral
        data = self.interaction.response_data or {}
        return bool(int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)

    @property
    def followups(self) -> list[SimMessage]:
        """Messages sent through the follow-up webhook, in order (the first one after a
        "thinking" defer is the original message itself, filled in)."""
        return [self.sim.messages[i] for i in self.interaction.followup_ids]

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot opened (type 9 data), if any."""
        if self.interaction.response_type == 9:
            return self.interaction.response_data
        return None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """The autocomplete choices the bot answered with (callback type 8), if any."""
        if self.interaction.response_type == 8:
            return list((self.interaction.response_data or {}).get("choices") or [])
        return None

    async def ack(self, timeout: float = 5.0) -> int:  # noqa: ASYNC109 - test-facing wait API
        """Wait for the initial response; return its callback type."""
        await self.sim.wait_until(lambda: self.interaction.acked, timeout)
        assert self.interaction.response_type is not None
        return self.interaction.response_type

    async def response(self, timeout: float = 5.0) -> SimMessage | None:  # noqa: ASYNC109 - test-facing wait API
        """Wait for the visible response and return it: the message of a type-4/7 response, or
        the deferred message once it was filled in (edit of @original or first follow-up).
        None for a modal; the clicked message for a type-6 deferred update."""
        rtype = await self.ack(timeout)
        if rtype == 9:
            return None

        def filled() -> SimMessage | None:
            msg = self.original
            if msg is None:
                return None
            if rtype == 5 and msg.loading and not msg.deleted:
                return None
            return msg

        return await self.sim.wait_until(filled, timeout)

    async def followup(self, index: int = 0, timeout: float = 5.0) -> SimMessage:  # noqa: ASYNC109 - test-facing wait API
        """Wait for the ``index``-th follow-up message."""
        await self.sim.wait_until(lambda: len(self.interaction.followup_ids) > index, timeout)
        return self.sim.messages[self.interaction.followup_ids[index]]

    async def wait_followups(self, count: int, timeout: float = 5.0) -> list[SimMessage]:  # noqa: ASYNC109 - test-facing wait API
        """Wait until ``count`` follow-ups were sent; return them all."""
        await self.sim.wait_until(lambda: len(self.interaction.followup_ids) >= count, timeout)
        return self.followups

    async def submit_modal(
        self,
        values: dict[str, str],
        *,
        user: SimUser | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - test-facing wait API
    ) -> InteractionHandle:
        """Fill in and submit the modal the bot opened (type 5 MODAL_SUBMIT)."""
        await self.ack(timeout)
        modal = self.modal
        if modal is None:
            raise _usage_error("the bot did not answer with a modal")
        return await submit_modal(self.sim, self.interaction, modal, values, user or self.interaction.user)


# ---- interaction payloads --------------------------------------------------------------------
def _require_bot(sim: DiscordSimulator) -> None:
    if not sim.gateway.sessions:
        raise _usage_error("no bot has connected to the gateway yet")


async def _dispatch(
    sim: DiscordSimulator,
    itype: int,
    user: SimUser,
    channel: SimChannel,
    data: dict[str, Any],
    *,
    guild_scoped: bool = False,
    message: SimMessage | None = None,
    locale: str = "en-US",
    triggering: SimInteraction | None = None,
) -> InteractionHandle:
    """Send the interaction to the bot, wake whoever waits on the recorder, and hand back its handle.

    ``guild_scoped``: the command was registered for this guild, so its data names the guild (last key,
    as Discord sends it)."""
    if guild_scoped:
        data["guild_id"] = str(channel.guild_id)
    inter = _base_interaction(
        sim, itype, user, channel, data, message=message, locale=locale, triggering=triggering
    )
    await sim.recorder.notify()
    return InteractionHandle(sim, inter)


def _base_interaction(
    sim: DiscordSimulator,
    itype: int,
    user: SimUser,
    channel: SimChannel,
    data: dict[str, Any],
    *,
    message: SimMessage | None = None,
    locale: str = "en-US",
    triggering: SimInteraction | None = None,
) -> SimInteraction:
    """Build, store and dispatch an INTERACTION_CREATE (guild context)."""
    _require_bot(sim)
    if channel.guild_id is None:
        raise _usage_error("the simulator sends guild interactions only; pick a guild channel")
    guild = sim.guilds[channel.guild_id]
    member = guild.members.get(user.id)
    if member is None:
        raise _usage_error(f"{user.username} is not a member of {guild.name}")
    limit = sim._file_limit(channel)
    inter = SimInteraction(
        id=sim.snowflakes.next(),
        token="aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96),
        type=itype,
        user=user,
        channel_id=channel.id,
        guild_id=guild.id,
        data=data,
        created_at=sim.clock.monotonic(),
        attachment_size_limit=limit,
        source_message_id=message.id if message is not None else None,
        triggering=triggering,
    )
    permissions = guild.permissions_in(channel, user.id)
    payload: dict[str, Any] = {
        "id": str(inter.id),
        "application_id": str(sim.application_id),
        "type": itype,
        "token": inter.token,
        "version": 1,
        "guild_id": str(guild.id),
        "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
        "channel_id": str(channel.id),
        "channel": {**channel.to_dict(), "permissions": str(permissions)},
        "member": member.to_dict(permissions=permissions),
        "app_permissions": str(guild.permissions_in(channel, sim.bot_user.id)),
        "locale": locale,
        "guild_locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {"0": str(guild.id)},
        "context": 0,
        "attachment_size_limit": limit,
        "data": data,
    }
    if message is not None:
        payload["message"] = sim.message_payload(message)
    inter.payload = payload
    sim.interactions[inter.id] = inter
    sim.gateway.dispatch("INTERACTION_CREATE", payload)
    return inter


def _find_command(sim: DiscordSimulator, name: str, ctype: int, guild_id: int) -> tuple[dict[str, Any], bool]:
    """The synced command (guild-scoped first, then global) and whether it is guild-scoped."""
    for cmd in sim.guild_commands.get(guild_id, []):
        if cmd["name"] == name and int(cmd.get("type", 1)) == ctype:
            return cmd, True
    for cmd in sim.global_commands:
        if cmd["name"] == name and int(cmd.get("type", 1)) == ctype:
            contexts = cmd.get("contexts")
            if contexts is not None and 0 not in contexts:
                raise _usage_error(f"{name} is not available in guilds (contexts={contexts})")
            return cmd, False
    synced = [c["name"] for c in sim.global_commands] + [
        c["name"] for c in sim.guild_commands.get(guild_id, [])
    ]
    raise _usage_error(f"command {name!r} (type {ctype}) was never synced; synced: {synced}")


def _check_permission(sim: DiscordSimulator, cmd: dict[str, Any], user: SimUser, guild_id: int) -> None:
    """Discord hides a command from members lacking its default_member_permissions."""
    required = cmd.get("default_member_permissions")
    if required is None:
        return
    need = int(required)
    have = sim.guilds[guild_id].permissions_of(user.id)
    if have & need != need:
        raise _usage_error(f"{user.username} cannot see /{cmd['name']} (needs permissions {need})")


def _resolve_option(
    sim: DiscordSimulator,
    channel: SimChannel,
    spec: dict[str, Any],
    value: Any,
    resolved: dict[str, dict[str, Any]],
) -> Any:
    """Validate one option value against its synced spec; fill ``resolved``; return the wire value."""
    otype = int(spec["type"])
    name = spec["name"]
    guild = sim.guilds[channel.guild_id or 0]
    if otype == STRING:
        if not isinstance(value, str):
            raise _usage_error(f"option {name!r} expects a string, got {value!r}")
        lo, hi = spec.get("min_length"), spec.get("max_length")
        if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi) or len(value) > 6000:
            raise _usage_error(f"option {name!r}: length {len(value)} outside [{lo}, {hi}]")
    elif otype in (INTEGER, NUMBER):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (otype == INTEGER and not isinstance(value, int))
        ):
            raise _usage_error(f"option {name!r} expects {'an integer' if otype == INTEGER else 'a number'}")
        lo, hi = spec.get("min_value"), spec.get("max_value")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _usage_error(f"option {name!r}: {value} outside [{lo}, {hi}]")
    elif otype == BOOLEAN:
        if not isinstance(value, bool):
            raise _usage_error(f"option {name!r} expects a bool")
    elif otype in (USER, MENTIONABLE) and isinstance(value, SimUser | SimMember):
        user = value.user if isinstance(value, SimMember) else value
        resolved.setdefault("users", {})[str(user.id)] = user.to_dict()
        member = guild.members.get(user.id)
        if member is not None:
            member_data = member.to_dict(with_user=False, permissions=guild.permissions_of(user.id))
            resolved.setdefault("members", {})[str(user.id)] = member_data
        return str(user.id)
    elif otype in (ROLE, MENTIONABLE):
        role = value if isinstance(value, SimRole) else guild.role_named(str(value))
        if role is None:
            raise _usage_error(f"option {name!r}: unknown role {value!r}")
        resolved.setdefault("roles", {})[str(role.id)] = role.to_dict()
        return str(role.id)
    elif otype == USER:
        raise _usage_error(f"option {name!r} expects a SimUser")
    elif otype == CHANNEL:
        ch = sim.channel_by(value)
        types = spec.get("channel_types")
        if types and ch.type not in types:
            raise _usage_error(f"option {name!r}: channel type {ch.type} not in {types}")
        ch_data = {
            "id": str(ch.id),
            "name": ch.name,
            "type": ch.type,
            "permissions": str(Perm_ALL),
            "parent_id": None,
            "flags": 0,
        }
        resolved.setdefault("channels", {})[str(ch.id)] = ch_data
        return str(ch.id)
    elif otype == ATTACHMENT:
        att = _upload(sim, channel, value)
        resolved.setdefault("attachments", {})[str(att.id)] = att.to_dict(sim.base_url)
        return str(att.id)
    else:
        raise _usage_error(f"option {name!r} has unsupported type {otype}")
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise _usage_error(
            f"option {name!r}: {value!r} is not one of the choices {[c['value'] for c in choices]}"
        )
    return value


Perm_ALL = (1 << 51) - 1


def _upload(sim: DiscordSimulator, channel: SimChannel, value: Any) -> SimAttachment:
    """An attachment the user picked in the client: stored and served as an ephemeral upload."""
    if isinstance(value, SimAttachment):
        sim.files[value.id] = value
        return value
    if isinstance(value, tuple | list) and len(value) in (2, 3):
        filename, data = value[0], value[1]
        content_type = value[2] if len(value) == 3 else None
        att = SimAttachment(
            id=sim.snowflakes.next(),
            filename=str(filename),
            data=bytes(data),
            channel_id=channel.id,
            content_type=content_type,
            ephemeral=True,
        )
        sim.files[att.id] = att
        return att
    raise _usage_error(
        f"attachment options take (filename, bytes[, content_type]), got {type(value).__name__}"
    )


async def invoke_slash(
    sim: DiscordSimulator,
    name: str,
    options: dict[str, Any],
    *,
    user: SimUser,
    channel: SimChannel | int | str | None,
    attachments: Sequence[Any],
    locale: str = "en-US",
) -> InteractionHandle:
    """Validate ``/name options`` against the synced commands and dispatch INTERACTION_CREATE.

    ``name`` is the command path ("dataset create"). Attachment options take ``(filename, bytes)``;
    ``attachments`` fill the attachment options not given in ``options``, in declaration order.
    Raises SimulatorUsageError for unsynced commands, unknown/missing/invalid options."""
    ch = sim.channel_by(channel)
    if ch.guild_id is None:
        raise _usage_error("invoke_slash needs a guild channel")
    path = name.strip().lstrip("/").split()
    if not path:
        raise _usage_error("empty command name")
    cmd, guild_scoped = _find_command(sim, path[0], 1, ch.guild_id)
    _check_permission(sim, cmd, user, ch.guild_id)
    specs: list[dict[str, Any]] = cmd.get("options") or []
    chain: list[dict[str, Any]] = []
    for part in path[1:]:
        spec = next(
            (s for s in specs if s["name"] == part and int(s["type"]) in (SUB_COMMAND, SUB_COMMAND_GROUP)),
            None,
        )
        if spec is None:
            raise _usage_error(f"/{' '.join(path)}: no subcommand {part!r}")
        chain.append(spec)
        specs = spec.get("options") or []
    if any(int(s["type"]) in (SUB_COMMAND, SUB_COMMAND_GROUP) for s in specs):
        subs = [s["name"] for s in specs]
        raise _usage_error(f"/{' '.join(path)} is a group; pick a subcommand: {subs}")

    given = dict(options)
    unknown = set(given) - {s["name"] for s in specs}
    if unknown:
        raise _usage_error(f"/{' '.join(path)}: unknown options {sorted(unknown)}")
    pending = list(attachments)
    for spec in specs:
        if int(spec["type"]) == ATTACHMENT and spec["name"] not in given and pending:
            given[spec["name"]] = pending.pop(0)
    if pending:
        raise _usage_error(f"/{' '.join(path)}: {len(pending)} attachment(s) without an attachment option")
    missing = [s["name"] for s in specs if s.get("required") and s["name"] not in given]
    if missing:
        raise _usage_error(f"/{' '.join(path)}: missing required options {missing}")

    resolved: dict[str, dict[str, Any]] = {}
    leaf_options = []
    for spec in specs:  # Discord sends options in declaration order
        if spec["name"] in given:
            value = _resolve_option(sim, ch, spec, given[spec["name"]], resolved)
            leaf_options.append({"name": spec["name"], "type": int(spec["type"]), "value": value})
    nested: list[dict[str, Any]] = leaf_options
    for spec in reversed(chain):
        nested = [{"name": spec["name"], "type": int(spec["type"]), "options": nested}]
    data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1}
    if nested:
        data["options"] = nested
    if resolved:
        data["resolved"] = resolved
    return await _dispatch(sim, 2, user, ch, data, locale=locale, guild_scoped=guild_scoped)


async def invoke_autocomplete(
    sim: DiscordSimulator,
    name: str,
    options: dict[str, Any],
    focused: str,
    *,
    user: SimUser,
    channel: SimChannel | int | str | None,
) -> InteractionHandle:
    """A user typing into option ``focused`` of ``/name`` (APPLICATION_COMMAND_AUTOCOMPLETE, type 4).

    ``options`` are what the user filled in so far (the focused one's partial text included); the bot
    answers with callback type 8, whose ``choices`` the handle exposes."""
    ch = sim.channel_by(channel)
    if ch.guild_id is None:
        raise _usage_error("invoke_autocomplete needs a guild channel")
    path = name.strip().lstrip("/").split()
    cmd, guild_scoped = _find_command(sim, path[0], 1, ch.guild_id)
    _check_permission(sim, cmd, user, ch.guild_id)
    specs: list[dict[str, Any]] = cmd.get("options") or []
    chain: list[dict[str, Any]] = []
    for part in path[1:]:
        spec = next((s for s in specs if s["name"] == part), None)
        if spec is None:
            raise _usage_error(f"/{' '.join(path)}: no subcommand {part!r}")
        chain.append(spec)
        specs = spec.get("options") or []
    target = next((s for s in specs if s["name"] == focused), None)
    if target is None or not target.get("autocomplete"):
        raise _usage_error(f"option {focused!r} of /{' '.join(path)} has no autocomplete")
    unknown = set(options) - {s["name"] for s in specs}
    if unknown:
        raise _usage_error(f"/{' '.join(path)}: unknown options {sorted(unknown)}")
    leaf: list[dict[str, Any]] = []
    for spec in specs:
        if spec["name"] in options or spec["name"] == focused:
            entry: dict[str, Any] = {
                "name": spec["name"],
                "type": int(spec["type"]),
                "value": options.get(spec["name"], ""),
            }
            if spec["name"] == focused:
                entry["focused"] = True
                entry["value"] = str(entry["value"])  # what the user typed so far, as text
            leaf.append(entry)
    nested: list[dict[str, Any]] = leaf
    for spec in reversed(chain):
        nested = [{"name": spec["name"], "type": int(spec["type"]), "options": nested}]
    data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": nested}
    return await _dispatch(sim, 4, user, ch, data, guild_scoped=guild_scoped)


async def invoke_message_command(
    sim: DiscordSimulator,
    name: str,
    message_id: int,
    user: SimUser,
    *,
    channel: SimChannel | int | str | None,
) -> InteractionHandle:
    """A message context-menu command (type 3) on ``message_id`` (resolved.messages, full content)."""
    msg = sim.messages.get(message_id)
    if msg is None or msg.deleted or msg.ephemeral:
        raise _usage_error(f"no visible message {message_id}")
    ch = sim.channel_by(channel if channel is not None else msg.channel_id)
    assert ch.guild_id is not None
    cmd, guild_scoped = _find_command(sim, name, 3, ch.guild_id)
    _check_permission(sim, cmd, user, ch.guild_id)
    message_data = sim.message_event_payload(msg)
    data: dict[str, Any] = {
        "id": cmd["id"],
        "name": cmd["name"],
        "type": 3,
        "target_id": str(msg.id),
        "resolved": {"messages": {str(msg.id): message_data}},
    }
    return await _dispatch(sim, 2, user, ch, data, guild_scoped=guild_scoped)


async def invoke_user_command(
    sim: DiscordSimulator, name: str, target: SimUser, user: SimUser
) -> InteractionHandle:
    """A user context-menu command (type 2) on ``target``."""
    ch = sim.channel
    assert ch.guild_id is not None
    cmd, guild_scoped = _find_command(sim, name, 2, ch.guild_id)
    _check_permission(sim, cmd, user, ch.guild_id)
    guild = sim.guilds[ch.guild_id]
    resolved: dict[str, Any] = {"users": {str(target.id): target.to_dict()}}
    if target.id in guild.members:
        resolved["members"] = {
            str(target.id): guild.members[target.id].to_dict(
                with_user=False, permissions=guild.permissions_of(target.id)
            )
        }
    data: dict[str, Any] = {
        "id": cmd["id"],
        "name": cmd["name"],
        "type": 2,
        "target_id": str(target.id),
        "resolved": resolved,
    }
    return await _dispatch(sim, 2, user, ch, data, guild_scoped=guild_scoped)


def _find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for comp in components:
        if comp.get("custom_id") == custom_id:
            return comp
        for key in ("components", "accessory"):
            child = comp.get(key)
            children = child if isinstance(child, list) else [child] if isinstance(child, dict) else []
            found = _find_component(children, custom_id)
            if found is not None:
                return found
    return None


async def invoke_component(
    sim: DiscordSimulator, message_id: int, custom_id: str, user: SimUser, *, values: Sequence[str] | None
) -> InteractionHandle:
    """Click the component ``custom_id`` on a message (type 3 MESSAGE_COMPONENT interaction)."""
    msg = sim.messages.get(message_id)
    if msg is None or msg.deleted:
        raise _usage_error(f"no message {message_id}")
    if msg.ephemeral and msg.interaction_metadata and msg.interaction_metadata["user"]["id"] != str(user.id):
        raise _usage_error("only the invoking user can see (and click) an ephemeral message")
    comp = _find_component(msg.components, custom_id)
    if comp is None:
        raise _usage_error(f"message {message_id} has no component {custom_id!r}")
    if comp.get("disabled"):
        raise _usage_error(f"component {custom_id!r} is disabled")
    ctype = int(comp["type"])
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
    if ctype in (3, 5, 6, 7, 8):
        if values is None:
            raise _usage_error("select menus need values=[...]")
        if ctype == 3:
            allowed = [o["value"] for o in comp.get("options", [])]
            bad = [v for v in values if v not in allowed]
            if bad:
                raise _usage_error(f"{bad} are not options of {custom_id!r}: {allowed}")
        data["values"] = list(values)
    channel = sim.channel_by(msg.channel_id)
    return await _dispatch(sim, 3, user, channel, data, message=msg)


async def submit_modal(
    sim: DiscordSimulator,
    parent: SimInteraction,
    modal: dict[str, Any],
    values: dict[str, str],
    user: SimUser,
) -> InteractionHandle:
    """Submit a modal: text inputs by custom_id (type 5 MODAL_SUBMIT)."""
    rows = []
    known = set()
    for row in modal.get("components", []):
        inner = row.get("components") or ([row["component"]] if "component" in row else [])
        out = []
        for comp in inner:
            cid = comp.get("custom_id")
            known.add(cid)
            if comp.get("required", True) and comp.get("type") == 4 and cid not in values:
                raise _usage_error(f"modal field {cid!r} is required")
            out.append({"type": comp.get("type", 4), "custom_id": cid, "value": values.get(cid, "")})
        if "component" in row:
            rows.append({"type": row.get("type", 18), "component": out[0] if out else {}})
        else:
            rows.append({"type": 1, "components": out})
    unknown = set(values) - known
    if unknown:
        raise _usage_error(f"modal has no fields {sorted(unknown)}")
    channel = sim.channel_by(parent.channel_id)
    message = sim.messages.get(parent.source_message_id or 0)
    data = {"custom_id": modal["custom_id"], "components": rows}
    return await _dispatch(sim, 5, user, channel, data, message=message, triggering=parent)


# ---- reactions and user messages ---------------------------------------------------------
def _reaction_payload(
    sim: DiscordSimulator, msg: SimMessage, emoji: dict[str, Any], user: SimUser
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "user_id": str(user.id),
        "channel_id": str(msg.channel_id),
        "message_id": str(msg.id),
        "emoji": dict(emoji),
        "burst": False,
        "type": 0,
    }
    if msg.guild_id is not None:
        data["guild_id"] = str(msg.guild_id)
    return data


def add_reaction(
    sim: DiscordSimulator, msg: SimMessage, key: str, emoji: dict[str, Any], user: SimUser
) -> bool:
    """Record ``user``'s reaction and dispatch MESSAGE_REACTION_ADD (no-op if already there)."""
    entry = msg.reactions.setdefault(key, (emoji, []))
    if user.id in entry[1]:
        return False
    entry[1].append(user.id)
    data = _reaction_payload(sim, msg, emoji, user)
    data.update(message_author_id=str(msg.author.id), burst_colors=[])
    if msg.guild_id is not None:
        member = sim.guilds[msg.guild_id].members.get(user.id)
        if member is not None:
            data["member"] = member.to_dict()
    sim.gateway.dispatch("MESSAGE_REACTION_ADD", data)
    return True


def remove_reaction(sim: DiscordSimulator, msg: SimMessage, key: str, user: SimUser) -> bool:
    """Remove ``user``'s reaction and dispatch MESSAGE_REACTION_REMOVE (no-op if absent)."""
    entry = msg.reactions.get(key)
    if entry is None or user.id not in entry[1]:
        return False
    entry[1].remove(user.id)
    if not entry[1]:
        del msg.reactions[key]
    sim.gateway.dispatch("MESSAGE_REACTION_REMOVE", _reaction_payload(sim, msg, entry[0], user))
    return True


def _visible_message(sim: DiscordSimulator, message_id: int) -> SimMessage:
    msg = sim.messages.get(message_id)
    if msg is None or msg.deleted or msg.ephemeral:
        raise _usage_error(f"no visible message {message_id} to react to")
    return msg


def react(sim: DiscordSimulator, message_id: int, emoji: str, user: SimUser) -> None:
    """A user adds a reaction."""
    from .server import parse_emoji

    _require_bot(sim)
    msg = _visible_message(sim, message_id)
    try:
        key, emoji_obj = parse_emoji(emoji, sim.custom_emoji_ids())
    except Exception:
        raise _usage_error(f"{emoji!r} is not an emoji a user could pick") from None
    if key not in msg.reactions and len(msg.reactions) >= MAX_DISTINCT_REACTIONS:
        raise _usage_error("the message already carries 20 distinct reactions")
    add_reaction(sim, msg, key, emoji_obj, user)


def unreact(sim: DiscordSimulator, message_id: int, emoji: str, user: SimUser) -> None:
    """A user removes their reaction."""
    from .server import parse_emoji

    msg = _visible_message(sim, message_id)
    key, _emoji_obj = parse_emoji(emoji)
    remove_reaction(sim, msg, key, user)


def post_user_message(
    sim: DiscordSimulator,
    channel: SimChannel | int | str | None,
    user: SimUser,
    content: str,
    attachments: Sequence[tuple[str, bytes]],
) -> SimMessage:
    """A human posts a message with optional files (MESSAGE_CREATE)."""
    ch = sim.channel_by(channel)
    if len(content) > 2000:
        raise _usage_error("a user cannot post more than 2000 characters")
    file_parts = {i: (str(name), bytes(data)) for i, (name, data) in enumerate(attachments)}
    if not content and not file_parts:
        raise _usage_error("a user cannot post an empty message")
    msg = sim.create_message(ch, user, {"content": content}, file_parts)
    sim.dispatch_message("MESSAGE_CREATE", msg)
    return msg
