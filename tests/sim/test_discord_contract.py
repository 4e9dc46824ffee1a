"""Contract test: the real discord.py client (pinned 2.7.x) against the Discord simulator.

A throwaway bot and cog defined here exercise every seam the loraops bot relies on, so a
discord.py upgrade that changes a payload or a call breaks this file loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from sim.discord import BOT_KWARGS, DiscordSimulator, SimulatorUsageError, spec

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)


class Events:
    """What the bot observed, with awaitable lookups (no sleeps)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self._cond = asyncio.Condition()

    async def add(self, name: str, value: Any) -> None:
        async with self._cond:
            self.items.append((name, value))
            self._cond.notify_all()

    async def wait(
        self, name: str, predicate: Callable[[Any], bool] = lambda _v: True, timeout: float = 5
    ) -> Any:
        async def _wait() -> Any:
            async with self._cond:
                while True:
                    for n, v in self.items:
                        if n == name and predicate(v):
                            return v
                    await self._cond.wait()

        return await asyncio.wait_for(_wait(), timeout)


class ConfirmView(discord.ui.View):
    def __init__(self, events: Events) -> None:
        super().__init__(timeout=60)
        self.events = events

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success, custom_id="confirm")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        await interaction.response.edit_message(content=f"confirmed by {interaction.user.name}", view=None)
        await self.events.add("confirmed", interaction.user.id)


class RenameModal(discord.ui.Modal, title="Rename"):
    new_name: discord.ui.TextInput[RenameModal] = discord.ui.TextInput(label="New name", custom_id="new_name")

    def __init__(self, events: Events) -> None:
        super().__init__()
        self.events = events

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"renamed to {self.new_name.value}", ephemeral=True)
        await self.events.add("renamed", self.new_name.value)


class ContractCog(commands.Cog):
    grid = app_commands.Group(name="grid", description="Grid tools")

    def __init__(self, bot: ContractBot) -> None:
        self.bot = bot
        self.events = bot.events
        self.proceed = asyncio.Event()
        self.menu = app_commands.ContextMenu(name="Add to dataset", callback=self.add_to_dataset)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu, guild=discord.Object(self.bot.guild_id))

    @grid.command(name="submit", description="Submit a grid")
    @app_commands.describe(title="Grid title", image="The grid image")
    async def submit(self, interaction: discord.Interaction, title: str, image: discord.Attachment) -> None:
        await interaction.response.defer(thinking=True)
        data = await image.read()
        await self.events.add(
            "submit", (title, image.filename, data, interaction.user.id, interaction.filesize_limit)
        )
        await interaction.followup.send(f"got {title}", file=discord.File(io.BytesIO(data), "echo.png"))
        assert isinstance(interaction.channel, discord.TextChannel)
        progress = await interaction.channel.send("progress 0%")
        await progress.add_reaction("✅")
        await progress.edit(content="progress 100%")
        await self.events.add("progress", progress.id)

    @app_commands.command(name="slow", description="Answers too late")
    async def slow(self, interaction: discord.Interaction) -> None:
        await self.events.add("slow-started", interaction.id)
        await self.proceed.wait()
        try:
            await interaction.response.send_message("late")
        except discord.NotFound as exc:
            await self.events.add("slow-error", exc)

    @app_commands.command(name="twice", description="Acknowledges twice")
    async def twice(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message("first", ephemeral=True)
        try:
            # A second responder racing the first (discord.py's own guard is per response object).
            await discord.InteractionResponse(interaction).send_message("second")
        except discord.HTTPException as exc:
            await self.events.add("twice-error", exc)

    @app_commands.command(name="limits", description="Breaks message limits")
    async def limits(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        errors: dict[str, discord.HTTPException] = {}
        attempts: dict[str, Callable[[], Any]] = {
            "content": lambda: interaction.channel.send("x" * 2001),  # type: ignore[union-attr]
            "files": lambda: interaction.channel.send(  # type: ignore[union-attr]
                files=[discord.File(io.BytesIO(b"f"), f"f{i}.txt") for i in range(11)]
            ),
            "big": lambda: interaction.channel.send(  # type: ignore[union-attr]
                file=discord.File(io.BytesIO(b"\0" * (interaction.filesize_limit + 1)), "big.bin")
            ),
            "embed": lambda: interaction.channel.send(  # type: ignore[union-attr]
                embed=discord.Embed(title="t" * 257)
            ),
            "followup-content": lambda: interaction.followup.send("y" * 2001),
        }
        for name, attempt in attempts.items():
            try:
                await attempt()
            except discord.HTTPException as exc:
                errors[name] = exc
        await interaction.followup.send(f"{len(errors)} rejected")
        await self.events.add("limits", errors)

    @app_commands.command(name="files", description="Edits files around")
    async def files(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(
            content="original with file", attachments=[discord.File(io.BytesIO(b"one"), "one.txt")]
        )
        assert isinstance(interaction.channel, discord.TextChannel)
        msg = await interaction.channel.send("with a file", file=discord.File(io.BytesIO(b"a"), "a.txt"))
        msg = await msg.edit(attachments=[msg.attachments[0], discord.File(io.BytesIO(b"b"), "b.txt")])
        await msg.add_reaction("👀")
        await msg.remove_reaction("👀", self.bot.user)  # type: ignore[arg-type]
        doomed = await interaction.channel.send("short-lived")
        await doomed.delete()
        await self.events.add("files", (msg.id, doomed.id, [a.filename for a in msg.attachments]))

    @app_commands.command(name="rename", description="Opens a modal")
    async def rename(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(RenameModal(self.events))

    @app_commands.command(name="confirm", description="Asks for confirmation")
    async def confirm(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Confirm?", view=ConfirmView(self.events))

    async def add_to_dataset(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.defer(ephemeral=True)
        files = [(a.filename, await a.read()) for a in message.attachments]
        await interaction.followup.send(f"added {len(files)}", ephemeral=True)
        await self.events.add("menu", files)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.events.add("reaction", payload)

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        await self.events.add("resumed", True)


class ContractBot(commands.Bot):
    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.default()
        intents.members = True
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents, **BOT_KWARGS)
        self.guild_id = guild_id
        self.events = Events()

    async def setup_hook(self) -> None:
        guild = discord.Object(self.guild_id)

        @self.tree.command(name="ping", description="Global ping")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        await self.add_cog(ContractCog(self), guild=guild)
        await self.tree.sync()
        await self.tree.sync(guild=guild)


@pytest.fixture
async def sim() -> AsyncIterator[DiscordSimulator]:
    simulator = DiscordSimulator(channels=("general", "training"))
    await simulator.start()
    restore = simulator.patch_discord()
    try:
        yield simulator
    finally:
        restore()
        await simulator.close()


async def _start(bot: commands.Bot, token: str) -> asyncio.Task[None]:
    task = asyncio.create_task(bot.start(token))
    ready = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # re-raise the start-up error
    assert ready in done, "the bot never became ready"
    return task


@pytest.fixture
async def bot(sim: DiscordSimulator) -> AsyncIterator[ContractBot]:
    contract_bot = ContractBot(sim.guild.id)
    task = await _start(contract_bot, sim.bot_token)
    try:
        yield contract_bot
    finally:
        await contract_bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cog(bot: ContractBot) -> ContractCog:
    found = bot.get_cog("ContractCog")
    assert isinstance(found, ContractCog)
    return found


async def test_login_gateway_and_command_sync(sim: DiscordSimulator, bot: ContractBot) -> None:
    assert [r.path for r in sim.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert all(r.authorized for r in sim.requests if r.path.startswith(("/users", "/applications")))
    identify = await sim.wait_for_frame(direction="recv", op=2)
    assert identify.d["token"] == sim.bot_token
    assert [f.t for f in sim.frames if f.direction == "send" and f.op == 0][:2] == ["READY", "GUILD_CREATE"]

    guild = bot.get_guild(sim.guild.id)
    assert guild is not None and guild.chunked
    assert {c.name for c in guild.text_channels} == {"general", "training"}

    assert [c["name"] for c in sim.commands()] == ["ping"]
    guild_cmds = {c["name"]: c for c in sim.commands(sim.guild)}
    assert set(guild_cmds) == {
        "grid",
        "slow",
        "twice",
        "limits",
        "files",
        "rename",
        "confirm",
        "Add to dataset",
    }
    submit = guild_cmds["grid"]["options"][0]
    assert (submit["name"], submit["type"]) == ("submit", 1)
    assert [(o["name"], o["type"]) for o in submit["options"]] == [("title", 3), ("image", 11)]

    # A global command needs no data.guild_id, and works too.
    alice = sim.add_member("alice")
    handle = await sim.invoke_slash("ping", user=alice)
    msg = await handle.response()
    assert msg is not None and msg.content == "pong" and not handle.ephemeral
    assert msg.type == 20 and msg.interaction_metadata and msg.interaction_metadata["name"] == "ping"


async def test_bad_token_is_rejected(sim: DiscordSimulator) -> None:
    client = discord.Client(intents=discord.Intents.default(), **BOT_KWARGS)
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert sim.requests[-1].status == 401


async def test_slash_with_attachment_defer_followup_429_and_reaction(
    sim: DiscordSimulator, bot: ContractBot
) -> None:
    trainer = sim.add_member("trainer", roles=["trainer"])
    reviewer = sim.add_member("reviewer", roles=["reviewer"])
    sim.inject_429("PATCH", r"^/channels/\d+/messages/\d+$", retry_after=0.05)

    handle = await sim.invoke_slash(
        "grid submit", {"title": "Level 1"}, user=trainer, attachments=[("grid.png", PNG)]
    )
    payload = handle.interaction.payload
    assert payload["data"]["guild_id"] == str(sim.guild.id)
    assert payload["attachment_size_limit"] == 10 * 1024 * 1024

    response = await handle.response()
    assert response is not None and response.content == "got Level 1"
    assert response.files == [("echo.png", PNG)]
    assert handle.deferred and not handle.ephemeral
    followup = await sim.wait_for_request("POST", r"^/webhooks/\d+/")
    assert not followup.authorized and followup.files == [("echo.png", PNG)]
    assert followup.json["attachments"] == [{"id": 0, "filename": "echo.png"}]

    title, filename, data, user_id, limit = await bot.events.wait("submit")
    assert (title, filename, data, user_id, limit) == (
        "Level 1",
        "grid.png",
        PNG,
        trainer.id,
        10 * 1024 * 1024,
    )
    cdn = await sim.wait_for_request("GET", r"^/ephemeral-attachments/")
    assert cdn.status == 200

    progress_id = await bot.events.wait("progress")
    patches = sim.recorder.find("PATCH", rf"/messages/{progress_id}$")
    assert [p.status for p in patches] == [429, 200]
    assert [v.content for v in sim.edits_of(progress_id)] == ["progress 100%"]
    assert sim.message(progress_id).reaction_users("✅") == [sim.bot_user.id]
    assert any(f.t == "MESSAGE_UPDATE" and f.d["id"] == str(progress_id) for f in sim.frames)

    own = await bot.events.wait("reaction", lambda p: p.message_id == progress_id)
    assert own.user_id == sim.bot_user.id
    await sim.react(progress_id, "👍", reviewer)
    seen = await bot.events.wait("reaction", lambda p: p.user_id == reviewer.id)
    assert str(seen.emoji) == "👍" and seen.member is not None
    assert [r.name for r in seen.member.roles if r.name == "reviewer"] == ["reviewer"]


async def test_first_response_after_three_seconds_is_unknown_interaction(
    sim: DiscordSimulator, bot: ContractBot
) -> None:
    user = sim.add_member("slowpoke")
    handle = await sim.invoke_slash("slow", user=user)
    await bot.events.wait("slow-started")
    sim.clock.advance(3.1)
    cog(bot).proceed.set()
    error = await bot.events.wait("slow-error")
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert not handle.acked


async def test_double_acknowledgement_is_rejected(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("eager")
    handle = await sim.invoke_slash("twice", user=user)
    error = await bot.events.wait("twice-error")
    assert error.status == 400 and error.code == 40060
    msg = await handle.response()
    assert msg is not None and msg.content == "first" and handle.ephemeral
    assert not any(f.t == "MESSAGE_CREATE" and f.d.get("content") == "first" for f in sim.frames)


async def test_message_limits_are_enforced(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("breaker")
    with spec.expecting_refusals() as refused:
        handle = await sim.invoke_slash("limits", user=user)
        errors = await bot.events.wait("limits")
    # The spec's own limits refuse three of them (11 attachments, a 257-character embed title, a
    # 2001-character webhook content); the docs' 2000-character bot content limit is the simulator's.
    assert sorted(v.json_path for v in refused) == ["$.attachments", "$.content", "$.embeds[0].title"]
    assert {k: (e.status, e.code) for k, e in errors.items()} == {
        "content": (400, 50035),
        "files": (400, 50035),
        "big": (413, 40005),
        "embed": (400, 50035),
        "followup-content": (400, 50035),
    }
    assert "content" in errors["content"].text  # the field path from Discord's "errors" object
    msg = await handle.response()
    assert msg is not None and msg.content == "5 rejected" and handle.ephemeral


async def test_token_expires_after_fifteen_minutes(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("patient")
    handle = await sim.invoke_slash("ping", user=user)
    await handle.response()
    sim.clock.advance(15 * 60 + 1)
    channel = bot.get_channel(sim.channel.id)
    assert isinstance(channel, discord.TextChannel)
    webhook = discord.Webhook.partial(sim.application_id, handle.token, client=bot)
    with pytest.raises(discord.HTTPException) as info:
        await webhook.send("too late", wait=True)
    assert (info.value.status, info.value.code) == (401, 50027)


async def test_button_and_message_context_menu(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("clicker", roles=["trainer"])
    handle = await sim.invoke_slash("confirm", user=user)
    prompt = await handle.response()
    assert prompt is not None and prompt.components
    click = await sim.invoke_component(prompt.id, "confirm", user)
    assert await bot.events.wait("confirmed") == user.id
    assert await click.ack() == 7
    assert sim.message(prompt.id).content == "confirmed by clicker"
    assert sim.message(prompt.id).components == []

    photo_post = sim.post_user_message(
        "training", user, "photos", attachments=[("a.png", PNG), ("b.png", PNG)]
    )
    menu = await sim.invoke_message_command("Add to dataset", photo_post.id, user)
    assert await bot.events.wait("menu") == [("a.png", PNG), ("b.png", PNG)]
    reply = await menu.response()
    assert reply is not None and reply.content == "added 2" and menu.ephemeral


async def test_driver_refuses_impossible_invocations(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("typo")
    with pytest.raises(SimulatorUsageError, match="never synced"):
        await sim.invoke_slash("nope", user=user)
    with pytest.raises(SimulatorUsageError, match="missing required"):
        await sim.invoke_slash("grid submit", {"title": "x"}, user=user)
    with pytest.raises(SimulatorUsageError, match="unknown options"):
        await sim.invoke_slash(
            "grid submit", {"title": "x", "colour": "red"}, user=user, attachments=[("a.png", PNG)]
        )
    with pytest.raises(SimulatorUsageError, match="pick a subcommand"):
        await sim.invoke_slash("grid", user=user)


async def test_gateway_drop_resumes_and_replays_missed_events(
    sim: DiscordSimulator, bot: ContractBot
) -> None:
    user = sim.add_member("watcher")
    posted = sim.post_user_message(None, user, "react to me")
    await sim.wait_for_frame(
        direction="send", t="MESSAGE_CREATE", predicate=lambda f: f.d["id"] == str(posted.id)
    )
    identifies = len([f for f in sim.frames if f.direction == "recv" and f.op == 2])
    mark = len(sim.frames)

    sim.gateway.hold_resumes()
    await sim.drop_gateway()
    await sim.react(posted.id, "🔥", user)  # dispatched while the bot is disconnected
    resume = await sim.wait_for_frame(direction="recv", op=6, after=mark)
    sim.gateway.release_resumes()

    assert await bot.events.wait("resumed")
    seen = await bot.events.wait("reaction", lambda p: p.message_id == posted.id)
    assert str(seen.emoji) == "🔥"
    replayed = await sim.wait_for_frame(direction="send", t="MESSAGE_REACTION_ADD", after=mark)
    resumed = await sim.wait_for_frame(direction="send", t="RESUMED", after=mark)
    assert resume.index < replayed.index < resumed.index
    assert resume.d["seq"] < replayed.s
    assert len([f for f in sim.frames if f.direction == "recv" and f.op == 2]) == identifies


async def test_multipart_edits_original_response_and_delete(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("filer")
    handle = await sim.invoke_slash("files", user=user)
    original = await handle.response()
    assert original is not None and original.files == [("one.txt", b"one")]
    msg_id, doomed_id, names = await bot.events.wait("files")
    assert names == ["a.txt", "b.txt"]
    assert sim.files_of(msg_id) == [("a.txt", b"a"), ("b.txt", b"b")]
    assert [v.attachments for v in sim.edits_of(msg_id)] == [["a.txt", "b.txt"]]
    edit = sim.recorder.find("PATCH", rf"/messages/{msg_id}$")[0]
    assert edit.files == [("b.txt", b"b")]
    assert sim.message(msg_id).reactions == {}
    assert sim.message(doomed_id).deleted
    assert doomed_id not in [m.id for m in sim.messages_in(None)]
    await sim.wait_for_frame(
        direction="send", t="MESSAGE_DELETE", predicate=lambda f: f.d["id"] == str(doomed_id)
    )
    await sim.wait_for_frame(direction="send", t="MESSAGE_REACTION_REMOVE")


async def test_message_burst_gets_429_with_discord_headers(sim: DiscordSimulator) -> None:
    url = f"{sim.api_url}/channels/{sim.channel.id}/messages"
    headers = {"Authorization": f"Bot {sim.bot_token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b'{"content":"x"}') as resp:
            assert resp.status == 401 and resp.headers["Content-Type"] == "application/json"
        statuses = []
        for i in range(6):
            async with session.post(url, data=json.dumps({"content": f"m{i}"}), headers=headers) as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    assert resp.headers["X-RateLimit-Limit"] == "5"
                    assert resp.headers["X-RateLimit-Remaining"] == str(4 - i)
                else:
                    body = await resp.json(content_type=None)
                    assert resp.headers["Content-Type"] == "application/json" and resp.headers["Via"]
                    assert body["message"] == "You are being rate limited." and body["global"] is False
                    assert 0 < body["retry_after"] <= 5
                    assert resp.headers["X-RateLimit-Remaining"] == "0"
    assert statuses == [200, 200, 200, 200, 200, 429]
    assert [m.content for m in sim.messages_in(None)] == ["m0", "m1", "m2", "m3", "m4"]


async def test_modal_round_trip(sim: DiscordSimulator, bot: ContractBot) -> None:
    user = sim.add_member("renamer")
    handle = await sim.invoke_slash("rename", user=user)
    assert await handle.ack() == 9 and handle.modal is not None and handle.modal["title"] == "Rename"
    assert await handle.response() is None
    with pytest.raises(SimulatorUsageError, match="is required"):
        await handle.submit_modal({})
    with pytest.raises(SimulatorUsageError, match="no fields"):
        await handle.submit_modal({"new_name": "x", "nope": "x"})
    submitted = await handle.submit_modal({"new_name": "elena-v2"})
    assert await bot.events.wait("renamed") == "elena-v2"
    reply = await submitted.response()
    assert reply is not None and reply.content == "renamed to elena-v2" and submitted.ephemeral
