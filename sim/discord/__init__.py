"""Faithful local Discord for testing the real discord.py 2.7 client (REST, gateway, CDN).

Start it and connect the unmodified bot::

    sim = DiscordSimulator()
    await sim.start()                       # -> "http://127.0.0.1:PORT"
    restore = sim.patch_discord()           # Route.BASE + DEFAULT_GATEWAY; restore() undoes it
    bot = commands.Bot(command_prefix="!", intents=..., **BOT_KWARGS)
    task = asyncio.create_task(bot.start(sim.bot_token))
    await bot.wait_until_ready()            # then: await bot.tree.sync(guild=discord.Object(sim.guild.id))
    ...
    await bot.close(); await sim.close(); restore()

Driver API (``DiscordSimulator``):

- population: ``guild``, ``channel``, ``bot_user``, ``application_id``, ``bot_token``,
  ``add_member(name, roles=[...]) -> SimUser``, ``add_role(name, permissions=0) -> SimRole``
  (``role.mentionable``), ``role(name)``, ``set_roles(user, roles)``, ``add_channel(name) ->
  SimChannel``, ``member(user)``, ``set_overwrite(channel, role_or_user, allow=, deny=)`` (per-channel
  permissions), ``bot_permissions(channel)``, ``add_emoji(name) -> "name:id"``.
- interactions (validated against what the bot synced; a bad invocation raises
  ``SimulatorUsageError``): ``await invoke_slash("dataset create", {"name": "elena"}, user=u,
  channel=None, attachments=[("a.jpg", data)])``, ``await invoke_message_command(name, message_id,
  user)``, ``await invoke_user_command(name, target, user)``, ``await invoke_component(message_id,
  custom_id, user, values=None)``, ``await invoke_autocomplete(name, {...}, focused, user=u)``
  (``h.choices``); each returns an :class:`InteractionHandle`:
  ``await h.ack()`` (callback type), ``await h.response()`` (the visible response message; waits for a
  defer to be filled in), ``h.ephemeral``, ``h.deferred``, ``h.original``, ``await h.followup(i)``,
  ``await h.wait_followups(n)``, ``h.followups``, ``h.modal``, ``await h.submit_modal({...})``.
- users: ``await react(message_id, "✅", user)``, ``await unreact(...)``,
  ``post_user_message(channel, user, content, attachments=[(name, bytes)]) -> SimMessage``.
- state: ``messages_in(channel)``, ``message(id)`` (``.mentions``, ``.mention_roles``,
  ``.mention_everyone``: who it really pinged), ``edits_of(id)`` (versions after each edit),
  ``files_of(id)`` ([(filename, bytes)]), ``commands(guild=None)``, ``interactions``.
- recorder: ``requests``, ``frames``, ``await wait_for_request(method, path_regex, predicate=None,
  timeout=5, after=0, status=None)``, ``await wait_for_frame(direction=, op=, t=)``,
  ``await wait_until(check)``, ``recorder.mark()``, ``await wait_for_bot()``.
- rules and failures: ``clock.advance(seconds)`` (3 s first response → 404 10062, 15 min token →
  401 50027), ``inject_429(method, path_regex, retry_after=0.1, times=1)``,
  ``inject_error(method, path_regex, status, code)``, ``await drop_gateway(code=4000)`` (the
  client RESUMEs; missed events are replayed), ``gateway.request_reconnect()``,
  ``gateway.invalidate_sessions()``, ``ratelimiter.limits`` (per-route buckets).

The referee: every JSON body in and out is validated against Discord's OpenAPI description
(:mod:`sim.discord.spec`; ``validate=False`` turns it off); mismatches are in ``violations`` and
``spec.VIOLATIONS``, which the test suite turns into failures. Requests the spec refuses are also
answered 400 50035, as Discord does; tests that send them on purpose wrap them in
``spec.expecting_refusals()``.

Paths in the recorder and in ``path_regex`` are relative to ``/api/v10`` (``/channels/1/messages``).
"""

from . import spec
from .driver import InteractionHandle
from .gateway import GatewaySession, Intents
from .patch import BOT_KWARGS, patch_discord
from .recorder import GatewayFrame, RecordedRequest, Recorder
from .server import DiscordSimulator, SimulatorUsageError, parse_emoji
from .state import (
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
from .util import ApiError, SimClock

__all__ = [
    "BOT_KWARGS",
    "ApiError",
    "DiscordSimulator",
    "GatewayFrame",
    "GatewaySession",
    "Intents",
    "InteractionHandle",
    "MessageVersion",
    "Overwrite",
    "Perm",
    "RecordedRequest",
    "Recorder",
    "SimAttachment",
    "SimChannel",
    "SimClock",
    "SimGuild",
    "SimInteraction",
    "SimMember",
    "SimMessage",
    "SimRole",
    "SimUser",
    "SimulatorUsageError",
    "parse_emoji",
    "patch_discord",
    "spec",
]
