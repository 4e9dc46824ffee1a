"""Discord's message limits, enforced with the real error codes and shapes.

Sources: discord-api-docs (message resource, embed limits, file uploads); see
/work/shared/reference/discord.md §11.
"""

from __future__ import annotations

import re
from typing import Any

from .util import ApiError, entity_too_large, form_error

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_FILES = 10
MAX_EMBED_TOTAL = 6000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
MAX_COMPONENT_ROWS = 5
MAX_ROW_COMPONENTS = 5

_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def _too_long(path: list[str | int], limit: int) -> ApiError:
    return form_error(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def check_files(files: list[tuple[str, bytes]], size_limit: int) -> None:
    """At most 10 files (400 50035), none larger than ``size_limit`` (413 40005)."""
    if len(files) > MAX_FILES:
        raise _too_long(["attachments"], MAX_FILES)
    for _name, data in files:
        if len(data) > size_limit:
            raise entity_too_large()


def check_message(payload: dict[str, Any]) -> None:
    """Content, embed and component limits of a create/edit payload (400 50035)."""
    content = payload.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        raise _too_long(["content"], MAX_CONTENT)
    embeds = payload.get("embeds")
    if embeds is not None:
        check_embeds(embeds)
    components = payload.get("components")
    if components:
        check_components(components)


def check_embeds(embeds: list[dict[str, Any]]) -> None:
    """Discord's embed limits, per field and 6000 characters in total across all embeds."""
    if len(embeds) > MAX_EMBEDS:
        raise _too_long(["embeds"], MAX_EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        base: list[str | int] = ["embeds", i]
        title = embed.get("title") or ""
        if len(title) > EMBED_TITLE:
            raise _too_long([*base, "title"], EMBED_TITLE)
        description = embed.get("description") or ""
        if len(description) > EMBED_DESCRIPTION:
            raise _too_long([*base, "description"], EMBED_DESCRIPTION)
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS:
            raise _too_long([*base, "fields"], EMBED_FIELDS)
        total += len(title) + len(description)
        for j, fld in enumerate(fields):
            name = str(fld.get("name") or "")
            value = str(fld.get("value") or "")
            if not name:
                raise form_error([*base, "fields", j, "name"], "BASE_TYPE_REQUIRED", "This field is required")
            if not value:
                raise form_error(
                    [*base, "fields", j, "value"], "BASE_TYPE_REQUIRED", "This field is required"
                )
            if len(name) > EMBED_FIELD_NAME:
                raise _too_long([*base, "fields", j, "name"], EMBED_FIELD_NAME)
            if len(value) > EMBED_FIELD_VALUE:
                raise _too_long([*base, "fields", j, "value"], EMBED_FIELD_VALUE)
            total += len(name) + len(value)
        footer = (embed.get("footer") or {}).get("text") or ""
        if len(footer) > EMBED_FOOTER:
            raise _too_long([*base, "footer", "text"], EMBED_FOOTER)
        author = (embed.get("author") or {}).get("name") or ""
        if len(author) > EMBED_AUTHOR:
            raise _too_long([*base, "author", "name"], EMBED_AUTHOR)
        total += len(footer) + len(author)
    if total > MAX_EMBED_TOTAL:
        raise form_error(
            ["embeds"], "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"
        )


def check_components(components: list[dict[str, Any]]) -> None:
    """Classic action rows: at most 5 rows of 5 items, custom ids at most 100 characters."""
    top_level_rows = [c for c in components if c.get("type") == 1]
    if len(top_level_rows) > MAX_COMPONENT_ROWS:
        raise _too_long(["components"], MAX_COMPONENT_ROWS)
    for i, row in enumerate(top_level_rows):
        children = row.get("components") or []
        if len(children) > MAX_ROW_COMPONENTS:
            raise _too_long(["components", i, "components"], MAX_ROW_COMPONENTS)
        for j, child in enumerate(children):
            custom_id = child.get("custom_id")
            if custom_id is not None and len(custom_id) > 100:
                raise _too_long(["components", i, "components", j, "custom_id"], 100)


def check_not_empty(payload: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
    """A new message needs content, an embed, a file, a sticker, components or a poll (50006)."""
    if (
        payload.get("content")
        or payload.get("embeds")
        or files
        or payload.get("sticker_ids")
        or payload.get("components")
        or payload.get("poll")
    ):
        return
    raise ApiError(400, 50006, "Cannot send an empty message")


def check_commands(commands: Any) -> None:
    """Validate a bulk-overwrite body like Discord does (names, descriptions, option counts)."""
    if not isinstance(commands, list):
        raise form_error([], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
    if len(commands) > 100:
        raise _too_long([], 100)
    seen: set[tuple[str, int]] = set()
    for i, cmd in enumerate(commands):
        ctype = int(cmd.get("type", 1))
        name = str(cmd.get("name", ""))
        if ctype == 1:
            _check_name([i, "name"], name)
            desc = str(cmd.get("description", ""))
            if not 1 <= len(desc) <= 100:
                raise form_error(
                    [i, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            _check_options([i, "options"], cmd.get("options") or [], depth=0)
        elif not 1 <= len(name) <= 32:
            raise form_error([i, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        key = (name, ctype)
        if key in seen:
            raise form_error(
                [i, "name"],
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique ({name})",
            )
        seen.add(key)


def _check_name(path: list[str | int], name: str) -> None:
    if not _COMMAND_NAME.match(name) or name != name.lower():
        raise form_error(path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid ({name})")


def _check_options(path: list[str | int], options: list[dict[str, Any]], depth: int) -> None:
    if len(options) > 25:
        raise _too_long(path, 25)
    seen_optional = False
    for i, opt in enumerate(options):
        _check_name([*path, i, "name"], str(opt.get("name", "")))
        desc = str(opt.get("description", ""))
        if not 1 <= len(desc) <= 100:
            raise form_error(
                [*path, i, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        otype = int(opt.get("type", 0))
        if otype in (1, 2):
            if (otype == 2 and depth > 0) or (otype == 1 and depth > 1):
                raise form_error(
                    [*path, i, "type"], "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID", "Invalid nesting"
                )
            _check_options([*path, i, "options"], opt.get("options") or [], depth + 1)
            continue
        if opt.get("required"):
            if seen_optional:
                raise form_error(
                    [*path, i, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        if len(opt.get("choices") or []) > 25:
            raise _too_long([*path, i, "choices"], 25)
