"""A readable transcript of the Discord simulator's conversation: ``transcript.json``, ``transcript.html``.

Built from the simulator's state after the fact (messages with their edit history, attachments,
reactions, interactions) and its recorder (when each human reaction reached the bot), in time order.

``transcript.json`` is a list of entries, oldest first. Every message and every edit of a message is
one entry (``kind`` ``"message"`` or ``"edit"``) with ``channel``, ``author``, ``content``, ``embeds``,
``attachments`` (each with the ``file`` it was saved to, relative to the output folder),
``components`` (buttons), ``reactions`` (``[{"emoji", "users"}]``, on the message entry: who reacted
by the end), ``ephemeral`` (and ``visible_to``) and ``interaction`` (which command or click produced
it). What people did is interleaved as entries too: ``"command"`` (a slash command, a message-menu
command, a button click or a form, rendered like ``/dataset create name:elena …``) and ``"reaction"``
(a person reacting to a message), so the list reads as the conversation did.

``transcript.html`` is one self-contained page (inline CSS, images from ``files/`` next to it) showing
the same entries: messages as chat lines, embeds as cards, reactions as chips, buttons, and edits as
"edited" versions (runs of edits of one message folded into one block). All text users or the bot wrote
is HTML-escaped before the little Markdown the bot uses (bold, code, quotes, lists) is rendered.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.discord import DiscordSimulator, SimAttachment, SimMessage

DISCORD_EPOCH_MS = 1420070400000
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Written:
    """Where the transcript went and how much it holds."""

    html: Path
    json: Path
    entries: int
    files: int


def snowflake_time(snowflake: int) -> datetime:
    """The creation time a Discord snowflake carries (millisecond precision)."""
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=UTC)


# -- building the entries ----------------------------------------------------------------------------------


class _Files:
    """Saves attachments under ``files/`` once each, with their own names (made unique and safe)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = out_dir / "files"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._by_id: dict[int, str] = {}
        self._used: set[str] = set()

    def save(self, attachment: SimAttachment) -> str:
        known = self._by_id.get(attachment.id)
        if known is not None:
            return known
        name = _SAFE_NAME.sub("_", attachment.filename).strip("._") or "file"
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            stem, suffix = name, ""
        candidate, number = name, 2
        while candidate.lower() in self._used:
            candidate = f"{stem}-{number}.{suffix}" if suffix else f"{stem}-{number}"
            number += 1
        self._used.add(candidate.lower())
        (self.dir / candidate).write_bytes(attachment.data)
        relative = f"files/{candidate}"
        self._by_id[attachment.id] = relative
        return relative

    @property
    def count(self) -> int:
        return len(self._by_id)


class _Builder:
    def __init__(self, sim: DiscordSimulator, out_dir: Path) -> None:
        self.sim = sim
        self.files = _Files(out_dir)
        # The recorder's clock is monotonic; map it onto wall time for ordering against messages.
        now = datetime.now(UTC)
        self._mono_to_wall = now.timestamp() - sim.clock.monotonic()
        self.labels = self._button_labels()
        # Which message each file is attached to now (older versions' files are attached to none).
        self._owner = {a.id: m.id for m in sim.messages.values() for a in m.attachments}

    # names --------------------------------------------------------------------------------------------
    def user_name(self, user_id: int | str | None) -> str:
        if user_id is None:
            return "unknown"
        user = self.sim.users.get(int(user_id))
        if user is None:
            return f"user {user_id}"
        return user.global_name or user.username

    def channel_name(self, channel_id: int) -> str:
        channel = self.sim.find_channel(channel_id)
        if channel is None:
            return str(channel_id)
        if channel.type == 1:
            return f"DM with {channel.recipient.username if channel.recipient else '?'}"
        return channel.name

    def _button_labels(self) -> dict[str, str]:
        """custom_id → label over every version of every message (buttons vanish after a click)."""
        labels: dict[str, str] = {}
        for message in self.sim.messages.values():
            for version in message.versions:
                for button in flatten_components(version.components):
                    if button.get("custom_id") and button.get("label"):
                        labels[str(button["custom_id"])] = str(button["label"])
        return labels

    # attachments --------------------------------------------------------------------------------------
    def resolve_attachments(
        self, message: SimMessage, names: Sequence[str], at: datetime
    ) -> list[SimAttachment]:
        """The stored files a version listed (versions keep names only): for each name, the newest file
        of that name in the channel uploaded by the time of the version and not attached to another
        message now (an edit that replaces ``chart.png`` uploads a new file of the same name)."""
        limit = at + timedelta(milliseconds=2)
        found: list[SimAttachment] = []
        for name in names:
            candidates = [
                a
                for a in self.sim.files.values()
                if a.channel_id == message.channel_id
                and a.filename == name
                and snowflake_time(a.id) <= limit
                and self._owner.get(a.id, message.id) == message.id
            ]
            attachment = max(candidates, key=lambda a: a.id, default=None)
            if attachment is not None:
                found.append(attachment)
        return found

    def attachment_entry(self, attachment: SimAttachment) -> dict[str, Any]:
        return {
            "filename": attachment.filename,
            "file": self.files.save(attachment),
            "size": attachment.size,
            "content_type": attachment.content_type,
            "description": attachment.description,
            "sha256": hashlib.sha256(attachment.data).hexdigest(),
        }

    # interactions -------------------------------------------------------------------------------------
    def describe_interaction(self, interaction_id: int) -> dict[str, Any] | None:
        inter = self.sim.interactions.get(interaction_id)
        if inter is None:
            return None
        data = inter.data
        user = self.user_name(inter.user.id)
        if inter.type == 2 and int(data.get("type", 1)) == 1:
            kind, line = "slash", slash_line(data)
        elif inter.type == 2:
            target = data.get("target_id")
            kind = "message command" if int(data.get("type", 1)) == 3 else "user command"
            line = f"Apps → {data.get('name', '?')}" + (f" (on message {target})" if target else "")
        elif inter.type == 3:
            custom_id = str(data.get("custom_id", ""))
            label = self.labels.get(custom_id, custom_id)
            values = data.get("values")
            kind = "button"
            line = f"[{label}]" + (f" → {', '.join(map(str, values))}" if values else "")
        elif inter.type == 5:
            kind = "form"
            fields = [
                f"{c.get('custom_id')}: {c.get('value')}"
                for row in data.get("components", [])
                for c in row.get("components", [])
            ]
            line = "form " + "; ".join(fields)
        else:
            kind, line = f"type {inter.type}", str(data.get("name", ""))
        return {
            "id": str(inter.id),
            "type": kind,
            "user": user,
            "command": line,
            "on_message": str(inter.source_message_id) if inter.source_message_id else None,
        }

    # entries ------------------------------------------------------------------------------------------
    def message_entries(self) -> list[tuple[datetime, int, dict[str, Any]]]:
        out: list[tuple[datetime, int, dict[str, Any]]] = []
        for message in self.sim.messages.values():
            interaction = None
            if message.interaction_metadata is not None:
                interaction = self.describe_interaction(int(message.interaction_metadata["id"]))
            visible_to = None
            if message.ephemeral and message.interaction_metadata is not None:
                visible_to = self.user_name(message.interaction_metadata["user"]["id"])
            reactions = [
                {
                    "emoji": emoji.get("name")
                    if emoji.get("id") is None
                    else f"{emoji.get('name')}:{emoji['id']}",
                    "users": [self.user_name(u) for u in users],
                }
                for emoji, users in message.reactions.values()
                if users
            ]
            for index, version in enumerate(message.versions):
                attachments = self.resolve_attachments(message, version.attachments, version.at)
                entry: dict[str, Any] = {
                    "kind": "message" if index == 0 else "edit",
                    "at": version.at.isoformat(),
                    "channel": self.channel_name(message.channel_id),
                    "message_id": str(message.id),
                    "version": index,
                    "author": self.user_name(message.author.id),
                    "author_is_bot": message.author.bot,
                    "content": version.content,
                    "embeds": version.embeds,
                    "attachments": [self.attachment_entry(a) for a in attachments],
                    "components": [
                        {k: b[k] for k in ("label", "custom_id", "style", "disabled", "url") if k in b}
                        for b in flatten_components(version.components)
                    ],
                    "reactions": reactions if index == 0 else [],
                    "ephemeral": bool(version.flags & 64),
                    "visible_to": visible_to,
                    "loading": bool(version.flags & 128),
                    "interaction": interaction,
                    "deleted": message.deleted and index == len(message.versions) - 1,
                }
                out.append((version.at, message.id, entry))
        return out

    def command_entries(self) -> list[tuple[datetime, int, dict[str, Any]]]:
        out: list[tuple[datetime, int, dict[str, Any]]] = []
        for inter in self.sim.interactions.values():
            if inter.type == 4:  # autocomplete: not something a reader needs to see
                continue
            described = self.describe_interaction(inter.id)
            if described is None:
                continue
            at = snowflake_time(inter.id)
            out.append(
                (
                    at,
                    inter.id,
                    {
                        "kind": "command",
                        "at": at.isoformat(),
                        "channel": self.channel_name(inter.channel_id),
                        "author": described["user"],
                        "author_is_bot": False,
                        "interaction": described,
                        "acknowledged": inter.acked,
                    },
                )
            )
        return out

    def reaction_entries(self) -> list[tuple[datetime, int, dict[str, Any]]]:
        """People's reactions, timed by when the gateway told the bot (the bot's own are left out)."""
        out: list[tuple[datetime, int, dict[str, Any]]] = []
        seen: set[tuple[str, str, str]] = set()
        for frame in self.sim.recorder.frames:
            if (
                frame.direction != "send"
                or frame.t != "MESSAGE_REACTION_ADD"
                or not isinstance(frame.d, dict)
            ):
                continue
            data: dict[str, Any] = frame.d
            user_id = str(data.get("user_id"))
            if user_id == str(self.sim.bot_user.id):
                continue
            emoji = data.get("emoji") or {}
            name = (
                str(emoji.get("name"))
                if emoji.get("id") is None
                else f"{emoji.get('name')}:{emoji.get('id')}"
            )
            key = (user_id, str(data.get("message_id")), name)
            if key in seen:  # one event per reaction, even when several sessions received it
                continue
            seen.add(key)
            at = datetime.fromtimestamp(frame.at + self._mono_to_wall, tz=UTC)
            message = self.sim.messages.get(int(data.get("message_id", 0)))
            out.append(
                (
                    at,
                    0,
                    {
                        "kind": "reaction",
                        "at": at.isoformat(),
                        "channel": self.channel_name(int(data.get("channel_id", 0))),
                        "author": self.user_name(user_id),
                        "author_is_bot": False,
                        "emoji": name,
                        "message_id": str(data.get("message_id")),
                        "message_author": self.user_name(message.author.id) if message else None,
                    },
                )
            )
        return out


def flatten_components(components: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Buttons and selects inside action rows, in order."""
    found: list[dict[str, Any]] = []
    for item in components:
        if item.get("type") in (2, 3, 5, 6, 7, 8):
            found.append(item)
        found.extend(flatten_components(item.get("components") or []))
    return found


def slash_line(data: dict[str, Any]) -> str:
    """``/dataset create name:elena trigger:ohwx class:woman`` from an application-command payload."""
    parts = ["/" + str(data.get("name", ""))]
    options = list(data.get("options") or [])
    while options and options[0].get("type") in (1, 2):
        parts.append(str(options[0].get("name")))
        options = list(options[0].get("options") or [])
    resolved = (data.get("resolved") or {}).get("attachments") or {}
    for option in options:
        value = option.get("value")
        if option.get("type") == 11:  # attachment: show its file name
            value = (resolved.get(str(value)) or {}).get("filename", value)
        text = str(value)
        if isinstance(value, str) and (" " in text or not text):
            text = f'"{text}"'
        parts.append(f"{option.get('name')}:{text}")
    return " ".join(parts)


def build_entries(sim: DiscordSimulator, out_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Every message, edit, command and reaction in time order; attachments saved under ``out_dir/files``."""
    builder = _Builder(sim, out_dir)
    timed = builder.message_entries() + builder.command_entries() + builder.reaction_entries()
    order = {"command": 0, "message": 1, "edit": 2, "reaction": 3}
    timed.sort(key=lambda item: (item[0], order[item[2]["kind"]], item[1], item[2].get("version", 0)))
    entries = []
    for number, (_, _, entry) in enumerate(timed, 1):
        entries.append({"seq": number, **entry})
    return entries, builder.files.count


def write_transcript(sim: DiscordSimulator, out_dir: Path, *, title: str = "loraops sandbox") -> Written:
    """Write ``transcript.json``, ``transcript.html`` and ``files/`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, files = build_entries(sim, out_dir)
    json_path = out_dir / "transcript.json"
    json_path.write_text(
        json.dumps(entries, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8"
    )
    mentions = mention_names(sim)
    html_path = out_dir / "transcript.html"
    html_path.write_text(render_html(entries, title=title, mentions=mentions), encoding="utf-8")
    return Written(html=html_path, json=json_path, entries=len(entries), files=files)


def mention_names(sim: DiscordSimulator) -> dict[str, str]:
    """``<@id>``, ``<@&id>``, ``<#id>`` → what Discord shows for them."""
    names: dict[str, str] = {}
    for user in sim.users.values():
        shown = "@" + (user.global_name or user.username)
        names[f"<@{user.id}>"] = shown
        names[f"<@!{user.id}>"] = shown
    for guild in sim.guilds.values():
        for role in guild.roles.values():
            names[f"<@&{role.id}>"] = "@" + role.name.lstrip("@")
        for channel in guild.channels.values():
            names[f"<#{channel.id}>"] = "#" + channel.name
    return names


# -- HTML ---------------------------------------------------------------------------------------------------

_MENTION = re.compile(r"&lt;(?:@!|@&amp;|@|#)\d+&gt;")
_CODE_BLOCK = re.compile(r"```(?:[a-zA-Z0-9_+-]*\n)?(.*?)```", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")
_UNDERLINE_ITALIC = re.compile(r"(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])")
_ESCAPED = re.compile(r"\\(&gt;|&lt;|&amp;|[\\*_~`|\[\]#-])")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_PLACEHOLDER = "\x00{}\x00"


def markdown(text: str, mentions: dict[str, str] | None = None) -> str:
    """Discord's Markdown subset as HTML; ``text`` is escaped first, so nothing in it becomes markup."""
    stash: list[str] = []

    def keep(fragment: str) -> str:
        stash.append(fragment)
        return _PLACEHOLDER.format(len(stash) - 1)

    escaped = html.escape(text, quote=True)
    escaped = _CODE_BLOCK.sub(lambda m: keep(f"<pre>{m.group(1)}</pre>"), escaped)
    escaped = _INLINE_CODE.sub(lambda m: keep(f"<code>{m.group(1)}</code>"), escaped)
    escaped = _ESCAPED.sub(lambda m: keep(m.group(1)), escaped)
    if mentions:
        escaped = _MENTION.sub(
            lambda m: keep(_mention_html(mentions.get(html.unescape(m.group(0)), m.group(0)))),
            escaped,
        )
    escaped = _LINK.sub(lambda m: keep(f'<a href="{m.group(2)}">{m.group(1)}</a>'), escaped)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    escaped = _ITALIC.sub(r"<em>\1</em>", escaped)
    escaped = _UNDERLINE_ITALIC.sub(r"<em>\1</em>", escaped)
    lines_out: list[str] = []
    in_list = False
    for line in escaped.split("\n"):
        bullet = re.match(r"^\s*[-•] (.*)$", line)
        if bullet:
            if not in_list:
                lines_out.append("<ul>")
                in_list = True
            lines_out.append(f"<li>{bullet.group(1)}</li>")
            continue
        if in_list:
            lines_out.append("</ul>")
            in_list = False
        if line.startswith("&gt; "):
            lines_out.append(f"<blockquote>{line[5:]}</blockquote>")
        elif re.match(r"^#{1,3} ", line):
            level = len(line.split(" ", 1)[0])
            lines_out.append(f'<div class="h{level}">{line[level + 1 :]}</div>')
        else:
            lines_out.append(line + "<br>")
    if in_list:
        lines_out.append("</ul>")
    rendered = "".join(lines_out)
    if rendered.endswith("<br>"):
        rendered = rendered[: -len("<br>")]
    for index, fragment in enumerate(stash):
        rendered = rendered.replace(_PLACEHOLDER.format(index), fragment)
    # Placeholders can nest (a mention inside a link text): resolve what is left.
    for index, fragment in reversed(list(enumerate(stash))):
        rendered = rendered.replace(_PLACEHOLDER.format(index), fragment)
    return rendered


def _mention_html(name: str) -> str:
    return f'<span class="mention">{html.escape(name)}</span>'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _time(entry: dict[str, Any]) -> str:
    try:
        return datetime.fromisoformat(entry["at"]).strftime("%H:%M:%S.%f")[:-4]
    except (KeyError, ValueError):
        return ""


def _avatar(name: str, bot: bool) -> str:
    palette = ["#5865f2", "#3ba55d", "#faa61a", "#ed4245", "#eb459e", "#00a8fc", "#9b84ee"]
    colour = "#5865f2" if bot else palette[sum(map(ord, name)) % len(palette)]
    return f'<div class="avatar" style="background:{colour}">{_e(name[:1].upper() or "?")}</div>'


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in _IMAGE_SUFFIXES


def _embed_html(embed: dict[str, Any], files: dict[str, str], mentions: dict[str, str]) -> str:
    colour = embed.get("color")
    bar = f"#{int(colour):06x}" if isinstance(colour, int) else "#4f545c"
    parts = [f'<div class="embed" style="border-left-color:{bar}">']
    author = embed.get("author") or {}
    if author.get("name"):
        parts.append(f'<div class="embed-author">{_e(author["name"])}</div>')
    if embed.get("title"):
        title = _e(embed["title"])
        url = embed.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            title = f'<a href="{_e(url)}">{title}</a>'
        parts.append(f'<div class="embed-title">{title}</div>')
    if embed.get("description"):
        parts.append(f'<div class="embed-desc">{markdown(str(embed["description"]), mentions)}</div>')
    fields = embed.get("fields") or []
    if fields:
        parts.append('<div class="embed-fields">')
        for item in fields:
            cls = "embed-field inline" if item.get("inline") else "embed-field"
            name = markdown(str(item.get("name", "")), mentions)
            value = markdown(str(item.get("value", "")), mentions)
            parts.append(
                f'<div class="{cls}"><div class="embed-field-name">{name}</div>'
                f'<div class="embed-field-value">{value}</div></div>'
            )
        parts.append("</div>")
    for key in ("image", "thumbnail"):
        url = str((embed.get(key) or {}).get("url") or "")
        source = files.get(url.removeprefix("attachment://")) if url.startswith("attachment://") else None
        if source:
            parts.append(f'<a href="{_e(source)}"><img class="embed-{key}" src="{_e(source)}" alt=""></a>')
        elif url:
            parts.append(f'<div class="embed-footer">{key}: {_e(url)}</div>')
    footer = (embed.get("footer") or {}).get("text")
    stamp = embed.get("timestamp")
    if footer or stamp:
        bits = [_e(footer)] if footer else []
        if stamp:
            bits.append(_e(str(stamp)[:19].replace("T", " ")))
        parts.append(f'<div class="embed-footer">{" · ".join(bits)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _body_html(entry: dict[str, Any], mentions: dict[str, str]) -> str:
    parts: list[str] = []
    if entry.get("loading") and not entry.get("content"):
        parts.append('<div class="muted">loraops is thinking…</div>')
    if entry.get("content"):
        parts.append(f'<div class="content">{markdown(entry["content"], mentions)}</div>')
    files = {a["filename"]: a["file"] for a in entry.get("attachments", [])}
    for embed in entry.get("embeds") or []:
        parts.append(_embed_html(embed, files, mentions))
    shown_in_embeds = {
        str((embed.get(key) or {}).get("url", "")).removeprefix("attachment://")
        for embed in entry.get("embeds") or []
        for key in ("image", "thumbnail")
    }
    images, others = [], []
    for attachment in entry.get("attachments", []):
        if attachment["filename"] in shown_in_embeds:
            continue
        link = _e(attachment["file"])
        if _is_image(attachment["filename"]):
            images.append(
                f'<a class="image" href="{link}"><img src="{link}" alt="{_e(attachment["filename"])}">'
                f"<span>{_e(attachment['filename'])}</span></a>"
            )
        else:
            others.append(
                f'<a class="file" href="{link}">📎 {_e(attachment["filename"])} '
                f'<span class="muted">({attachment["size"]:,} bytes)</span></a>'
            )
    if images:
        parts.append(f'<div class="images">{"".join(images)}</div>')
    if others:
        parts.append(f'<div class="files">{"".join(others)}</div>')
    buttons = entry.get("components") or []
    if buttons:
        chips = "".join(
            f'<span class="button style{_e(b.get("style", 2))}{" disabled" if b.get("disabled") else ""}">'
            f"{_e(b.get('label') or b.get('custom_id') or '…')}</span>"
            for b in buttons
        )
        parts.append(f'<div class="buttons">{chips}</div>')
    reactions = entry.get("reactions") or []
    if reactions:
        chips = "".join(
            f'<span class="reaction" title="{_e(", ".join(r["users"]))}">{_e(r["emoji"])} '
            f'<b>{len(r["users"])}</b> <span class="who">{_e(", ".join(r["users"]))}</span></span>'
            for r in reactions
        )
        parts.append(f'<div class="reactions">{chips}</div>')
    return "".join(parts)


def _private_note(entry: dict[str, Any]) -> str:
    if not entry.get("ephemeral"):
        return ""
    who = entry.get("visible_to") or "the invoking user"
    return f'<div class="ephemeral-note">👁 Only {_e(who)} can see this</div>'


def _message_html(
    entry: dict[str, Any], mentions: dict[str, str], edits: Sequence[dict[str, Any]] = ()
) -> str:
    """A message; with ``edits`` (a "thinking…" reply filled in at once) it shows the newest version,
    the earlier ones folded below it."""
    shown = {**edits[-1], "reactions": entry.get("reactions", [])} if edits else entry
    classes = ["msg"]
    if entry.get("ephemeral"):
        classes.append("ephemeral")
    head = [f'<span class="author">{_e(entry["author"])}</span>']
    if entry.get("author_is_bot"):
        head.append('<span class="badge">APP</span>')
    head.append(f'<span class="time">{_time(entry)} · #{_e(entry["channel"])}</span>')
    if edits:
        span = f"{_time(edits[0])}–{_time(edits[-1])}" if len(edits) > 1 else _time(edits[-1])
        head.append(f'<span class="time">(edited {len(edits)}× {span})</span>')
    if entry.get("deleted"):
        head.append('<span class="muted">(deleted later)</span>')
    lines = [f'<div class="{" ".join(classes)}" id="m{_e(entry["message_id"])}">']
    interaction = entry.get("interaction")
    if interaction:
        lines.append(
            f'<div class="reply">↱ <b>{_e(interaction["user"])}</b> {_verb(interaction)} '
            f"<code>{_e(interaction['command'])}</code></div>"
        )
    lines.append(_avatar(entry["author"], bool(entry.get("author_is_bot"))))
    lines.append(f'<div class="main"><div class="head">{"".join(head)}</div>')
    lines.append(_body_html(shown, mentions))
    lines.append(_private_note(shown))
    if edits:
        older = "".join(
            f'<div class="version"><div class="vhead">version {_e(e["version"])} · {_time(e)}</div>'
            f"{_body_html(e, mentions)}</div>"
            for e in [entry, *edits[:-1]]
        )
        lines.append(f"<details><summary>{len(edits)} earlier version(s)</summary>{older}</details>")
    lines.append("</div></div>")
    return "".join(lines)


def _excerpt(entry: dict[str, Any] | None, limit: int = 70) -> str:
    """A message named by its text (first line, Markdown marks dropped), a file or an embed title."""
    if entry is None:
        return "a message"
    for line in str(entry.get("content") or "").splitlines():
        text = re.sub(r"<[@#][!&]?\d+>", "", line).replace("**", "").replace("`", "").strip()
        if text:
            return "«" + (text if len(text) <= limit else text[: limit - 1] + "…") + "»"
    for embed in entry.get("embeds") or []:
        if embed.get("title"):
            return f"«{embed['title']}»"
    for attachment in entry.get("attachments") or []:
        return attachment["filename"]
    return "a message"


def _target_html(first: dict[str, Any] | None, latest: dict[str, Any] | None) -> str:
    """How an edit or a reaction names its message: the command it answered, else its text."""
    interaction = (first or {}).get("interaction")
    if interaction and interaction.get("type") == "slash":
        return f"the reply to <code>{_e(interaction['command'])}</code>"
    return _e(_excerpt(latest or first))


def _edits_html(run: list[dict[str, Any]], mentions: dict[str, str], first: dict[str, Any] | None) -> str:
    last = run[-1]
    target = _e(last["message_id"])
    label = "edited" if len(run) == 1 else f"edited {len(run)} times"
    summary = (
        f'<span class="author">{_e(last["author"])}</span> {label} '
        f'<a href="#m{target}">{_target_html(first, first if first and first.get("content") else last)}</a> '
        f'<span class="time">{_time(run[0])}' + (f"–{_time(last)}" if len(run) > 1 else "") + "</span>"
    )
    parts = [f'<div class="edit"><div class="edit-head">✎ {summary}</div>']
    if len(run) > 1:
        older = "".join(
            f'<div class="version"><div class="vhead">version {_e(e["version"])} · {_time(e)}</div>'
            f"{_body_html(e, mentions)}</div>"
            for e in run[:-1]
        )
        parts.append(f"<details><summary>{len(run) - 1} earlier version(s)</summary>{older}</details>")
    parts.append(
        '<div class="version latest"><div class="vhead">'
        f"version {_e(last['version'])} (edited) · {_time(last)}</div>"
        f"{_body_html(last, mentions)}" + _private_note(last) + "</div></div>"
    )
    return "".join(parts)


def _verb(interaction: dict[str, Any]) -> str:
    return {"button": "clicked", "form": "submitted"}.get(interaction["type"], "used")


def _command_html(entry: dict[str, Any]) -> str:
    verb = _verb(entry["interaction"])
    interaction = entry["interaction"]
    return (
        f'<div class="action">{_avatar(entry["author"], False)}<div><b>{_e(entry["author"])}</b> {verb} '
        f'<code class="cmd">{_e(interaction["command"])}</code> '
        f'<span class="time">{_time(entry)} · #{_e(entry["channel"])}</span></div></div>'
    )


def _reaction_html(entry: dict[str, Any], latest: dict[str, Any] | None) -> str:
    return (
        f'<div class="action small"><div><b>{_e(entry["author"])}</b> reacted '
        f'<span class="reaction">{_e(entry["emoji"])}</span> '
        f'to <a href="#m{_e(entry["message_id"])}">{_e(_excerpt(latest))}</a> '
        f'<span class="time">{_time(entry)}</span></div></div>'
    )


_CSS = """
:root { color-scheme: dark; }
body {
  margin: 0;
  background: #313338;
  color: #dbdee1;
  font: 15px/1.4 "gg sans", "Segoe UI", Helvetica, Arial, sans-serif;
}
header { background: #2b2d31; padding: 16px 24px; border-bottom: 1px solid #1e1f22; }
header h1 { margin: 0 0 4px; font-size: 20px; color: #f2f3f5; }
header p { margin: 2px 0; color: #b5bac1; font-size: 13px; }
main { max-width: 1000px; margin: 0 auto; padding: 12px 24px 48px; }
a { color: #00a8fc; }
code {
  background: #1e1f22;
  border-radius: 3px;
  padding: 1px 4px;
  font: 13px Consolas, Menlo, monospace;
}
pre {
  background: #2b2d31;
  border: 1px solid #1e1f22;
  border-radius: 4px;
  padding: 8px;
  white-space: pre-wrap;
  font: 13px Consolas, Menlo, monospace;
  margin: 4px 0;
}
blockquote { margin: 2px 0; padding-left: 10px; border-left: 4px solid #4e5058; }
ul { margin: 2px 0; padding-left: 22px; }
.msg {
  display: grid;
  grid-template-columns: 48px 1fr;
  gap: 0 12px;
  padding: 8px 8px;
  margin-top: 6px;
  border-radius: 6px;
}
.msg:hover { background: #2e3035; }
.msg .reply {
  grid-column: 1 / 3;
  color: #b5bac1;
  font-size: 13px;
  padding-left: 60px;
  margin-bottom: 2px;
}
.avatar {
  width: 40px;
  height: 40px;
  border-radius: 50%;
  color: #fff;
  font-weight: 700;
  display: flex;
  align-items: center;
  justify-content: center;
  font-size: 18px;
  flex: none;
}
.action .avatar { width: 22px; height: 22px; font-size: 12px; margin-right: 8px; }
.head { display: flex; gap: 8px; align-items: baseline; }
.author { color: #f2f3f5; font-weight: 600; }
.badge {
  background: #5865f2;
  color: #fff;
  font-size: 10px;
  font-weight: 700;
  border-radius: 3px;
  padding: 0 4px;
}
.time { color: #949ba4; font-size: 12px; }
.muted { color: #949ba4; }
.content { white-space: normal; word-wrap: break-word; }
.h1 { font-size: 20px; font-weight: 700; }
.h2 { font-size: 17px; font-weight: 700; }
.h3 { font-weight: 700; }
.mention { background: rgba(88,101,242,.3); color: #c9cdfb; border-radius: 3px; padding: 0 2px; }
.embed {
  background: #2b2d31;
  border-left: 4px solid #4f545c;
  border-radius: 4px;
  padding: 8px 12px 10px;
  margin-top: 6px;
  max-width: 560px;
}
.embed-author { font-size: 13px; font-weight: 600; }
.embed-title { font-weight: 700; color: #f2f3f5; margin: 2px 0 4px; }
.embed-desc { font-size: 14px; }
.embed-fields { display: flex; flex-wrap: wrap; gap: 6px 16px; margin-top: 6px; }
.embed-field { flex: 1 1 100%; font-size: 14px; }
.embed-field.inline { flex: 1 1 150px; }
.embed-field-name { font-weight: 700; color: #f2f3f5; }
.embed-footer { color: #b5bac1; font-size: 12px; margin-top: 6px; }
.embed-image { max-width: 100%; border-radius: 4px; margin-top: 8px; }
.embed-thumbnail { max-width: 80px; float: right; border-radius: 4px; }
.images { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 6px; }
.image {
  display: inline-flex;
  flex-direction: column;
  color: #949ba4;
  font-size: 12px;
  text-decoration: none;
}
.image img {
  max-width: 520px;
  max-height: 360px;
  border-radius: 6px;
  border: 1px solid #1e1f22;
  background: #1e1f22;
}
.files { margin-top: 6px; }
.file {
  display: inline-block;
  background: #2b2d31;
  border: 1px solid #1e1f22;
  border-radius: 6px;
  padding: 8px 12px;
  margin-right: 6px;
}
.buttons { margin-top: 6px; display: flex; gap: 8px; flex-wrap: wrap; }
.button {
  border-radius: 4px;
  padding: 3px 14px;
  font-size: 14px;
  color: #fff;
  background: #4e5058;
}
.button.style1 { background: #5865f2; }
.button.style3 { background: #248046; }
.button.style4 { background: #da373c; }
.button.disabled { opacity: .5; }
.reactions { margin-top: 6px; display: flex; gap: 6px; flex-wrap: wrap; }
.reaction {
  display: inline-block;
  background: #2b2d31;
  border: 1px solid #3f4147;
  border-radius: 8px;
  padding: 1px 8px;
  font-size: 14px;
}
.reaction .who { color: #b5bac1; font-size: 12px; }
.ephemeral { background: rgba(88,101,242,.07); border-left: 2px solid #5865f2; }
.ephemeral-note { color: #949ba4; font-size: 12px; margin-top: 4px; }
.action {
  display: flex;
  align-items: center;
  color: #b5bac1;
  padding: 6px 8px 2px;
  margin-top: 10px;
  font-size: 14px;
}
.action.small { margin-top: 2px; padding-left: 60px; font-size: 13px; }
.action b { color: #f2f3f5; }
.cmd { color: #c9cdfb; }
.edit { margin: 4px 0 4px 60px; padding: 6px 10px; border-left: 2px dashed #4e5058; }
.edit-head { color: #b5bac1; font-size: 13px; }
.version { margin-top: 4px; }
.vhead { color: #949ba4; font-size: 12px; }
details { margin-top: 4px; }
summary { cursor: pointer; color: #949ba4; font-size: 13px; }
details .version { border-top: 1px solid #3f4147; padding-top: 4px; }
"""


def render_html(
    entries: Sequence[dict[str, Any]], *, title: str, mentions: dict[str, str] | None = None
) -> str:
    """The whole page: one block per entry, consecutive edits of one message folded together."""
    mentions = mentions or {}
    first: dict[str, dict[str, Any]] = {}
    latest_by_time: dict[str, dict[str, Any]] = {}
    latest_at: dict[int, dict[str, Any] | None] = {}
    for position, entry in enumerate(entries):
        if entry["kind"] in ("message", "edit"):
            first.setdefault(entry["message_id"], entry)
            latest_by_time[entry["message_id"]] = entry
        elif entry["kind"] == "reaction":
            latest_at[position] = latest_by_time.get(entry["message_id"])
    blocks: list[str] = []
    index = 0
    while index < len(entries):
        entry = entries[index]
        kind = entry["kind"]
        following = entries[index + 1] if index + 1 < len(entries) else None
        if (
            kind == "command"
            and following is not None
            and following["kind"] == "message"
            and (following.get("interaction") or {}).get("id") == entry["interaction"]["id"]
        ):
            pass  # the reply right below names the command already
        elif kind == "edit":
            run = [entry]
            while (
                index + 1 < len(entries)
                and entries[index + 1]["kind"] == "edit"
                and entries[index + 1]["message_id"] == entry["message_id"]
            ):
                index += 1
                run.append(entries[index])
            blocks.append(_edits_html(run, mentions, first.get(entry["message_id"])))
        elif kind == "message":
            edits: list[dict[str, Any]] = []
            if entry.get("loading"):
                # A deferred reply and the edits that filled it in right after: one message.
                while (
                    index + 1 < len(entries)
                    and entries[index + 1]["kind"] == "edit"
                    and entries[index + 1]["message_id"] == entry["message_id"]
                ):
                    index += 1
                    edits.append(entries[index])
            blocks.append(_message_html(entry, mentions, edits))
        elif kind == "command":
            blocks.append(_command_html(entry))
        elif kind == "reaction":
            blocks.append(_reaction_html(entry, latest_at.get(index)))
        index += 1
    counts = {
        k: sum(1 for e in entries if e["kind"] == k) for k in ("message", "edit", "command", "reaction")
    }
    people = sorted({e["author"] for e in entries if not e.get("author_is_bot")})
    started = entries[0]["at"][:19].replace("T", " ") if entries else ""
    summary = (
        f"{counts['message']} messages, {counts['edit']} edits, {counts['command']} commands and clicks, "
        f"{counts['reaction']} reactions · people: {', '.join(people) or 'none'} · started {started} UTC"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} transcript</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)} · transcript</h1><p>{_e(summary)}</p>"
        "<p>Everything below happened in the local Discord simulator: the real bot, simulated people. "
        "Private (ephemeral) replies are marked; edits are shown as versions of the message.</p></header>"
        f"<main>{''.join(blocks)}</main></body></html>\n"
    )


__all__ = ["Written", "build_entries", "markdown", "render_html", "slash_line", "write_transcript"]
