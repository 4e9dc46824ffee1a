"""Reaction emoji as Discord accepts them: a Unicode emoji (one grapheme made of emoji code points), or a
custom emoji ``name:id`` that exists; anything else is 400 10014 Unknown Emoji."""

from __future__ import annotations

import unicodedata
from typing import Any

from .util import ApiError

MAX_DISTINCT_REACTIONS = 20

_ZWJ = "\u200d"
_VARIATION = ("\ufe0e", "\ufe0f")
_KEYCAP = "\u20e3"
_KEYCAP_BASES = set("0123456789#*")


def unknown_emoji() -> ApiError:
    """400 10014."""
    return ApiError(400, 10014, "Unknown Emoji")


def too_many_reactions() -> ApiError:
    """400 30010: the message already carries 20 distinct emoji."""
    return ApiError(400, 30010, "Maximum number of reactions reached (20)")


def is_unicode_emoji(text: str) -> bool:
    """Whether ``text`` is a single emoji: pictographs (So), joined by ZWJ, with variation selectors,
    skin-tone modifiers, regional-indicator pairs, keycaps and tag sequences."""
    if not text or text.isascii():
        return False
    if text[0] in _KEYCAP_BASES:
        return text.endswith(_KEYCAP) and all(c in _VARIATION for c in text[1:-1])
    expect_symbol = True
    for char in text:
        cat = unicodedata.category(char)
        if expect_symbol:
            if cat != "So":
                return False
            expect_symbol = False
        elif char == _ZWJ:
            expect_symbol = True
        elif not _is_modifier(char, cat):
            return False
    return not expect_symbol


def _is_modifier(char: str, cat: str) -> bool:
    """What may follow a pictograph: variation selectors, skin tones, keycap, tags, and the second
    regional indicator of a flag."""
    code = ord(char)
    if char in _VARIATION or char == _KEYCAP or cat == "Sk" or 0xE0020 <= code <= 0xE007F:
        return True
    return cat == "So" and 0x1F1E6 <= code <= 0x1F1FF


def parse_emoji(raw: str, custom_ids: set[int] | None = None) -> tuple[str, dict[str, Any]]:
    """A reaction path segment (``✅`` or ``name:id``) → (key, emoji object); 400 10014 if it is not
    an emoji, or names a custom emoji not in ``custom_ids`` (when given)."""
    if ":" in raw:
        name, _, eid = raw.rpartition(":")
        animated = name.startswith("a:")
        name = name[2:] if animated else name
        if not eid.isdigit() or not name:
            raise unknown_emoji()
        if custom_ids is not None and int(eid) not in custom_ids:
            raise unknown_emoji()
        return f"{name}:{eid}", {"id": eid, "name": name, "animated": animated}
    if not is_unicode_emoji(raw):
        raise unknown_emoji()
    return raw, {"id": None, "name": raw}
