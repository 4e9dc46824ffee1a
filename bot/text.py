"""User text shown back safely: the one place that decides how typed text appears in the bot's messages.

Whatever a person typed (a caption, a dataset or file name, a reason, a prompt, a URL) is data. When
the bot echoes it, it must never become the bot's own formatting: no bold or headings, no masked or
clickable links, no mentions, no spoilers, no text that runs right-to-left over the bot's words, and
never longer than the room it was given. Pings are also blocked by ``allowed_mentions`` on every send;
this module makes the *text* inert as well.

- :func:`plain` for prose (captions, reasons): control characters removed, bidirectional controls and
  invisible format characters shown as ``[U+202E]``, Markdown and link syntax backslash-escaped, cut to
  a length with ``…``.
- :func:`quote_inline` for names and short values (dataset, file, trigger, key names): the same
  cleaning, inside an inline code span, where Discord renders nothing (backticks in the text are
  replaced by a look-alike so the span cannot be closed early).
- :func:`visible` only the character cleaning, for text that goes to a file or a log line.

It also holds the few wording helpers every message shares (:func:`truncate`, :func:`plural`, :func:`mib`),
so that a count or a size reads the same wherever the bot says it.

No discord import: the domain formats its own messages with these.
"""

from __future__ import annotations

import re
import unicodedata

# Bidirectional embeddings, overrides, isolates and marks: they reorder the text around them.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters Discord's Markdown gives meaning to anywhere in a line: emphasis, code, spoilers, masked
# links ([text](url)), and '<' so that <@id>, <#id>, <t:...> and <https://...> are not parsed (mentions
# also get a zero-width space, see no_mentions, which holds inside code too). "://" is escaped so a
# URL is not autolinked; line-start markers (headings, quotes, lists, subtext) where a line starts.
_MARKDOWN = re.compile(r"([\\*_~`|\[\]<])|(:)(?=//)")
_LINE_START = re.compile(r"(?m)^(\s*\d*)([#>+.)-])")
_CODE_SAFE_BACKTICK = "ˋ"  # U+02CB: looks like a backtick, cannot close a code span
ELLIPSIS = "…"


def _shown_char(ch: str, *, keep_newlines: bool) -> str:
    if ch in "\n\r":
        return "\n" if keep_newlines and ch == "\n" else " "
    if ch == "\t":
        return " "
    if ch in BIDI_CONTROLS:
        return f"[U+{ord(ch):04X}]"
    category = unicodedata.category(ch)
    if category == "Cc":  # other C0/C1 controls (NUL, ESC ...): nothing to show
        return ""
    if category == "Cf" and ch != "\u200d":  # zero-width and other invisible format characters
        # ZWJ stays: emoji sequences (family, flags with tags are rare) are built with it.
        return f"[U+{ord(ch):04X}]"
    if category in ("Cs", "Co", "Cn"):  # lone surrogates, private use, unassigned
        return "\ufffd"
    return ch


def visible(text: str, limit: int | None = None, *, keep_newlines: bool = False) -> str:
    """``text`` with controls removed and bidi/invisible characters shown; at most ``limit`` characters."""
    cleaned = "".join(_shown_char(ch, keep_newlines=keep_newlines) for ch in str(text))
    return truncate(cleaned, limit)


def truncate(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, with a regular English plural when ``n`` is not 1: "1 image", "3 images"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def mib(size: int) -> str:
    """A size in bytes as mebibytes, one decimal: "12.5 MiB" (how every size limit is told)."""
    return f"{size / (1024 * 1024):.1f} MiB"


def escape_markdown(text: str) -> str:
    """Every Markdown, mention and link character backslash-escaped (Discord shows them literally)."""
    escaped = _MARKDOWN.sub(lambda m: "\\" + (m.group(1) or m.group(2)), text)
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def plain(text: str, limit: int = 200, *, keep_newlines: bool = False) -> str:
    """Prose a person typed, safe to put in a message: cleaned, bounded, then escaped.

    The limit counts the visible characters (before escaping), so the escaped text can be up to
    twice as long: callers size their messages with that in mind.
    """
    return escape_markdown(no_mentions(visible(text, limit, keep_newlines=keep_newlines)))


def quote_inline(text: str, limit: int = 60) -> str:
    """A name or short value a person typed, as an inline code span: ```like this```."""
    shown = no_mentions(visible(text, limit)).replace("`", _CODE_SAFE_BACKTICK)
    if not shown.strip():
        return "(empty)"
    return f"`{shown}`"


ZWSP = "\u200b"
_EVERYONE_HERE = re.compile(r"@(everyone|here)", re.IGNORECASE)
_ANGLE_MENTION = re.compile(r"<(?=@)")


def no_mentions(text: str) -> str:
    """Text that cannot mention anyone even where backslashes do not escape (code blocks): a zero-width
    space breaks ``@everyone``, ``@here`` and ``<@id>``/``<@!id>``/``<@&id>`` (they still read the same)."""
    text = _EVERYONE_HERE.sub(lambda m: "@" + ZWSP + m.group(1), text)
    return _ANGLE_MENTION.sub("<" + ZWSP, text)


def is_clean(text: str) -> bool:
    """Whether ``text`` has no control, bidi or invisible format characters (for refusing names)."""
    return visible(text, keep_newlines=False) == text
