"""What Discord makes of the embeds, components and references a bot sends: the complete objects it
returns (defaults filled in, nulls dropped), as its OpenAPI response schemas require them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any


def without_nulls(value: Any) -> Any:
    """A deep copy without null-valued keys (Discord leaves unset fields out of what it returns)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return copy.copy(value)


def embed_out(embed: dict[str, Any]) -> dict[str, Any]:
    """An embed as Discord returns it: ``type`` "rich", every field with ``inline``, media with a
    ``proxy_url``, the timestamp in Discord's format."""
    out = without_nulls(embed)
    out.setdefault("type", "rich")
    if "fields" in out:
        out["fields"] = [{"inline": False, **f} for f in out["fields"]]
    for key in ("image", "thumbnail", "video"):
        media = out.get(key)
        if isinstance(media, dict) and "url" in media:
            media.setdefault("proxy_url", media["url"])
    for key, url_key in (("author", "icon_url"), ("footer", "icon_url")):
        part = out.get(key)
        if isinstance(part, dict) and url_key in part:
            part.setdefault("proxy_icon_url", part[url_key])
    if isinstance(out.get("timestamp"), str):
        out["timestamp"] = _discord_timestamp(out["timestamp"])
    return out


def _discord_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()


def component_out(component: dict[str, Any]) -> dict[str, Any]:
    """A message component as Discord returns it (select menus get min/max_values, nulls dropped)."""
    out = without_nulls(component)
    ctype = out.get("type")
    if ctype in (3, 5, 6, 7, 8):
        out.setdefault("min_values", 1)
        out.setdefault("max_values", 1)
    if ctype == 3:
        out["options"] = [{"default": False, **o} for o in out.get("options", [])]
    if isinstance(out.get("components"), list):
        out["components"] = [component_out(c) for c in out["components"]]
    if isinstance(out.get("accessory"), dict):
        out["accessory"] = component_out(out["accessory"])
    return out


def reference_out(reference: dict[str, Any], channel_id: int, guild_id: int | None) -> dict[str, Any]:
    """A reply's message_reference as Discord returns it (type, channel and guild filled in)."""
    out = without_nulls(reference)
    out.pop("fail_if_not_exists", None)
    out.setdefault("type", 0)
    out.setdefault("channel_id", str(channel_id))
    if guild_id is not None:
        out.setdefault("guild_id", str(guild_id))
    return out
