"""/dataset caption | export | trigger: captions with the trigger first, the zip for local training,
and advice on the trigger word.

Thin adapter over ``bot.datasets.captioning.CaptionService`` and ``bot.datasets.export.ExportService``.
Every caption reply ends with the check of the captions in use (each must start with the trigger).
Exports are private (the zip or, when it is over the interaction's attachment limit, its path on
the bot's disk), and so is any refusal.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.datasets.captioning import TRAINING_SUBSETS, CaptionLine
from bot.discord_limits import DISCORD_FILE_LIMIT
from bot.errors import InvalidInputError
from bot.roles import Role
from bot.text import plain, quote_inline, truncate
from bot.training.presets import preset_names
from bot.training.triggers import TriggerReport, check_trigger
from cogs._shared import guild_id_of, require, services_of
from cogs.dataset.manage import dataset_name_autocomplete

log = logging.getLogger(__name__)

LISTING_LINES = 10
LINE_CHARS = 110
MAX_PROBLEMS_SHOWN = 5
SUGGESTIONS = 3
# How long a reply waits for trigger advice before answering without it (Discord's deadline is 3 s).
ADVICE_WAIT_S = 1.5


# -- text helpers (pure: tested through the commands) ---------------------------------------------------


def trigger_advice(report: TriggerReport) -> str:
    """The advice shown for a weak trigger; empty when the trigger is fine."""
    if report.ok:
        return ""
    lines = [f"⚠️ The trigger {quote_inline(report.trigger, 40)} is weak for identity training:"]
    lines += [f"- {plain(warning, 300)}" for warning in report.warnings]
    if report.suggestions:
        lines.append(
            "Rare alternatives (one CLIP token, no meaning, no name): "
            + ", ".join(f"`{word}`" for word in report.suggestions)
        )
    return "\n".join(lines)


async def trigger_report(trigger: str, *, seed: str) -> TriggerReport:
    """``check_trigger`` off the event loop (its first call loads word lists, ~1 s)."""
    return await asyncio.to_thread(check_trigger, trigger, suggest=SUGGESTIONS, seed=seed)


async def send_with_trigger_advice(
    interaction: discord.Interaction[Any], text: str, trigger: str, *, seed: str
) -> None:
    """Reply ``text`` plus the advice when ``trigger`` is weak.

    The advice's first call loads word lists (~1 s); the reply waits at most :data:`ADVICE_WAIT_S` for
    it and otherwise sends the advice as a follow-up, so Discord's 3 s deadline is never at risk. A
    failing check is logged, never shown: the advice is a nicety.
    """
    task = asyncio.ensure_future(trigger_report(trigger, seed=seed))
    done, _ = await asyncio.wait({task}, timeout=ADVICE_WAIT_S)
    if done and task.exception() is None:
        advice = trigger_advice(task.result())
        if advice:
            text = f"{text}\n\n{advice}"
    await interaction.response.send_message(text[:2000])
    try:
        report = await task
    except Exception:
        log.warning("trigger advice for %r failed", trigger, exc_info=True)
        return
    late = trigger_advice(report) if not done else ""
    if late:
        await interaction.followup.send(late[:2000])


def caption_listing(lines: Sequence[CaptionLine], *, limit: int = LISTING_LINES) -> str:
    """A few captions of the images in use, numbered like the contact sheet."""
    used = [line for line in lines if not line.excluded and line.subset in TRAINING_SUBSETS]
    if not used:
        return "No images yet: add some with `/dataset gather` or `/dataset add`."
    out = []
    for line in used[:limit]:
        crop = " (crop)" if line.subset == "face_crops" else ""
        edited = " ✎" if line.edited else ""
        text = plain(line.text, LINE_CHARS) if line.text is not None else "*(no caption)*"
        out.append(f"`#{line.position}`{crop}{edited} {text}")
    if len(used) > limit:
        out.append(f"… and {len(used) - limit} more")
    excluded = sum(1 for line in lines if line.excluded)
    if excluded:
        out.append(f"({excluded} excluded images are not listed)")
    return "\n".join(out)


def check_text(problems: Sequence[str], trigger: str) -> str:
    if not problems:
        return f"✅ Check: every caption in use starts with `{trigger}`."
    shown = [f"- {plain(p, 160)}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"- … and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return "⚠️ Check found problems:\n" + "\n".join(shown)


def _fit(parts: Sequence[str], limit: int = 2000) -> str:
    """Join message parts; the middle ones are shortened first so the check (last) always shows."""
    text = "\n\n".join(p for p in parts if p)
    if len(text) <= limit:
        return text
    head, *middle, tail = [p for p in parts if p]
    room = limit - len(head) - len(tail) - 4 * (len(middle) + 1)
    squeezed = truncate("\n".join(middle), room)
    return "\n\n".join([head, squeezed, tail])[:limit]


async def preset_autocomplete(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    del interaction
    return [app_commands.Choice(name=name, value=name) for name in preset_names() if current.lower() in name][
        :25
    ]


# -- the commands -----------------------------------------------------------------------------------------


class CaptionCommands(commands.Cog):
    """Mixin of the /dataset group: captions, export and trigger advice."""

    @app_commands.command(name="caption", description="Make, edit or check the captions of a dataset.")
    @app_commands.describe(
        name="The dataset",
        number="Image number (from the contact sheet): show or edit that image's caption",
        text="New caption for that image (the trigger is kept first)",
        prefix="Add these words after the trigger in every caption",
        suffix="Add these words at the end of every caption",
        regenerate="Rewrite every caption from the template, dropping edits",
    )
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    @require(Role.TRAINER)
    async def caption(
        self,
        interaction: discord.Interaction[Any],
        name: str,
        number: app_commands.Range[int, 1, 1_000_000] | None = None,
        text: app_commands.Range[str, 1, 1000] | None = None,
        prefix: app_commands.Range[str, 1, 200] | None = None,
        suffix: app_commands.Range[str, 1, 200] | None = None,
        regenerate: bool = False,
    ) -> None:
        services = services_of(interaction)
        info = await services.datasets.get(guild_id=guild_id_of(interaction), name=name)
        captions = services.captions
        if text is not None and number is None:
            raise InvalidInputError("Say which image to caption: give `number` with `text`.")
        if number is not None and (prefix or suffix or regenerate):
            raise InvalidInputError(
                "Edit one image (`number`, `text`) or change all captions (`prefix`, `suffix`, "
                "`regenerate`), not both at once."
            )
        parts: list[str]
        if number is not None and text is not None:
            edit = await captions.edit(info.id, number, text, user_id=interaction.user.id)
            note = (
                f" The trigger was put back in front: captions must start with `{info.trigger_word}`."
                if edit.trigger_restored
                else ""
            )
            parts = [
                f"Caption of **{info.name}** `#{edit.position}` set.{note}",
                f"> {plain(edit.text, 900)}",  # typed text: shown, never markup
            ]
        elif number is not None:
            line = next((ln for ln in await captions.list(info.id) if ln.position == number), None)
            if line is None:
                raise InvalidInputError(f"There is no image #{number} in `{info.name}`.")
            shown = (
                plain(line.text, 900)
                if line.text is not None
                else "*(no caption yet: `/dataset caption` makes one)*"
            )
            state = " (excluded)" if line.excluded else (" (edited)" if line.edited else "")
            parts = [f"Caption of **{info.name}** `#{number}`{state}:", f"> {shown}"]
        else:
            made = await captions.generate(info.id, overwrite=regenerate)
            head = (
                f"Captions of **{info.name}** rewritten from the template: {made.created + made.replaced}."
                if regenerate
                else f"Captions of **{info.name}**: {made.created} new, {made.kept} kept as they were."
            )
            if prefix or suffix:
                bulk = await captions.bulk(
                    info.id, prefix=prefix or "", suffix=suffix or "", user_id=interaction.user.id
                )
                added = " and ".join(
                    f"{label} {quote_inline(value, 100)}"
                    for label, value in (("prefix", prefix), ("suffix", suffix))
                    if value
                )
                head += f" Added {added} to {bulk.changed} captions ({bulk.unchanged} had it already)."
            parts = [head, caption_listing(await captions.list(info.id))]
        parts.append(check_text(await captions.check(info.id), info.trigger_word))
        await interaction.response.send_message(_fit(parts))

    @app_commands.command(name="export", description="Download the kohya folder and configs as a zip.")
    @app_commands.describe(
        name="The dataset",
        preset="Training preset (`loraops presets` explains each)",
        overrides="Preset changes as KEY=VALUE, e.g. rank=16 steps=1200 lr=1e-4",
    )
    @app_commands.autocomplete(name=dataset_name_autocomplete, preset=preset_autocomplete)
    @require(Role.TRAINER)
    async def export(
        self,
        interaction: discord.Interaction[Any],
        name: str,
        preset: str,
        overrides: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        services = services_of(interaction)
        info = await services.datasets.get(guild_id=guild_id_of(interaction), name=name)
        # Rendering decodes every image: answer within Discord's 3 s, privately (refusals are private).
        await interaction.response.defer(ephemeral=True, thinking=True)
        limit = getattr(interaction, "filesize_limit", None) or DISCORD_FILE_LIMIT
        result = await services.exports.export(info.id, preset, overrides, max_bytes=limit)
        lines = [
            f"**{info.name}** with preset **{result.preset}**: {result.image_count} images, "
            f"{result.total_steps} steps for `{result.script}` (README.txt inside says how to run it)."
        ]
        if result.warnings:
            lines += [f"- ⚠️ {plain(w, 200)}" for w in result.warnings[:MAX_PROBLEMS_SHOWN]]
        size_mib = result.size / (1024 * 1024)
        if result.data is not None:
            await interaction.followup.send(
                "\n".join(lines)[:2000],
                file=discord.File(io.BytesIO(result.data), filename=result.filename),
                ephemeral=True,
            )
            return
        lines.append(
            f"The zip is {size_mib:.1f} MiB, over Discord's {limit / (1024 * 1024):.0f} MiB attachment "
            f"limit: it is on the bot's machine at `{result.path}` (kept for 7 days)."
        )
        await interaction.followup.send("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="trigger", description="Check a dataset's trigger word (or another word).")
    @app_commands.describe(name="The dataset", word="Check this word instead, e.g. a trigger you consider")
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    async def trigger(
        self,
        interaction: discord.Interaction[Any],
        name: str,
        word: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        info = await services_of(interaction).datasets.get(guild_id=guild_id_of(interaction), name=name)
        checked = (word or info.trigger_word).strip()
        task = asyncio.ensure_future(trigger_report(checked, seed=info.name))
        done, _ = await asyncio.wait({task}, timeout=ADVICE_WAIT_S)
        if not done:  # the word lists are still loading: keep the interaction alive
            await interaction.response.defer(ephemeral=True, thinking=True)
        report = await task
        advice = trigger_advice(report)
        if not advice:
            advice = (
                f"✅ {quote_inline(report.trigger, 40)} looks like a good trigger: one rare CLIP token, "
                "not a word or a name."
            )
        notes = [f"- {plain(f.message, 300)}" for f in report.findings if f.severity == "info"]
        text = "\n".join([advice, *notes])
        if word is not None and word.strip().lower() != info.trigger_word.lower():
            text += f"\n(`{info.name}` uses `{info.trigger_word}`.)"
        if interaction.response.is_done():
            await interaction.followup.send(text[:2000], ephemeral=True)
        else:
            await interaction.response.send_message(text[:2000], ephemeral=True)
