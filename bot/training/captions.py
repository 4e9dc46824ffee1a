"""Captions for identity LoRAs: ``{trigger} {class}, {tags}``, with the trigger always first.

sd-scripts reads ``<image stem>.txt`` (first line, stripped) when ``caption_extension = ".txt"``; with
``shuffle_caption`` it shuffles the comma-separated tokens after the first ``keep_tokens`` of them. So a
caption that does not *start* with the trigger, or a ``keep_tokens`` of 0, lets the trigger move or
vanish, and the identity is spread over random tags instead (reference/sd_scripts.md §4.4).

Pure functions only: the dataset service stores captions, this module makes and checks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from bot.text import quote_inline

DEFAULT_TEMPLATE = "{trigger} {class}, {tags}"
TEMPLATE_FIELDS = ("trigger", "class", "tags")
SEPARATOR = ","
MAX_TAGS = 30  # CLIP reads 75 tokens (sd-scripts max_token_length default); more tags are cut off anyway
# Cloudinary context keys whose text describes the picture ("alt" and "caption" by convention).
CONTEXT_TEXT_KEYS = ("caption", "alt", "description", "prompt")


class CaptionError(ValueError):
    pass


def _clean_tag(tag: str) -> str:
    text = re.sub(r"[_\s]+", " ", tag.replace("\n", " ")).strip(" ,.;").lower()
    return text.replace(",", " ")


def tags_from_source(
    tags: Iterable[Any] = (), context: Mapping[str, Any] | None = None, *, drop: Iterable[str] = ()
) -> list[str]:
    """Caption tags from Cloudinary ``tags`` and ``context`` (``{"custom": {...}}`` or flat).

    Folder-ish tags and any word in ``drop`` (the trigger, the class word, the persona's real name, the
    dataset name) are removed: a name in the tags competes with the trigger for the identity.
    """
    dropped = {d.lower() for d in drop if d}
    out: list[str] = []
    texts: list[str] = [str(t) for t in tags]
    if context:
        custom = context.get("custom", context)
        if isinstance(custom, Mapping):
            custom_map = cast(Mapping[str, Any], custom)
            for key in CONTEXT_TEXT_KEYS:
                value = custom_map.get(key)
                if isinstance(value, str):
                    texts.extend(value.split(","))
    for text in texts:
        tag = _clean_tag(text)
        if not tag or "/" in tag or tag in dropped or any(word in dropped for word in tag.split()):
            continue
        if tag not in out:
            out.append(tag)
    return out[:MAX_TAGS]


def render_caption(
    trigger: str,
    class_word: str,
    tags: Sequence[str] = (),
    *,
    template: str = DEFAULT_TEMPLATE,
    prefix: str = "",
    suffix: str = "",
) -> str:
    """Fill ``template`` and tidy it: one line, single spaces, no empty comma slots.

    ``prefix`` goes after the trigger and class (never before the trigger); ``suffix`` goes last.
    """
    unknown = set(re.findall(r"{(\w+)}", template)) - set(TEMPLATE_FIELDS)
    if unknown:
        raise CaptionError(
            f"unknown caption template field(s): {', '.join(sorted(unknown))}; "
            f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
        )
    if "{trigger}" not in template:
        raise CaptionError("the caption template must contain {trigger}")
    text = (
        template.replace("{trigger}", trigger)
        .replace("{class}", class_word)
        .replace("{tags}", ", ".join(_clean_tag(t) for t in tags if _clean_tag(t)))
    )
    caption = tidy(text)
    if prefix:
        caption = add_prefix(caption, trigger, prefix)
    if suffix:
        caption = add_suffix(caption, suffix)
    return caption


def tidy(text: str) -> str:
    """One line, collapsed spaces, no empty or duplicate-separator slots."""
    parts = [
        re.sub(r"\s+", " ", p).strip() for p in text.replace("\r", " ").replace("\n", " ").split(SEPARATOR)
    ]
    return ", ".join(p for p in parts if p)


def split_tokens(caption: str) -> list[str]:
    """The comma-separated tokens sd-scripts shuffles (and keeps the first ``keep_tokens`` of)."""
    return [p.strip() for p in caption.split(SEPARATOR) if p.strip()]


def add_prefix(caption: str, trigger: str, prefix: str) -> str:
    """Insert ``prefix`` right after the first token (which holds the trigger), never before the trigger."""
    tokens = split_tokens(caption)
    extra = split_tokens(tidy(prefix))
    if not tokens:
        return tidy(", ".join([trigger, *extra]))
    if starts_with_trigger(caption, trigger):
        return ", ".join([tokens[0], *extra, *tokens[1:]])
    return ", ".join([*extra, *tokens])


def add_suffix(caption: str, suffix: str) -> str:
    return tidy(f"{caption}, {suffix}")


def bulk_prefix_suffix(
    captions: Mapping[str, str], trigger: str, *, prefix: str = "", suffix: str = ""
) -> dict[str, str]:
    """Apply the same prefix and suffix to every caption (keys are whatever identifies the image)."""
    out: dict[str, str] = {}
    for key, caption in captions.items():
        new = add_prefix(caption, trigger, prefix) if prefix else caption
        out[key] = add_suffix(new, suffix) if suffix else new
    return out


def starts_with_trigger(caption: str, trigger: str) -> bool:
    """True when the caption's first word is the trigger (case-insensitive, whole word)."""
    first = caption.strip().split(SEPARATOR, 1)[0].split()
    return bool(first) and first[0].lower() == trigger.lower()


def ensure_trigger(caption: str, trigger: str, class_word: str) -> str:
    """``caption`` with ``{trigger} {class}`` put first when the trigger is not already leading it.

    Used on per-image edits: a user who types "smiling, beach" gets "ohwx woman, smiling, beach".
    """
    text = tidy(caption)
    if starts_with_trigger(text, trigger):
        return text
    tokens = [
        t for t in split_tokens(text) if t.lower() not in {trigger.lower(), f"{trigger} {class_word}".lower()}
    ]
    return tidy(", ".join([f"{trigger} {class_word}".strip(), *tokens]))


def check_captions(
    captions: Mapping[str, str], trigger: str, *, keep_tokens: int = 1, shuffle: bool = False
) -> list[str]:
    """Every problem that would let the trigger be missing or move, one line per image; [] when fine.

    Checks: non-empty single line (sd-scripts asserts on empty files and reads only the first line);
    the first word is the trigger; with ``shuffle``, ``keep_tokens`` >= 1 so the first token stays put.
    """
    problems: list[str] = []
    if shuffle and keep_tokens < 1:
        problems.append("shuffle_caption is on with keep_tokens = 0: the trigger would be shuffled away")
    for name, caption in sorted(captions.items()):
        if not caption.strip():
            problems.append(f"{name}: empty caption (sd-scripts stops with 'caption file is empty')")
            continue
        if "\n" in caption.strip() or "\r" in caption:
            problems.append(f"{name}: caption has several lines (sd-scripts reads only the first)")
        if not starts_with_trigger(caption, trigger):
            problems.append(
                f"{name}: caption does not start with the trigger {trigger!r}: {quote_inline(caption, 60)}"
            )
    return problems
