"""/dataset gather | add | exclude | include, and the message menu "Add to dataset".

Thin adapter over ``bot.datasets.gather.DatasetGatherService``: parse the options, check the role,
defer within Discord's 3 s, keep ONE progress message edited in place while a batch is ingested, and
finish that message with the report summary (plus the full report as a .txt file when the summary
had to cut lists short).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.datasets.gather import parse_positions
from bot.datasets.ingest import NamedBytes
from bot.datasets.report import IngestProgress, IngestReport, RejectedFile, SkippedFile
from bot.datasets.sniff import has_image_extension
from bot.discord_limits import DISCORD_FILE_LIMIT
from bot.errors import InvalidInputError, UserError
from bot.roles import Role
from bot.text import mib, plain, quote_inline
from cogs._send import post_in_channel
from cogs._shared import guild_id_of, require, services_of
from cogs.dataset.manage import dataset_name_autocomplete

log = logging.getLogger(__name__)

MENU_NAME = "Add to dataset"
# Edit the progress message at most this often (Discord rate-limits message edits per route).
PROGRESS_INTERVAL_S = 2.0
PICKER_TIMEOUT_S = 300.0
MAX_SELECT_OPTIONS = 25
_ZIP_CONTENT_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})

Edit = Callable[[str], Awaitable[Any]]
Ingest = Callable[[Callable[[IngestProgress], Awaitable[None]]], Awaitable[IngestReport]]


class ProgressMessage:
    """One message edited in place: the latest snapshot at most every ``interval`` seconds.

    ``update`` never waits for Discord (ingest must not stall on a slow or rate-limited edit); a
    background task sends the newest text. ``stop`` lets an edit in flight finish, so the final reply
    sent afterwards is never overwritten by a late progress edit.
    """

    def __init__(self, edit: Edit, interval: float) -> None:
        self._edit = edit
        self._interval = interval
        self._latest: str | None = None
        self._shown: str | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.edits = 0

    @classmethod
    def of_response(cls, interaction: discord.Interaction[Any]) -> Self:
        """For the (deferred) original response of ``interaction``, at this server's progress pace."""

        async def edit(text: str) -> None:
            await interaction.edit_original_response(content=text)

        return cls(edit, progress_interval(interaction))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gather-progress")

    async def update(self, snapshot: IngestProgress) -> None:
        if snapshot.phase == "done":
            return  # the final summary replaces the progress text
        self._latest = progress_text(snapshot)
        self._wake.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            text = self._latest
            if text is not None and text != self._shown:
                started = time.monotonic()
                try:
                    await self._edit(text)
                    self._shown = text
                    self.edits += 1
                except Exception as exc:  # a failed progress edit must never fail the gathering
                    log.warning("could not edit the gathering progress message: %r", exc)
                # Sleep out the rest of the interval, but wake at once to stop.
                remaining = self._interval - (time.monotonic() - started)
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), remaining)


def progress_text(snapshot: IngestProgress) -> str:
    """The progress line; while a listing is still paging, its total is only what was found so far."""
    if snapshot.phase != "listing":
        return snapshot.text()
    return (
        f"Listing… {snapshot.total or 0} files found so far: {snapshot.added} added, "
        f"{snapshot.duplicates} duplicates, {snapshot.rejected} rejected, {snapshot.skipped} skipped"
    )


def progress_interval(interaction: discord.Interaction[Any]) -> float:
    return min(PROGRESS_INTERVAL_S, services_of(interaction).settings.progress_edit_interval_s)


async def ingest_with_progress(interaction: discord.Interaction[Any], ingest: Ingest) -> None:
    """Run ``ingest`` while the (deferred) original response shows its progress; then the report."""
    progress = ProgressMessage.of_response(interaction)
    progress.start()
    try:
        report = await ingest(progress.update)
    finally:
        await progress.stop()
    await send_report(interaction, report)


def _report_files(report: IngestReport) -> list[discord.File]:
    if not report.truncated:
        return []
    detail = io.BytesIO(report.detail().encode("utf-8"))
    return [discord.File(detail, filename=f"{report.dataset_name}-gathering-report.txt")]


async def send_report(interaction: discord.Interaction[Any], report: IngestReport) -> None:
    """The summary in place of the progress message; in the channel if the token expired (15 min)."""
    try:
        await interaction.edit_original_response(content=report.summary(), attachments=_report_files(report))
        return
    except discord.HTTPException as exc:
        log.warning("could not finish the gathering message (%s); posting in the channel", exc)
    await post_in_channel(interaction, lambda room: report.summary(limit=room), files=_report_files(report))


def attachment_limit(interaction: discord.Interaction[Any]) -> int:
    """The largest attachment we download: Discord's limit for this server, within ours."""
    discord_limit = max(getattr(interaction, "filesize_limit", 0) or 0, DISCORD_FILE_LIMIT)
    return min(discord_limit, services_of(interaction).settings.fetch_max_bytes)


async def read_attachments(
    attachments: Sequence[discord.Attachment], limit: int
) -> tuple[list[NamedBytes], list[RejectedFile]]:
    """Download each attachment (side by side) unless it is over ``limit``; say why any was not."""
    refused: list[RejectedFile] = []
    wanted: list[discord.Attachment] = []
    for attachment in attachments:
        if attachment.size > limit:
            refused.append(
                RejectedFile(
                    attachment.filename,
                    f"too large ({mib(attachment.size)}; the limit is {mib(limit)})",
                )
            )
        else:
            wanted.append(attachment)

    async def one(attachment: discord.Attachment) -> NamedBytes | RejectedFile:
        try:
            return NamedBytes(attachment.filename, await attachment.read())
        except discord.HTTPException as exc:
            return RejectedFile(
                attachment.filename, f"could not be downloaded from Discord (HTTP {exc.status})"
            )

    items: list[NamedBytes] = []
    for result in await asyncio.gather(*(one(a) for a in wanted)):
        if isinstance(result, NamedBytes):
            items.append(result)
        else:
            refused.append(result)
    return items, refused


def is_gatherable(attachment: discord.Attachment) -> bool:
    """An image or a zip, by its content type or its name (the bytes are checked later)."""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    name = attachment.filename.lower()
    return (
        content_type.startswith("image/")
        or content_type in _ZIP_CONTENT_TYPES
        or has_image_extension(name)
        or name.endswith(".zip")
    )


async def add_attachments(
    interaction: discord.Interaction[Any],
    dataset_name: str,
    attachments: Sequence[discord.Attachment],
    *,
    source: str | None = None,
    ignored: Sequence[str] = (),
) -> None:
    """Download ``attachments`` and ingest them into the dataset; the interaction is already deferred."""
    services = services_of(interaction)
    info = await services.datasets.get(guild_id=guild_id_of(interaction), name=dataset_name)
    items, refused = await read_attachments(attachments, attachment_limit(interaction))
    skipped = [SkippedFile(name, "not an image or a zip") for name in ignored]
    if not items:
        reasons = "; ".join(f"{quote_inline(r.name)}: {plain(r.reason, 200)}" for r in refused) or "no files"
        raise InvalidInputError(f"Nothing was added to **{info.name}**: {reasons}.")

    async def ingest(progress: Callable[[IngestProgress], Awaitable[None]]) -> IngestReport:
        report = await services.gather.from_attachments(
            info.id, items, added_by=interaction.user.id, progress=progress, source=source
        )
        # Files we never handed over still belong in the report: nothing is silently dropped.
        report.rejected[:0] = refused
        report.skipped.extend(skipped)
        return report

    await ingest_with_progress(interaction, ingest)


def plan_gather(
    source: str, folder: str | None, tag: str | None, query: str | None, urls: str | None
) -> dict[str, str]:
    """Check that exactly the options ``source`` needs were given; return them."""
    given = {
        key: value.strip()
        for key, value in (("folder", folder), ("tag", tag), ("query", query), ("urls", urls))
        if value is not None and value.strip()
    }
    if source == "cloudinary":
        if "urls" in given:
            raise InvalidInputError(
                "`urls` goes with `source: url`; for Cloudinary give a folder, tag or query."
            )
        chosen = [key for key in ("folder", "tag", "query") if key in given]
        if len(chosen) != 1:
            raise InvalidInputError(
                "For Cloudinary give exactly one of `folder`, `tag` or `query`"
                + (f" (you gave {', '.join(chosen)})." if chosen else ".")
            )
        return {chosen[0]: given[chosen[0]]}
    if source == "url":
        extra = [key for key in ("folder", "tag", "query") if key in given]
        if extra:
            raise InvalidInputError(
                f"`{'`, `'.join(extra)}` only go with `source: cloudinary`; for links give `urls` only."
            )
        if "urls" not in given:
            raise InvalidInputError("Give the links in `urls`, separated by spaces or new lines.")
        return {"urls": given["urls"]}
    raise InvalidInputError("The source is `cloudinary` or `url`.")


@require(Role.TRAINER)
async def add_to_dataset_menu(interaction: discord.Interaction[Any], message: discord.Message) -> None:
    """Message menu: add every image/zip attached to a message to a dataset (asks which one)."""
    services = services_of(interaction)
    guild_id = guild_id_of(interaction)
    wanted = [a for a in message.attachments if is_gatherable(a)]
    ignored = [a.filename for a in message.attachments if not is_gatherable(a)]
    if not wanted:
        raise InvalidInputError("That message has no images or zip files attached.")
    datasets = await services.datasets.list(guild_id=guild_id)
    if not datasets:
        raise InvalidInputError("There are no datasets yet: create one with `/dataset create` first.")
    count = len(wanted)
    source = f"{count} attachment{'' if count == 1 else 's'} of {message.jump_url}"
    if len(datasets) == 1:
        await interaction.response.defer(thinking=True)
        await add_attachments(interaction, datasets[0].name, wanted, source=source, ignored=ignored)
        return
    names = [d.name for d in datasets[:MAX_SELECT_OPTIONS]]
    picker = DatasetPicker(interaction, names, wanted, source=source, ignored=ignored)
    text = f"Add {count} file{'' if count == 1 else 's'} to which dataset?"
    if len(datasets) > MAX_SELECT_OPTIONS:
        text += f" (the first {MAX_SELECT_OPTIONS} of {len(datasets)}; use `/dataset add` for the others)"
    await interaction.response.send_message(text, view=picker, ephemeral=True)


class DatasetPicker(discord.ui.View):
    """The private "which dataset?" select of the message menu."""

    def __init__(
        self,
        parent: discord.Interaction[Any],
        names: list[str],
        attachments: Sequence[discord.Attachment],
        *,
        source: str,
        ignored: Sequence[str],
    ) -> None:
        super().__init__(timeout=PICKER_TIMEOUT_S)
        self.parent = parent
        self.attachments = list(attachments)
        self.source = source
        self.ignored = list(ignored)
        self.select: discord.ui.Select[DatasetPicker] = discord.ui.Select(
            placeholder="Choose a dataset",
            options=[discord.SelectOption(label=name, value=name) for name in names],
        )
        self.select.callback = self._picked
        self.add_item(self.select)

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        return interaction.user.id == self.parent.user.id

    async def _picked(self, interaction: discord.Interaction[Any]) -> None:
        name = self.select.values[0]
        self.stop()
        await interaction.response.defer(thinking=True)
        with contextlib.suppress(discord.HTTPException):
            await self.parent.edit_original_response(content=f"Adding to **{name}**…", view=None)
        try:
            await add_attachments(
                interaction, name, self.attachments, source=self.source, ignored=self.ignored
            )
        except UserError as exc:
            # Views are outside the command tree's error policy: answer here.
            await interaction.edit_original_response(content=str(exc)[:2000])

    async def on_timeout(self) -> None:
        with contextlib.suppress(discord.HTTPException):
            await self.parent.edit_original_response(
                content="No dataset was chosen; nothing was added.", view=None
            )

    async def on_error(
        self, interaction: discord.Interaction[Any], error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        log.error("the dataset picker failed", exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(content="Something went wrong on our side.")


class GatherCommands(commands.Cog):
    """Mixin of the /dataset group: gathering photos, and excluding/including them by number."""

    bot: commands.Bot

    async def cog_load(self) -> None:
        await super().cog_load()
        # A message menu cannot live inside a group: it is added to the tree next to the group.
        self.bot.tree.add_command(app_commands.ContextMenu(name=MENU_NAME, callback=add_to_dataset_menu))

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(MENU_NAME, type=discord.AppCommandType.message)
        await super().cog_unload()

    @app_commands.command(name="gather", description="Gather photos from Cloudinary or from links.")
    @app_commands.describe(
        name="The dataset",
        source="Where the photos are",
        folder="Cloudinary: an asset folder, e.g. elena",
        tag="Cloudinary: a tag",
        query="Cloudinary: a Search expression, e.g. tags=portrait AND asset_folder=elena",
        urls="Links: http(s) links to images or zips, separated by spaces",
    )
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    @require(Role.TRAINER)
    async def gather(
        self,
        interaction: discord.Interaction[Any],
        name: str,
        source: Literal["cloudinary", "url"],
        folder: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        urls: str | None = None,
    ) -> None:
        services = services_of(interaction)
        plan = plan_gather(source, folder, tag, query, urls)
        # User mistakes are answered privately before we defer (after it, replies are public).
        info = await services.datasets.get(guild_id=guild_id_of(interaction), name=name)
        if source == "cloudinary" and services.gather.cloudinary is None:
            raise InvalidInputError("Cloudinary is not configured here (the bot needs CLOUDINARY_URL).")
        await interaction.response.defer(thinking=True)
        user_id = interaction.user.id

        async def ingest(progress: Callable[[IngestProgress], Awaitable[None]]) -> IngestReport:
            if "urls" in plan:
                return await services.gather.from_urls(
                    info.id, plan["urls"], added_by=user_id, progress=progress
                )
            return await services.gather.from_cloudinary(
                info.id,
                folder=plan.get("folder"),
                tag=plan.get("tag"),
                query=plan.get("query"),
                added_by=user_id,
                progress=progress,
            )

        await ingest_with_progress(interaction, ingest)

    @app_commands.command(name="add", description="Add attached photos (or zips of photos) to a dataset.")
    @app_commands.describe(
        name="The dataset",
        file1="A photo or a zip of photos",
        file2="Another photo or zip",
        file3="Another photo or zip",
        file4="Another photo or zip",
        file5="Another photo or zip",
        file6="Another photo or zip",
        file7="Another photo or zip",
        file8="Another photo or zip",
        file9="Another photo or zip",
        file10="Another photo or zip",
    )
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    @require(Role.TRAINER)
    async def add(
        self,
        interaction: discord.Interaction[Any],
        name: str,
        file1: discord.Attachment,
        file2: discord.Attachment | None = None,
        file3: discord.Attachment | None = None,
        file4: discord.Attachment | None = None,
        file5: discord.Attachment | None = None,
        file6: discord.Attachment | None = None,
        file7: discord.Attachment | None = None,
        file8: discord.Attachment | None = None,
        file9: discord.Attachment | None = None,
        file10: discord.Attachment | None = None,
    ) -> None:
        files = [f for f in (file1, file2, file3, file4, file5, file6, file7, file8, file9, file10) if f]
        # Fails privately, before the defer, when the dataset does not exist.
        info = await services_of(interaction).datasets.get(guild_id=guild_id_of(interaction), name=name)
        await interaction.response.defer(thinking=True)
        await add_attachments(interaction, info.name, files)

    @app_commands.command(name="exclude", description="Leave images out of training, by number.")
    @app_commands.describe(
        name="The dataset",
        numbers="Image numbers from the contact sheet, e.g. 3, 7-9",
        reason="Why (shown in reports)",
    )
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    @require(Role.TRAINER)
    async def exclude(
        self, interaction: discord.Interaction[Any], name: str, numbers: str, reason: str | None = None
    ) -> None:
        services = services_of(interaction)
        info = await services.datasets.get(guild_id=guild_id_of(interaction), name=name)
        positions = parse_positions(numbers)
        why = reason if reason and reason.strip() else f"excluded by {interaction.user.display_name}"
        result = await services.gather.exclude(info.id, positions, why)
        await interaction.response.send_message(f"**{info.name}**: {result.summary('excluded')}"[:2000])

    @app_commands.command(name="include", description="Bring excluded images back, by number.")
    @app_commands.describe(name="The dataset", numbers="Image numbers from the contact sheet, e.g. 3, 7-9")
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    @require(Role.TRAINER)
    async def include(self, interaction: discord.Interaction[Any], name: str, numbers: str) -> None:
        services = services_of(interaction)
        info = await services.datasets.get(guild_id=guild_id_of(interaction), name=name)
        result = await services.gather.include(info.id, parse_positions(numbers))
        await interaction.response.send_message(f"**{info.name}**: {result.summary('included')}"[:2000])
