"""The Discord simulator: an aiohttp app on 127.0.0.1 serving REST (/api/v10), the gateway
(/gateway) and an attachment CDN, with state, rules, recorder and the test driver."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from . import driver, limits, mentions, spec
from .emoji import MAX_DISTINCT_REACTIONS, parse_emoji, too_many_reactions
from .gateway import Gateway, GatewaySession, Intents
from .objects import without_nulls
from .ratelimit import Injection, RateLimiter
from .recorder import GatewayFrame, RecordedRequest, Recorder
from .state import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    MessageVersion,
    Overwrite,
    Perm,
    SimAttachment,
    SimChannel,
    SimGuild,
    SimInteraction,
    SimMember,
    SimMessage,
    SimRole,
    SimUser,
)
from .util import (
    TIER_FILE_SIZE_LIMIT,
    ApiError,
    SimClock,
    Snowflakes,
    already_acknowledged,
    form_error,
    invalid_webhook_token,
    json_response,
    missing_access,
    missing_permissions,
    snowflake_time,
    unauthorized,
    unknown_channel,
    unknown_interaction,
    unknown_message,
    unknown_webhook,
)

API = "/api/v10"
# enforce_nonce is checked "in the past few minutes" (Discord's docs give no figure).
NONCE_WINDOW = timedelta(minutes=5)
# Parsed body of the current request, stored by the middleware for the handlers.
_JSON = web.RequestKey("sim.json", object)
_FILES = web.RequestKey("sim.files", dict)
_SIZE = web.RequestKey("sim.size", int)
# Message flags a bot may set/change on create/edit: SUPPRESS_EMBEDS, EPHEMERAL (interactions
# only), SUPPRESS_NOTIFICATIONS, IS_COMPONENTS_V2.
_SETTABLE_FLAGS = (1 << 2) | (1 << 12) | (1 << 15)


def _permissions_string(value: Any) -> str | None:
    return None if value is None else str(int(value))


class SimulatorUsageError(Exception):
    """A test asked the simulator for something a real Discord user could not do (a test bug)."""


class DiscordSimulator:
    """A faithful local Discord for the real discord.py client. See the package docstring."""

    def __init__(
        self,
        *,
        bot_token: str = "MTAwMDAwMDAwMDAwMDAwMDAw.sim.bot-token",
        bot_name: str = "loraops",
        guild_name: str = "loraops-sim",
        channels: Sequence[str] = ("general",),
        premium_tier: int = 0,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        privileged_intents: int = Intents.PRIVILEGED,
        rate_limits: dict[str, tuple[int, float]] | None = None,
        response_deadline: float = 3.0,
        token_lifetime: float = 15 * 60.0,
        heartbeat_interval_ms: int = 41250,
        validate: bool | None = None,
    ) -> None:
        self.clock = SimClock()
        # Every body in and out is checked against Discord's OpenAPI description (sim/discord/spec.py);
        # by default wherever the spec and jsonschema are there (the test suite insists on both).
        self.validate = spec.unavailable_reason() is None if validate is None else validate
        self.violations: list[spec.Violation] = []
        self.snowflakes = Snowflakes()
        self.recorder = Recorder(self.clock)
        # A shortcut, not a second definition: the first request matching ``method`` and
        # ``re.search(path_regex, path)`` (seen or future), see Recorder.wait_for_request.
        self.wait_for_request = self.recorder.wait_for_request
        self.ratelimiter = RateLimiter(rate_limits)
        self.gateway = Gateway(self, heartbeat_interval_ms=heartbeat_interval_ms)
        self.bot_token = bot_token
        self.privileged_intents = privileged_intents
        self.response_deadline = response_deadline
        self.token_lifetime = token_lifetime
        # How long Discord remembers a nonce for enforce_nonce (a test may shorten it to zero: the
        # bot was down longer than Discord remembers).
        self.nonce_window = NONCE_WINDOW
        self.base_url = ""

        self.users: dict[int, SimUser] = {}
        self.guilds: dict[int, SimGuild] = {}
        self.dm_channels: dict[int, SimChannel] = {}
        self.messages: dict[int, SimMessage] = {}
        self.files: dict[int, SimAttachment] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, SimInteraction] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}

        self.application_id = self.snowflakes.next()
        self.bot_user = self._new_user(bot_name, bot=True, user_id=self.application_id)
        owner = self._new_user("owner", global_name="Owner")
        self.owner = owner
        guild = SimGuild(
            id=self.snowflakes.next(), name=guild_name, owner_id=owner.id, premium_tier=premium_tier
        )
        guild.roles[guild.id] = SimRole(
            id=guild.id, name="@everyone", permissions=everyone_permissions, position=0
        )
        bot_role = SimRole(
            id=self.snowflakes.next(), name=bot_name, permissions=bot_permissions, position=1, managed=True
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot_user.id] = SimMember(user=self.bot_user, role_ids=[bot_role.id])
        guild.members[owner.id] = SimMember(user=owner)
        self.guilds[guild.id] = guild
        for position, name in enumerate(channels):
            cid = self.snowflakes.next()
            guild.channels[cid] = SimChannel(id=cid, name=name, guild_id=guild.id, position=position)

        self._runner: web.AppRunner | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/gateway", self.gateway.handle)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        r.add_get("/ephemeral-attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        a = API
        r.add_get(a + "/users/@me", self._get_me)
        r.add_get(a + "/oauth2/applications/@me", self._get_application)
        r.add_get(a + "/applications/@me", self._get_application)
        r.add_get(a + "/gateway", self._get_gateway)
        r.add_get(a + "/gateway/bot", self._get_gateway_bot)
        r.add_get(a + "/applications/{app_id}/commands", self._get_commands)
        r.add_put(a + "/applications/{app_id}/commands", self._put_commands)
        r.add_get(a + "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands)
        r.add_put(a + "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        r.add_post(a + "/interactions/{interaction_id}/{token}/callback", self._interaction_callback)
        r.add_post(a + "/webhooks/{app_id}/{token}", self._webhook_execute)
        r.add_get(a + "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_get)
        r.add_patch(a + "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_edit)
        r.add_delete(a + "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_delete)
        r.add_get(a + "/channels/{channel_id}", self._get_channel)
        r.add_get(a + "/channels/{channel_id}/messages", self._list_messages)
        r.add_post(a + "/channels/{channel_id}/messages", self._create_message)
        r.add_get(a + "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r.add_patch(a + "/channels/{channel_id}/messages/{message_id}", self._edit_message)
        r.add_delete(a + "/channels/{channel_id}/messages/{message_id}", self._delete_message)
        react = a + "/channels/{channel_id}/messages/{message_id}/reactions"
        r.add_put(react + "/{emoji}/@me", self._add_reaction)
        r.add_delete(react + "/{emoji}/{user_id}", self._remove_reaction)
        r.add_get(react + "/{emoji}", self._get_reactions)
        r.add_delete(react + "/{emoji}", self._clear_emoji)
        r.add_delete(react, self._clear_reactions)
        r.add_post(a + "/channels/{channel_id}/typing", self._typing)
        r.add_get(a + "/guilds/{guild_id}", self._get_guild)
        r.add_get(a + "/guilds/{guild_id}/roles", self._get_roles)
        r.add_get(a + "/guilds/{guild_id}/channels", self._get_guild_channels)
        r.add_get(a + "/guilds/{guild_id}/members", self._list_members)
        r.add_get(a + "/guilds/{guild_id}/members/{user_id}", self._get_member)
        r.add_get(a + "/users/{user_id}", self._get_user)
        r.add_post(a + "/users/@me/channels", self._create_dm)
        return app

    async def start(self) -> str:
        """Serve on 127.0.0.1 (ephemeral port); return the base URL ``http://127.0.0.1:PORT``."""
        self._runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        """Close gateway connections and stop serving."""
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v10`` (what ``discord.http.Route.BASE`` must be)."""
        return self.base_url + API

    @property
    def gateway_url(self) -> str:
        """``ws://127.0.0.1:PORT/gateway``."""
        return self.base_url.replace("http://", "ws://", 1) + "/gateway"

    def patch_discord(self) -> Callable[[], None]:
        """Point discord.py's REST and gateway at this simulator; returns a restore callable."""
        from .patch import patch_discord

        return patch_discord(self)

    # ---- state accessors -----------------------------------------------------------------
    @property
    def guild(self) -> SimGuild:
        """The (first) guild."""
        return next(iter(self.guilds.values()))

    @property
    def channel(self) -> SimChannel:
        """The guild's first text channel."""
        return next(c for c in self.guild.channels.values() if c.type == 0)

    def channel_by(self, ref: SimChannel | int | str | None) -> SimChannel:
        """A channel given as object, id or name (None: the default channel)."""
        if ref is None:
            return self.channel
        if isinstance(ref, SimChannel):
            return ref
        for guild in self.guilds.values():
            for ch in guild.channels.values():
                if ch.id == ref or ch.name == ref or str(ch.id) == str(ref):
                    return ch
        dm = self.dm_channels.get(int(ref)) if str(ref).isdigit() else None
        if dm is not None:
            return dm
        raise SimulatorUsageError(f"unknown channel {ref!r}")

    def find_channel(self, channel_id: int) -> SimChannel | None:
        """The channel with this id (guild or DM), if any."""
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return self.dm_channels.get(channel_id)

    def messages_in(
        self, channel: SimChannel | int | str | None = None, *, include_ephemeral: bool = True
    ) -> list[SimMessage]:
        """Messages in a channel, oldest first (deleted ones left out)."""
        cid = self.channel_by(channel).id
        return [
            m
            for m in self.messages.values()
            if m.channel_id == cid and not m.deleted and (include_ephemeral or not m.ephemeral)
        ]

    def message(self, message_id: int | str) -> SimMessage:
        """The message with this id (KeyError if unknown)."""
        return self.messages[int(message_id)]

    def edits_of(self, message_id: int | str) -> list[MessageVersion]:
        """The message's state after each edit, in order (empty if never edited)."""
        return self.message(message_id).versions[1:]

    def files_of(self, message_id: int | str) -> list[tuple[str, bytes]]:
        """``[(filename, bytes)]`` currently attached to the message."""
        return self.message(message_id).files

    def commands(self, guild: SimGuild | int | None = None) -> list[dict[str, Any]]:
        """The commands the bot synced (guild-scoped when ``guild`` is given, else global)."""
        if guild is None:
            return list(self.global_commands)
        gid = guild.id if isinstance(guild, SimGuild) else int(guild)
        return list(self.guild_commands.get(gid, []))

    # ---- population (driver) -------------------------------------------------------------
    def _new_user(
        self, username: str, *, bot: bool = False, global_name: str | None = None, user_id: int | None = None
    ) -> SimUser:
        user = SimUser(
            id=user_id or self.snowflakes.next(), username=username, global_name=global_name, bot=bot
        )
        self.users[user.id] = user
        return user

    def add_role(self, name: str, permissions: int = 0, *, guild: SimGuild | None = None) -> SimRole:
        """Create a role (dispatches GUILD_ROLE_CREATE when a bot is connected)."""
        guild = guild or self.guild
        existing = guild.role_named(name)
        if existing is not None:
            return existing
        role = SimRole(
            id=self.snowflakes.next(), name=name, permissions=permissions, position=len(guild.roles)
        )
        guild.roles[role.id] = role
        self.gateway.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.to_dict()})
        return role

    def role(self, name: str, *, guild: SimGuild | None = None) -> SimRole:
        """The role called ``name``."""
        role = (guild or self.guild).role_named(name)
        if role is None:
            raise SimulatorUsageError(f"no role named {name!r}")
        return role

    def add_member(
        self,
        name: str,
        roles: Iterable[str | SimRole] = (),
        *,
        guild: SimGuild | None = None,
        global_name: str | None = None,
        nick: str | None = None,
        bot: bool = False,
    ) -> SimUser:
        """Create a user and make them a guild member with these roles (created if missing).

        Dispatches GUILD_MEMBER_ADD when a bot is connected (with the GUILD_MEMBERS intent)."""
        guild = guild or self.guild
        user = self._new_user(name, bot=bot, global_name=global_name or name.capitalize())
        role_ids = [(r if isinstance(r, SimRole) else self.add_role(r, guild=guild)).id for r in roles]
        member = SimMember(user=user, role_ids=role_ids, nick=nick)
        guild.members[user.id] = member
        self.gateway.dispatch("GUILD_MEMBER_ADD", {**member.to_dict(), "guild_id": str(guild.id)})
        return user

    def set_roles(
        self, user: SimUser, roles: Iterable[str | SimRole], *, guild: SimGuild | None = None
    ) -> None:
        """Replace a member's roles (dispatches GUILD_MEMBER_UPDATE)."""
        guild = guild or self.guild
        member = guild.members[user.id]
        member.role_ids = [(r if isinstance(r, SimRole) else self.add_role(r, guild=guild)).id for r in roles]
        self.gateway.dispatch("GUILD_MEMBER_UPDATE", {**member.to_dict(), "guild_id": str(guild.id)})

    def add_channel(
        self, name: str, *, guild: SimGuild | None = None, topic: str | None = None
    ) -> SimChannel:
        """Create a text channel (dispatches CHANNEL_CREATE)."""
        guild = guild or self.guild
        existing = guild.channel_named(name)
        if existing is not None:
            return existing
        ch = SimChannel(id=self.snowflakes.next(), name=name, guild_id=guild.id, position=len(guild.channels))
        ch.topic = topic
        guild.channels[ch.id] = ch
        self.gateway.dispatch("CHANNEL_CREATE", ch.to_dict())
        return ch

    def add_emoji(self, name: str, *, guild: SimGuild | None = None) -> str:
        """Upload a custom emoji to the guild; returns its reaction form ``name:id``."""
        guild = guild or self.guild
        eid = self.snowflakes.next()
        guild.emojis[eid] = name
        return f"{name}:{eid}"

    def custom_emoji_ids(self) -> set[int]:
        """Ids of every custom emoji the bot can use (those of its guilds)."""
        return {eid for g in self.guilds.values() for eid in g.emojis}

    def set_overwrite(
        self,
        channel: SimChannel | int | str | None,
        target: SimRole | SimUser,
        *,
        allow: int = 0,
        deny: int = 0,
    ) -> None:
        """Set a channel's permission overwrite for a role or a member (dispatches CHANNEL_UPDATE);
        ``allow=deny=0`` removes it."""
        ch = self.channel_by(channel)
        kind = 0 if isinstance(target, SimRole) else 1
        if allow == 0 and deny == 0:
            ch.overwrites.pop(target.id, None)
        else:
            ch.overwrites[target.id] = Overwrite(id=target.id, type=kind, allow=allow, deny=deny)
        self.gateway.dispatch("CHANNEL_UPDATE", ch.to_dict())

    def member(self, user: SimUser | int, guild: SimGuild | None = None) -> SimMember:
        """The guild membership of ``user``."""
        uid = user.id if isinstance(user, SimUser) else int(user)
        return (guild or self.guild).members[uid]

    # ---- failure injection ---------------------------------------------------------------
    def inject_429(
        self,
        method: str,
        path_regex: str,
        retry_after: float = 0.1,
        times: int = 1,
        *,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with a 429 (``path_regex`` is searched in the
        path relative to /api/v10, e.g. ``r"/channels/\\d+/messages/\\d+$"``; method "*" for any)."""
        self.ratelimiter.injections.append(
            Injection(method.upper(), re.compile(path_regex), times, retry_after, is_global, status=429)
        )

    def inject_error(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: int = 0,
        message: str = "",
        times: int = 1,
        *,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``/``code`` (e.g. 403 50013).
        ``after=True``: carry the request out first, then answer with the error (a 5xx from Discord's
        edge after the message was made). Note: discord.py retries 500/502/504/524 after sleeping
        1 + 2n seconds."""
        self.ratelimiter.injections.append(
            Injection(
                method.upper(),
                re.compile(path_regex),
                times,
                status=status,
                code=code,
                message=message or f"{status}: injected",
                after=after,
            )
        )

    async def drop_gateway(self, code: int = 4000) -> None:
        """Drop the bot's websocket (4000: discord.py reconnects and RESUMEs, missed events replay)."""
        await self.gateway.drop(code)

    # ---- recorder shortcuts --------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every recorded REST/CDN request."""
        return self.recorder.requests

    @property
    def frames(self) -> list[GatewayFrame]:
        """Every recorded gateway frame."""
        return self.recorder.frames

    async def wait_for_frame(self, **kwargs: Any) -> GatewayFrame:
        """See :meth:`Recorder.wait_for_frame` (direction, op, t, predicate, timeout, after)."""
        return await self.recorder.wait_for_frame(**kwargs)

    async def wait_until(self, check: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109 - test-facing wait API
        """Wait until ``check()`` is truthy, re-checked after every request/frame; returns it."""
        return await self.recorder.wait_until(check, timeout)

    async def wait_for_bot(self, timeout: float = 5.0) -> GatewaySession:  # noqa: ASYNC109 - test-facing wait API
        """Wait until the bot has IDENTIFYed and its session is connected."""

        def check() -> GatewaySession | None:
            return next((s for s in self.gateway.sessions.values() if s.connected), None)

        return await self.wait_until(check, timeout)

    # ---- driver (see driver.py) ----------------------------------------------------------
    async def invoke_slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: SimUser,
        channel: SimChannel | int | str | None = None,
        attachments: Sequence[Any] = (),
        locale: str = "en-US",
    ) -> driver.InteractionHandle:
        """Send INTERACTION_CREATE for ``/name`` (``"dataset create"`` for subcommands)."""
        return await driver.invoke_slash(
            self, name, options or {}, user=user, channel=channel, attachments=attachments, locale=locale
        )

    async def invoke_autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: SimUser,
        channel: SimChannel | int | str | None = None,
    ) -> driver.InteractionHandle:
        """The user types into option ``focused`` of ``/name``; ``await h.ack()`` then ``h.choices``."""
        return await driver.invoke_autocomplete(self, name, options, focused, user=user, channel=channel)

    async def invoke_message_command(
        self,
        name: str,
        message_id: int | str,
        user: SimUser,
        *,
        channel: SimChannel | int | str | None = None,
    ) -> driver.InteractionHandle:
        """Send a message context-menu interaction (Apps → ``name``) on a message."""
        return await driver.invoke_message_command(self, name, int(message_id), user, channel=channel)

    async def invoke_user_command(
        self, name: str, target: SimUser, user: SimUser
    ) -> driver.InteractionHandle:
        """Send a user context-menu interaction on ``target``."""
        return await driver.invoke_user_command(self, name, target, user)

    async def invoke_component(
        self, message_id: int | str, custom_id: str, user: SimUser, *, values: Sequence[str] | None = None
    ) -> driver.InteractionHandle:
        """Click a button (or pick ``values`` in a select) on a message."""
        return await driver.invoke_component(self, int(message_id), custom_id, user, values=values)

    async def react(self, message_id: int | str, emoji: str, user: SimUser) -> None:
        """``user`` reacts (MESSAGE_REACTION_ADD with type and member)."""
        driver.react(self, int(message_id), emoji, user)
        await self.recorder.notify()

    async def unreact(self, message_id: int | str, emoji: str, user: SimUser) -> None:
        """``user`` removes their reaction (MESSAGE_REACTION_REMOVE)."""
        driver.unreact(self, int(message_id), emoji, user)
        await self.recorder.notify()

    def post_user_message(
        self,
        channel: SimChannel | int | str | None,
        user: SimUser,
        content: str = "",
        attachments: Sequence[tuple[str, bytes]] = (),
    ) -> SimMessage:
        """A human posts a message (MESSAGE_CREATE); attachments are served by the CDN."""
        return driver.post_user_message(self, channel, user, content, attachments)

    # ---- payload builders ----------------------------------------------------------------
    def ready_payload(self, session: GatewaySession) -> dict[str, Any]:
        """The READY event for a new session."""
        user = {**self.bot_user.to_dict(), "verified": True, "mfa_enabled": False, "flags": 0}
        return {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds.values()],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["simulator"],
            "_trace": ["simulator"],
        }

    def guild_create_payload(self, guild: SimGuild) -> dict[str, Any]:
        """GUILD_CREATE with roles, channels and every member (member_count == len(members))."""
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(guild.members),
            "features": [],
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "description": None,
            "home_header": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "application_id": None,
            "region": "deprecated",
            "widget_enabled": False,
            "widget_channel_id": None,
            "max_presences": None,
            "max_members": 25000000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "rules_channel_id": None,
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "premium_progress_bar_enabled": False,
            "nsfw": False,
            "incidents_data": None,
            "joined_at": datetime.now(UTC).isoformat(),
            "roles": [r.to_dict() for r in guild.roles.values()],
            "channels": [c.to_dict() for c in guild.channels.values()],
            "members": [m.to_dict() for m in guild.members.values()],
            "emojis": [
                {
                    "id": str(eid),
                    "name": name,
                    "roles": [],
                    "require_colons": True,
                    "managed": False,
                    "animated": False,
                    "available": True,
                }
                for eid, name in guild.emojis.items()
            ],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
        }

    def message_payload(self, msg: SimMessage) -> dict[str, Any]:
        """A message as the REST API returns it."""
        return msg.to_dict(self.base_url, self.bot_user.id)

    def message_event_payload(self, msg: SimMessage) -> dict[str, Any]:
        """A message as MESSAGE_CREATE/UPDATE carry it (guild_id, and member for guild authors)."""
        data = self.message_payload(msg)
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
            guild = self.guilds.get(msg.guild_id)
            member = guild.members.get(msg.author.id) if guild else None
            if member is not None and msg.webhook_id is None:
                data["member"] = member.to_dict(with_user=False)
        return data

    def dispatch_message(self, event: str, msg: SimMessage) -> None:
        """MESSAGE_CREATE / MESSAGE_UPDATE for a message (never for ephemeral ones)."""
        if msg.ephemeral:
            return
        self.gateway.dispatch(event, self.message_event_payload(msg))

    def dispatch_delete(self, msg: SimMessage) -> None:
        """MESSAGE_DELETE for a message."""
        if msg.ephemeral:
            return
        data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
        self.gateway.dispatch("MESSAGE_DELETE", data)

    # ---- middleware: body parsing, auth, injection, recording ----------------------------
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        is_api = request.path.startswith(API)
        rel = request.path[len(API) :] if is_api else request.path
        authorized = request.headers.get("Authorization") == f"Bot {self.bot_token}"
        template = spec.contract().route(rel) if is_api and self.validate else None
        body: Any = None
        files: list[tuple[str, bytes]] = []
        try:
            body, file_parts, size = await _parse_body(request)
            files = [file_parts[i] for i in sorted(file_parts)]
            request[_JSON] = body
            request[_FILES] = file_parts
            request[_SIZE] = size
            if is_api and not (rel.startswith(("/interactions/", "/webhooks/"))) and not authorized:
                raise unauthorized()
            injected = self.ratelimiter.take_injection(request.method, rel)
            if injected is not None:
                raise injected
            if is_api:
                limits.check_request_size(size)
            if template is not None:
                self._check_request(request.method, template, rel, body, dict(request.query))
            response = await handler(request)
            injected = self.ratelimiter.take_injection(request.method, rel, after=True)
            if injected is not None:
                raise injected
        except ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status == 404:
                response = ApiError(404, 0, "404: Not Found").response()
            elif exc.status == 405:
                response = ApiError(405, 0, "405: Method Not Allowed").response()
            else:
                raise
        except _BadBody as exc:
            response = ApiError(400, 50109, f"The request body contains invalid JSON. ({exc})").response()
        recorded_response: Any = None
        if isinstance(response, web.Response) and response.content_type == "application/json":
            raw = response.body
            if isinstance(raw, bytes | bytearray):
                recorded_response = json.loads(raw)
        if template is not None:
            self._check_response(request.method, template, rel, response.status, recorded_response)
        await self.recorder.add_request(
            RecordedRequest(
                method=request.method,
                path=rel,
                query=dict(request.query),
                json=body,
                files=files,
                status=response.status,
                authorized=authorized,
                response=recorded_response,
            )
        )
        return response

    # ---- the OpenAPI referee (sim/discord/spec.py) ----------------------------------------
    def _record(self, violations: list[spec.Violation]) -> None:
        self.violations.extend(violations)
        spec.record(violations)

    def _check_request(self, method: str, template: str, path: str, body: Any, query: dict[str, str]) -> None:
        """Refuse (400 50035, as Discord) and record a request the spec's schema refuses."""
        contract = spec.contract()
        for name, keyword, message in contract.query_errors(method, template, query):
            self._record(
                [spec.Violation("request", method, template, path, None, f"?{name}", message, keyword)]
            )
            raise form_error([name], _FORM_CODES.get(keyword, "BASE_TYPE_BAD_VALUE"), message)
        if body is None:
            return
        errors = contract.request_errors(method, template, body)
        if not errors:
            return
        error = errors[0]
        self._record(
            [
                spec.Violation(
                    "request",
                    method,
                    template,
                    path,
                    None,
                    error.json_path,
                    error.message,
                    str(error.validator),
                )
            ]
        )
        raise form_error(_form_path(error), _form_code(error), _form_message(error))

    def _check_response(self, method: str, template: str, path: str, status: int, body: Any) -> None:
        """Record a response that does not match the spec (a simulator bug: the test fails)."""
        errors = spec.contract().response_errors(method, template, status, body)
        self._record(
            [
                spec.Violation(
                    "response", method, template, path, status, e.json_path, e.message, str(e.validator)
                )
                for e in errors
            ]
        )

    # Gateway events whose objects the spec describes (as REST answers): event -> [(JSON path, schema)].
    _EVENT_OBJECTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "MESSAGE_CREATE": (("$", "MessageResponse"),),
        "MESSAGE_UPDATE": (("$", "MessageResponse"),),
        "GUILD_CREATE": (
            ("$.roles[]", "GuildRoleResponse"),
            ("$.channels[]", "GuildChannelResponse"),
            ("$.members[]", "GuildMemberResponse"),
        ),
        "GUILD_MEMBER_ADD": (("$", "GuildMemberResponse"),),
        "GUILD_ROLE_CREATE": (("$.role", "GuildRoleResponse"),),
        "CHANNEL_CREATE": (("$", "GuildChannelResponse"),),
        "CHANNEL_UPDATE": (("$", "GuildChannelResponse"),),
        "INTERACTION_CREATE": (("$.message", "MessageResponse"), ("$.member", "GuildMemberResponse")),
    }

    def check_event(self, event: str, data: dict[str, Any]) -> None:
        """Validate the objects a gateway event carries against the spec's schemas for them."""
        if not self.validate:
            return
        contract = spec.contract()
        for where, schema in self._EVENT_OBJECTS.get(event, ()):
            key = where.removeprefix("$").strip(".").removesuffix("[]")
            value: Any = data.get(key) if key else data
            if value is None:
                continue
            items = value if where.endswith("[]") else [value]
            for item in items:
                for e in contract.schema_errors(schema, item):
                    path = where.replace("[]", "[*]") + e.json_path.removeprefix("$")
                    self._record(
                        [
                            spec.Violation(
                                "event", "GATEWAY", event, schema, None, path, e.message, str(e.validator)
                            )
                        ]
                    )

    # ---- helpers -------------------------------------------------------------------------
    def _channel_or_404(self, request: web.Request) -> SimChannel:
        try:
            cid = int(request.match_info["channel_id"])
        except ValueError:
            raise form_error(["channel_id"], "NUMBER_TYPE_COERCE", "Value is not snowflake.") from None
        ch = self.find_channel(cid)
        if ch is None:
            raise unknown_channel()
        # VIEW_CHANNEL comes before everything else: a channel the bot cannot see is 403 50001.
        if not self.bot_permissions(ch) & Perm.VIEW_CHANNEL:
            raise missing_access()
        return ch

    def _message_or_404(self, request: web.Request, channel: SimChannel) -> SimMessage:
        try:
            msg = self.messages.get(int(request.match_info["message_id"]))
        except ValueError:
            raise form_error(["message_id"], "NUMBER_TYPE_COERCE", "Value is not snowflake.") from None
        # Ephemeral messages cannot be reached through channel routes, as on Discord.
        if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
            raise unknown_message()
        return msg

    def bot_permissions(self, channel: SimChannel) -> int:
        """The bot's permissions in a channel (role permissions and the channel's overwrites)."""
        return self.permissions_in(channel, self.bot_user)

    def permissions_in(self, channel: SimChannel, user: SimUser) -> int:
        """A user's permissions in a channel; in a DM everything but managing others' messages."""
        if channel.guild_id is None:
            return Perm.ALL & ~Perm.MANAGE_MESSAGES & ~Perm.MENTION_EVERYONE
        return self.guilds[channel.guild_id].permissions_in(channel, user.id)

    def _bot_can(self, channel: SimChannel, perms: int) -> bool:
        return self.bot_permissions(channel) & perms == perms

    def _require(self, channel: SimChannel, perms: int) -> None:
        if not self._bot_can(channel, perms):
            raise missing_permissions()

    def _file_limit(self, channel: SimChannel) -> int:
        if channel.guild_id is None:
            return TIER_FILE_SIZE_LIMIT[0]
        return TIER_FILE_SIZE_LIMIT.get(self.guilds[channel.guild_id].premium_tier, TIER_FILE_SIZE_LIMIT[0])

    def new_attachments(
        self,
        channel_id: int,
        payload: dict[str, Any],
        file_parts: dict[int, tuple[str, bytes]],
        *,
        ephemeral: bool = False,
    ) -> list[SimAttachment]:
        """Turn uploaded ``files[n]`` into stored attachments (name/description from
        ``payload.attachments[{id: n}]`` as discord.py sends them)."""
        meta = {}
        for entry in payload.get("attachments") or []:
            try:
                meta[int(entry.get("id"))] = entry
            except (TypeError, ValueError):
                continue
        out = []
        for index in sorted(file_parts):
            filename, data = file_parts[index]
            entry = meta.get(index, {})
            att = SimAttachment(
                id=self.snowflakes.next(),
                filename=str(entry.get("filename") or filename),
                data=data,
                channel_id=channel_id,
                description=entry.get("description"),
                ephemeral=ephemeral,
            )
            self.files[att.id] = att
            out.append(att)
        return out

    def create_message(
        self,
        channel: SimChannel,
        author: SimUser,
        payload: dict[str, Any],
        file_parts: dict[int, tuple[str, bytes]],
        *,
        flags: int = 0,
        msg_type: int = 0,
        interaction: SimInteraction | None = None,
    ) -> SimMessage:
        """Store a new message built from a create payload (already validated); who it pings is
        resolved from its content, ``allowed_mentions`` and the author's permissions."""
        ephemeral = bool(flags & MESSAGE_FLAG_EPHEMERAL)
        msg = SimMessage(
            id=self.snowflakes.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=str(payload.get("content") or ""),
            embeds=list(payload.get("embeds") or []),
            components=_with_component_ids(payload.get("components") or []),
            flags=flags,
            type=msg_type,
            tts=bool(payload.get("tts", False)),
            nonce=str(payload["nonce"]) if payload.get("nonce") is not None else None,
            message_reference=payload.get("message_reference"),
        )
        msg.attachments = self.new_attachments(channel.id, payload, file_parts, ephemeral=ephemeral)
        if interaction is not None:
            msg.webhook_id = self.application_id
            msg.application_id = self.application_id
            msg.interaction_metadata = _interaction_metadata(interaction, self.bot_user)
        self.resolve_mentions(msg, payload.get("allowed_mentions"))
        msg.versions.append(msg.snapshot())
        self.messages[msg.id] = msg
        channel.last_message_id = msg.id
        return msg

    def resolve_mentions(self, msg: SimMessage, allowed: Any) -> None:
        """Fill ``mentions``/``mention_roles``/``mention_everyone`` as Discord does."""
        channel = self.find_channel(msg.channel_id)
        guild = self.guilds.get(msg.guild_id) if msg.guild_id is not None else None
        replied_author: int | None = None
        ref = msg.message_reference or {}
        if ref.get("message_id") is not None and str(ref["message_id"]).isdigit():
            replied = self.messages.get(int(ref["message_id"]))
            replied_author = replied.author.id if replied is not None else None
        resolved = mentions.resolve(
            msg.content,
            allowed if isinstance(allowed, dict) else None,
            webhook=msg.webhook_id is not None,
            author_permissions=self.permissions_in(channel, msg.author) if channel is not None else 0,
            known_users=set(guild.members) if guild is not None else set(self.users),
            roles={r.id: r.mentionable for r in guild.roles.values() if r.id != guild.id} if guild else {},
            replied_author=replied_author,
        )
        msg.mentions = [self.users[u] for u in resolved.user_ids if u in self.users]
        msg.mention_roles = resolved.role_ids
        msg.mention_everyone = resolved.everyone

    def apply_edit(
        self,
        msg: SimMessage,
        payload: dict[str, Any],
        file_parts: dict[int, tuple[str, bytes]],
        size_limit: int,
    ) -> None:
        """Validate and apply an edit payload (content/embeds/components/attachments/flags)."""
        limits.check_files(list(file_parts.values()), size_limit)
        limits.check_message(payload)
        mentions.check_allowed_mentions(payload.get("allowed_mentions"))
        content = msg.content if "content" not in payload else str(payload["content"] or "")
        embeds = msg.embeds if "embeds" not in payload else list(payload["embeds"] or [])
        components = msg.components if "components" not in payload else list(payload["components"] or [])
        new_files = self.new_attachments(msg.channel_id, payload, file_parts, ephemeral=msg.ephemeral)
        if "attachments" in payload:
            keep_ids = set()
            for entry in payload["attachments"] or []:
                try:
                    keep_ids.add(int(entry.get("id")))
                except (TypeError, ValueError):
                    continue
            attachments = [a for a in msg.attachments if a.id in keep_ids] + new_files
        else:
            attachments = msg.attachments + new_files
        if len(attachments) > limits.MAX_FILES:
            raise form_error(["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if not (content.strip() or embeds or attachments or components):
            raise ApiError(400, 50006, "Cannot send an empty message")
        msg.content, msg.embeds, msg.attachments = content, embeds, attachments
        msg.components = _with_component_ids(components)
        if "flags" in payload and payload["flags"] is not None:
            msg.flags = (msg.flags & ~_SETTABLE_FLAGS) | (int(payload["flags"]) & _SETTABLE_FLAGS)
        msg.flags &= ~MESSAGE_FLAG_LOADING
        msg.edited_timestamp = datetime.now(UTC)
        if "content" in payload or "allowed_mentions" in payload:
            self.resolve_mentions(msg, payload.get("allowed_mentions"))
        msg.versions.append(msg.snapshot())

    # ---- REST: identity ------------------------------------------------------------------
    async def _get_me(self, request: web.Request) -> web.Response:
        user = {
            **self.bot_user.to_dict(),
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "locale": "en-US",
            "premium_type": 0,
            "email": None,
        }
        return json_response(user)

    async def _get_application(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": secrets.token_hex(32),
                "owner": self.owner.to_dict(),
                "team": None,
                "flags": 0,
                "bot": self.bot_user.to_dict(),
                "approximate_guild_count": len(self.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "redirect_uris": [],
                "tags": [],
                "flags_new": "0",
                "explicit_content_filter": 0,
                "eligible_oauth2_scopes": ["bot", "applications.commands"],
                "integration_types_config": {"0": {}},
                "rpc_origins": [],
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    # ---- REST: application commands ------------------------------------------------------
    def _check_app(self, request: web.Request) -> None:
        if request.match_info.get("app_id") != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")

    def _command_scope(self, request: web.Request) -> int | None:
        gid = request.match_info.get("guild_id")
        if gid is None:
            return None
        if not gid.isdigit() or int(gid) not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return int(gid)

    async def _get_commands(self, request: web.Request) -> web.Response:
        self._check_app(request)
        gid = self._command_scope(request)
        return json_response(self.global_commands if gid is None else self.guild_commands.get(gid, []))

    async def _put_commands(self, request: web.Request) -> web.Response:
        self._check_app(request)
        gid = self._command_scope(request)
        body: Any = request[_JSON]
        limits.check_commands(body)
        stored = []
        for cmd in body:
            ctype = int(cmd.get("type", 1))
            key = (gid, str(cmd["name"]), ctype)
            # Overwriting keeps the id of a command with the same name and type, as on Discord.
            cid = self._command_ids.get(key) or self.snowflakes.next()
            self._command_ids[key] = cid
            # Discord answers with its normalised copy: defaults filled in, nulls dropped.
            entry = {
                **without_nulls(cmd),
                "id": str(cid),
                "application_id": str(self.application_id),
                "version": str(self.snowflakes.next()),
                "type": ctype,
                "description": cmd.get("description") or "",
                # Sent as an integer, answered as a string (ApplicationCommandResponse in the spec).
                "default_member_permissions": _permissions_string(cmd.get("default_member_permissions")),
                "dm_permission": cmd.get("dm_permission") is not False,
                "contexts": cmd.get("contexts"),
                "integration_types": cmd.get("integration_types") or [0],
                "nsfw": bool(cmd.get("nsfw", False)),
            }
            if gid is not None:
                entry["guild_id"] = str(gid)
            stored.append(entry)
        if gid is None:
            self.global_commands = stored
        else:
            self.guild_commands[gid] = stored
        return json_response(stored)

    # ---- REST: interactions --------------------------------------------------------------
    def _interaction_for_token(self, request: web.Request) -> SimInteraction:
        """The interaction behind a webhook token, enforcing the 15-minute token lifetime."""
        if request.match_info["app_id"] != str(self.application_id):
            raise unknown_webhook()
        token = request.match_info["token"]
        inter = next((i for i in self.interactions.values() if i.token == token), None)
        if inter is None or self.clock.monotonic() - inter.created_at > self.token_lifetime:
            raise invalid_webhook_token()
        return inter

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        try:
            inter = self.interactions.get(int(request.match_info["interaction_id"]))
        except ValueError:
            inter = None
        if inter is None or inter.token != request.match_info["token"]:
            raise unknown_interaction()
        if inter.acked:
            raise already_acknowledged()
        if self.clock.monotonic() - inter.created_at > self.response_deadline:
            raise unknown_interaction()
        body = _body(request)
        file_parts: dict[int, tuple[str, bytes]] = request[_FILES]
        rtype = int(body.get("type", 0))
        data = body.get("data") or {}
        channel = self.find_channel(inter.channel_id) or self.channel
        message: SimMessage | None = None
        allowed = {
            2: {4, 5, 9},  # application command
            3: {4, 5, 6, 7, 9},  # message component
            4: {8},  # autocomplete
            5: {4, 5, 6, 7},  # modal submit
        }.get(inter.type, set())
        if rtype not in allowed:
            raise form_error(
                ["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid"
            )
        if rtype in (4, 7):
            mentions.check_allowed_mentions(data.get("allowed_mentions"))
        if rtype == 4:
            limits.check_files(list(file_parts.values()), inter.attachment_size_limit)
            limits.check_message(data)
            limits.check_not_empty(data, list(file_parts.values()))
            flags = int(data.get("flags") or 0) & (_SETTABLE_FLAGS | MESSAGE_FLAG_EPHEMERAL)
            msg_type = {2: 20 if inter.data.get("type", 1) == 1 else 23}.get(inter.type, 19)
            message = self.create_message(
                channel, self.bot_user, data, file_parts, flags=flags, msg_type=msg_type, interaction=inter
            )
            inter.original_message_id = message.id
            self.dispatch_message("MESSAGE_CREATE", message)
        elif rtype == 5:
            flags = MESSAGE_FLAG_LOADING | (int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            msg_type = (
                20 if inter.type == 2 and inter.data.get("type", 1) == 1 else 23 if inter.type == 2 else 19
            )
            message = self.create_message(
                channel, self.bot_user, {}, {}, flags=flags, msg_type=msg_type, interaction=inter
            )
            inter.original_message_id = message.id
            self.dispatch_message("MESSAGE_CREATE", message)
        elif rtype in (6, 7):
            if inter.source_message_id is None:
                raise form_error(
                    ["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid"
                )
            message = self.messages[inter.source_message_id]
            inter.original_message_id = message.id
            if rtype == 7:
                self.apply_edit(message, data, file_parts, inter.attachment_size_limit)
                self.dispatch_message("MESSAGE_UPDATE", message)
        elif rtype == 9:
            for key in ("custom_id", "title", "components"):
                if not data.get(key):
                    raise form_error(["data", key], "BASE_TYPE_REQUIRED", "This field is required")
            limits.check_modal(data)
        elif rtype == 8:
            limits.check_autocomplete(data)
        inter.response_type = rtype
        inter.response_data = data
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        interaction_part: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "response_message_loading": rtype == 5,
            "response_message_ephemeral": bool(message is not None and message.ephemeral),
        }
        if message is not None and rtype != 6:
            interaction_part["response_message_id"] = str(message.id)
        result: dict[str, Any] = {"interaction": interaction_part}
        if message is not None and rtype in (4, 7):
            result["resource"] = {"type": rtype, "message": self.message_payload(message)}
        elif rtype in (5, 6, 9):
            result["resource"] = {"type": rtype}
        return json_response(result)

    async def _webhook_execute(self, request: web.Request) -> web.StreamResponse:
        inter = self._interaction_for_token(request)
        if not inter.acked:
            # Follow-ups only exist after the initial response.
            raise unknown_webhook()
        body = _body(request)
        file_parts: dict[int, tuple[str, bytes]] = request[_FILES]
        limits.check_files(list(file_parts.values()), inter.attachment_size_limit)
        limits.check_message(body)
        mentions.check_allowed_mentions(body.get("allowed_mentions"))
        limits.check_not_empty(body, list(file_parts.values()))
        original = self.messages.get(inter.original_message_id or 0)
        if inter.response_type == 5 and original is not None and original.loading and not original.deleted:
            # The first follow-up after a "thinking" defer fills in the deferred message
            # (keeping the defer's ephemeral choice).
            self.apply_edit(original, body, file_parts, inter.attachment_size_limit)
            message = original
            self.dispatch_message("MESSAGE_UPDATE", message)
        else:
            channel = self.find_channel(inter.channel_id) or self.channel
            flags = int(body.get("flags") or 0) & (_SETTABLE_FLAGS | MESSAGE_FLAG_EPHEMERAL)
            message = self.create_message(
                channel, self.bot_user, body, file_parts, flags=flags, interaction=inter
            )
            self.dispatch_message("MESSAGE_CREATE", message)
        inter.followup_ids.append(message.id)
        # Interaction follow-ups always wait: Discord returns the message even without ?wait=true.
        return json_response(self.message_payload(message))

    def _webhook_message(self, request: web.Request, inter: SimInteraction) -> SimMessage:
        ref = request.match_info["message_id"]
        if ref == "@original":
            mid = inter.original_message_id
        else:
            mid = int(ref) if ref.isdigit() else None
            if mid is not None and mid not in inter.followup_ids and mid != inter.original_message_id:
                mid = None
        msg = self.messages.get(mid or 0)
        if msg is None or msg.deleted:
            raise unknown_message()
        return msg

    async def _webhook_get(self, request: web.Request) -> web.Response:
        inter = self._interaction_for_token(request)
        return json_response(self.message_payload(self._webhook_message(request, inter)))

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        inter = self._interaction_for_token(request)
        msg = self._webhook_message(request, inter)
        self.apply_edit(msg, _body(request), request[_FILES], inter.attachment_size_limit)
        self.dispatch_message("MESSAGE_UPDATE", msg)
        return json_response(self.message_payload(msg))

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        inter = self._interaction_for_token(request)
        msg = self._webhook_message(request, inter)
        msg.deleted = True
        self.dispatch_delete(msg)
        return web.Response(status=204)

    # ---- REST: channels and messages -----------------------------------------------------
    async def _get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel_or_404(request).to_dict())

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        limit = _query_int(request, "limit", 50, 1, 100)
        before = _query_int(request, "before", None, 0, None)
        after = _query_int(request, "after", None, 0, None)
        msgs = [m for m in self.messages_in(channel) if not m.ephemeral]
        if before is not None:
            msgs = [m for m in msgs if m.id < before]
        if after is not None:
            msgs = [m for m in msgs if m.id > after][:limit]
        newest_first = sorted(msgs, key=lambda m: m.id, reverse=True)[:limit]
        return json_response([self.message_payload(m) for m in newest_first])

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        body = _body(request)
        file_parts: dict[int, tuple[str, bytes]] = request[_FILES]
        self._require(channel, Perm.SEND_MESSAGES)
        if file_parts:
            self._require(channel, Perm.ATTACH_FILES)
        if body.get("embeds"):
            self._require(channel, Perm.EMBED_LINKS)
        headers = self.ratelimiter.hit("message-create", str(channel.id))
        limits.check_files(list(file_parts.values()), self._file_limit(channel))
        limits.check_message(body)
        mentions.check_allowed_mentions(body.get("allowed_mentions"))
        limits.check_not_empty(body, list(file_parts.values()))
        reference = self._reply_reference(channel, body.get("message_reference"))
        same = self._same_nonce(channel, body)
        if same is not None:  # enforce_nonce: the message this nonce already made, not a second one
            return json_response(self.message_payload(same), headers=headers)
        flags = int(body.get("flags") or 0) & _SETTABLE_FLAGS
        msg_type = 19 if reference else 0
        payload = {**body, "message_reference": reference}
        msg = self.create_message(channel, self.bot_user, payload, file_parts, flags=flags, msg_type=msg_type)
        self.dispatch_message("MESSAGE_CREATE", msg)
        return json_response(self.message_payload(msg), headers=headers)

    def _reply_reference(self, channel: SimChannel, reference: Any) -> dict[str, Any] | None:
        """A reply's reference, checked: READ_MESSAGE_HISTORY, and the message must exist (400 50035)
        unless ``fail_if_not_exists`` is false (then the message is sent as a plain one)."""
        if not isinstance(reference, dict):
            return None
        self._require(channel, Perm.READ_MESSAGE_HISTORY)
        target_channel = self.find_channel(int(reference.get("channel_id") or channel.id))
        mid = str(reference.get("message_id") or "")
        target = self.messages.get(int(mid)) if mid.isdigit() else None
        if (
            target is None
            or target.deleted
            or target_channel is None
            or target.channel_id != target_channel.id
        ):
            if reference.get("fail_if_not_exists") is False:
                return None
            raise form_error(["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        return {
            "type": int(reference.get("type") or 0),
            "message_id": str(target.id),
            "channel_id": str(target.channel_id),
            **({"guild_id": str(target.guild_id)} if target.guild_id is not None else {}),
        }

    def _same_nonce(self, channel: SimChannel, body: dict[str, Any]) -> SimMessage | None:
        """Discord: with ``enforce_nonce`` the nonce "will be checked for uniqueness in the past few
        minutes. If another message was created by the same author with the same nonce, that message
        will be returned and no new message will be created"."""
        if not body.get("enforce_nonce") or body.get("nonce") is None:
            return None
        nonce = str(body["nonce"])
        since = datetime.now(UTC) - self.nonce_window
        for msg in reversed(self.messages_in(channel)):
            if snowflake_time(msg.id) < since:
                break
            if msg.nonce == nonce and msg.author.id == self.bot_user.id:
                return msg
        return None

    async def _get_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        return json_response(self.message_payload(self._message_or_404(request, channel)))

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        msg = self._message_or_404(request, channel)
        if msg.author.id != self.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = _body(request)
        if request[_FILES]:
            self._require(channel, Perm.ATTACH_FILES)
        if body.get("embeds"):
            self._require(channel, Perm.EMBED_LINKS)
        headers = self.ratelimiter.hit("message-edit", str(channel.id))
        self.apply_edit(msg, _body(request), request[_FILES], self._file_limit(channel))
        self.dispatch_message("MESSAGE_UPDATE", msg)
        return json_response(self.message_payload(msg), headers=headers)

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        msg = self._message_or_404(request, channel)
        if msg.author.id != self.bot_user.id:
            self._require(channel, Perm.MANAGE_MESSAGES)
        msg.deleted = True
        self.dispatch_delete(msg)
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        self._require(channel, Perm.SEND_MESSAGES)
        return web.Response(status=204)

    # ---- REST: reactions -----------------------------------------------------------------
    def _reaction_target(self, request: web.Request) -> tuple[SimChannel, SimMessage, str, dict[str, Any]]:
        channel = self._channel_or_404(request)
        msg = self._message_or_404(request, channel)
        key, emoji = parse_emoji(request.match_info["emoji"], self.custom_emoji_ids())
        return channel, msg, key, emoji

    async def _add_reaction(self, request: web.Request) -> web.Response:
        channel, msg, key, emoji = self._reaction_target(request)
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        if key not in msg.reactions:
            self._require(channel, Perm.ADD_REACTIONS)
            if len(msg.reactions) >= MAX_DISTINCT_REACTIONS:
                raise too_many_reactions()
        headers = self.ratelimiter.hit("reaction", str(channel.id))
        driver.add_reaction(self, msg, key, emoji, self.bot_user)
        return web.Response(status=204, headers=headers)

    async def _remove_reaction(self, request: web.Request) -> web.Response:
        channel, msg, key, _emoji = self._reaction_target(request)
        ref = request.match_info["user_id"]
        if ref == "@me":
            user = self.bot_user
        else:
            self._require(channel, Perm.MANAGE_MESSAGES)
            user = self.users.get(int(ref)) if ref.isdigit() else None
            if user is None:
                raise ApiError(404, 10013, "Unknown User")
        headers = self.ratelimiter.hit("reaction", str(channel.id))
        driver.remove_reaction(self, msg, key, user)
        return web.Response(status=204, headers=headers)

    async def _get_reactions(self, request: web.Request) -> web.Response:
        channel, msg, key, _emoji = self._reaction_target(request)
        self._require(channel, Perm.READ_MESSAGE_HISTORY)
        limit = _query_int(request, "limit", 25, 1, 100)
        after = _query_int(request, "after", 0, 0, None)
        users = [u for u in msg.reaction_users(key) if u > after][:limit]
        return json_response([self.users[u].to_dict() for u in users])

    async def _clear_emoji(self, request: web.Request) -> web.Response:
        channel, msg, key, emoji = self._reaction_target(request)
        self._require(channel, Perm.MANAGE_MESSAGES)
        if msg.reactions.pop(key, None) is not None:
            data = {"channel_id": str(channel.id), "message_id": str(msg.id), "emoji": emoji}
            if channel.guild_id is not None:
                data["guild_id"] = str(channel.guild_id)
            self.gateway.dispatch("MESSAGE_REACTION_REMOVE_EMOJI", data)
        return web.Response(status=204)

    async def _clear_reactions(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        msg = self._message_or_404(request, channel)
        self._require(channel, Perm.MANAGE_MESSAGES)
        msg.reactions.clear()
        data = {"channel_id": str(channel.id), "message_id": str(msg.id)}
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        self.gateway.dispatch("MESSAGE_REACTION_REMOVE_ALL", data)
        return web.Response(status=204)

    # ---- REST: guilds and users ----------------------------------------------------------
    def _guild_or_404(self, request: web.Request) -> SimGuild:
        gid = request.match_info["guild_id"]
        guild = self.guilds.get(int(gid)) if gid.isdigit() else None
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def _get_guild(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        data = self.guild_create_payload(guild)
        for key in (
            "members",
            "channels",
            "voice_states",
            "presences",
            "threads",
            "joined_at",
            "large",
            "member_count",
            "stage_instances",
            "guild_scheduled_events",
            "soundboard_sounds",
            "embedded_activities",
            "unavailable",
        ):
            data.pop(key, None)
        return json_response(data)

    async def _get_roles(self, request: web.Request) -> web.Response:
        return json_response([r.to_dict() for r in self._guild_or_404(request).roles.values()])

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        return json_response([c.to_dict() for c in self._guild_or_404(request).channels.values()])

    async def _list_members(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        # Restricted to apps whose GUILD_MEMBERS privileged intent is enabled (developer portal).
        if not self.privileged_intents & Intents.GUILD_MEMBERS:
            raise missing_access()
        limit = _query_int(request, "limit", 1, 1, 1000)
        after = _query_int(request, "after", 0, 0, None)
        members = sorted((m for m in guild.members.values() if m.id > after), key=lambda m: m.id)[:limit]
        return json_response([m.to_dict() for m in members])

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        uid = request.match_info["user_id"]
        member = guild.members.get(int(uid)) if uid.isdigit() else None
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(member.to_dict())

    async def _get_user(self, request: web.Request) -> web.Response:
        uid = request.match_info["user_id"]
        user = self.users.get(int(uid)) if uid.isdigit() else None
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user.to_dict())

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = _body(request)
        try:
            user = self.users[int(str(body.get("recipient_id")))]
        except (KeyError, TypeError, ValueError):
            raise form_error(["recipient_id"], "NUMBER_TYPE_COERCE", "Value is not snowflake.") from None
        ch = next((c for c in self.dm_channels.values() if c.recipient is user), None)
        if ch is None:
            ch = SimChannel(id=self.snowflakes.next(), name="", type=1, recipient=user)
            self.dm_channels[ch.id] = ch
        return json_response(ch.to_dict())

    # ---- CDN -----------------------------------------------------------------------------
    async def _cdn(self, request: web.Request) -> web.Response:
        aid = request.match_info["attachment_id"]
        att = self.files.get(int(aid)) if aid.isdigit() else None
        if att is None or att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=att.data, content_type=att.content_type or "application/octet-stream")


# JSON-schema keyword -> Discord's form error code for the same mistake.
_FORM_CODES = {
    "required": "BASE_TYPE_REQUIRED",
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minItems": "BASE_TYPE_MIN_LENGTH",
    "maximum": "NUMBER_TYPE_MAX",
    "minimum": "NUMBER_TYPE_MIN",
    "enum": "BASE_TYPE_CHOICES",
    "const": "BASE_TYPE_CHOICES",
    "pattern": "NUMBER_TYPE_COERCE",
    "format": "BASE_TYPE_BAD_VALUE",
    "type": "BASE_TYPE_BAD_VALUE",
    "uniqueItems": "SET_TYPE_ALREADY_CONTAINS_VALUE",
    "additionalProperties": "BASE_TYPE_BAD_VALUE",
}


def _form_path(error: Any) -> list[str | int]:
    """Where Discord reports the error: a missing field at the field itself."""
    path: list[str | int] = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        path.extend(missing[:1])
    return path or ["_misc"]


def _form_code(error: Any) -> str:
    if error.validator == "format":
        return {"uri": "URL_TYPE_INVALID_URL", "date-time": "DATE_TYPE_PARSE"}.get(
            str(error.validator_value), "BASE_TYPE_BAD_VALUE"
        )
    return _FORM_CODES.get(str(error.validator), "BASE_TYPE_BAD_VALUE")


def _form_message(error: Any) -> str:
    """Discord's wording for the commonest form errors; the schema's message otherwise."""
    keyword, value = str(error.validator), error.validator_value
    if keyword == "required":
        return "This field is required"
    if keyword in ("maxLength", "maxItems"):
        return f"Must be {value} or fewer in length."
    if keyword in ("minLength", "minItems"):
        return f"Must be {value} or more in length."
    if keyword == "maximum":
        return f"int value should be less than or equal to {value}."
    if keyword == "minimum":
        return f"int value should be greater than or equal to {value}."
    if keyword == "format" and value == "uri":
        return "Not a well formed URL."
    if keyword == "format" and value == "date-time":
        return "Could not interpret value as a date/time."
    return str(error.message)


def _query_int(request: web.Request, name: str, default: Any, lo: int | None, hi: int | None) -> Any:
    """An integer query parameter: malformed or out of range is 400 50035, as on Discord (never 500)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise form_error([name], "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.') from None
    if lo is not None and value < lo:
        raise form_error([name], "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {lo}.")
    if hi is not None and value > hi:
        raise form_error([name], "NUMBER_TYPE_MAX", f"int value should be less than or equal to {hi}.")
    return value


def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (or multipart payload_json); {} when absent or not an object."""
    body = request[_JSON]
    return body if isinstance(body, dict) else {}


class _BadBody(Exception):
    pass


async def _parse_body(request: web.Request) -> tuple[Any, dict[int, tuple[str, bytes]], int]:
    """JSON body, or multipart ``payload_json`` + ``files[n]`` parts (aiohttp's own parser), and the
    number of bytes they took."""
    files: dict[int, tuple[str, bytes]] = {}
    size = 0
    if request.content_type == "multipart/form-data":
        payload: Any = None
        reader = await request.multipart()
        next_index = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            if not hasattr(part, "read"):
                continue
            name = getattr(part, "name", None) or ""
            data = await part.read(decode=False)  # type: ignore[union-attr]
            size += len(data)
            if name == "payload_json":
                try:
                    payload = json.loads(bytes(data))
                except ValueError as exc:
                    raise _BadBody(str(exc)) from None
                continue
            match = re.fullmatch(r"files\[(\d+)\]", name)
            index = int(match.group(1)) if match else next_index
            next_index = max(next_index, index + 1)
            filename = getattr(part, "filename", None) or name
            files[index] = (filename, bytes(data))
        return payload, files, size
    if request.can_read_body:
        raw = await request.read()
        if raw:
            try:
                return json.loads(raw), files, len(raw)
            except ValueError as exc:
                raise _BadBody(str(exc)) from None
    return None, files, size


def _with_component_ids(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy components, numbering them (``id``) depth-first as Discord does when absent."""
    counter = 0

    def walk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal counter
        out = []
        for item in items:
            item = dict(item)
            counter += 1
            item.setdefault("id", counter)
            if isinstance(item.get("components"), list):
                item["components"] = walk(item["components"])
            out.append(item)
        return out

    return walk(components)


def _interaction_metadata(inter: SimInteraction, bot: SimUser) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": str(inter.id),
        "type": inter.type,
        "user": inter.user.to_dict(),
        "authorizing_integration_owners": {"0": str(inter.guild_id)}
        if inter.guild_id
        else {"1": str(inter.user.id)},
    }
    if inter.type == 2:
        meta["name"] = inter.command_name
        meta["command_type"] = int(inter.data.get("type", 1))
    if inter.source_message_id is not None and inter.type == 3:
        meta["interacted_message_id"] = str(inter.source_message_id)
    if inter.type == 5 and inter.triggering is not None:
        meta["triggering_interaction_metadata"] = _interaction_metadata(inter.triggering, bot)
    return meta
