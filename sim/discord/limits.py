"""Discord's message limits, enforced with the real error codes and shapes.

Sources: discord-api-docs (message resource, embed limits, file uploads); see
/work/shared/reference/discord.md §11.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

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
MAX_SELECT_OPTIONS = 25
SELECT_OPTION_TEXT = 100
SELECT_TYPES = (3, 5, 6, 7, 8)
BUTTON_LABEL = 80
BUTTON_STYLE_LINK = 5
BUTTON_STYLE_PREMIUM = 6
MODAL_TITLE = 45
MODAL_LABEL = 45
MAX_MODAL_COMPONENTS = 5
MAX_CHOICES = 25
CHOICE_TEXT = 100
MAX_NONCE = 25
MAX_REQUEST_BYTES = 25 * 1024 * 1024  # the whole request, files included
FLAG_IS_COMPONENTS_V2 = 1 << 15
MAX_OPTION_STRING = 6000
MAX_COMMAND_SIZE = 8000

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


def check_request_size(size: int) -> None:
    """The whole request (JSON and every file) at most 25 MiB (413 40005)."""
    if size > MAX_REQUEST_BYTES:
        raise entity_too_large()


def check_message(payload: dict[str, Any]) -> None:
    """Content, embed, component and nonce rules of a create/edit payload (400 50035)."""
    content = payload.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        raise _too_long(["content"], MAX_CONTENT)
    flags = payload.get("flags")
    if isinstance(flags, int) and flags & FLAG_IS_COMPONENTS_V2:
        for legacy in ("content", "embeds", "poll", "sticker_ids"):
            if payload.get(legacy):
                raise form_error(
                    [legacy],
                    "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                    f"The '{legacy}' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
                )
    embeds = payload.get("embeds")
    if embeds is not None:
        check_embeds(embeds)
    components = payload.get("components")
    if components:
        check_components(components, v2=isinstance(flags, int) and bool(flags & FLAG_IS_COMPONENTS_V2))
    nonce = payload.get("nonce")
    if isinstance(nonce, str) and len(nonce) > MAX_NONCE:
        raise _too_long(["nonce"], MAX_NONCE)


def has_content(payload: dict[str, Any]) -> bool:
    """Whether ``content`` holds anything: Discord trims it, so whitespace alone is empty."""
    return bool(str(payload.get("content") or "").strip())


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
        color = embed.get("color")
        if color is not None and (
            isinstance(color, bool) or not isinstance(color, int) or not 0 <= color <= 0xFFFFFF
        ):
            raise form_error(
                [*base, "color"], "NUMBER_TYPE_MAX", f"int value should be less than or equal to {0xFFFFFF}."
            )
        for url_path in (
            ("url",),
            ("image", "url"),
            ("thumbnail", "url"),
            ("author", "url"),
            ("author", "icon_url"),
            ("footer", "icon_url"),
        ):
            value: Any = embed
            for key in url_path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None and not is_url(str(value), attachments=url_path[0] != "url"):
                raise form_error([*base, *url_path], "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        timestamp = embed.get("timestamp")
        if timestamp is not None and not is_iso8601(str(timestamp)):
            raise form_error(
                [*base, "timestamp"], "DATE_TYPE_PARSE", "Could not interpret value as a date/time."
            )
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


def check_components(components: list[dict[str, Any]], *, v2: bool = False) -> None:
    """Message components as Discord lays them out (docs: components reference).

    Without the IS_COMPONENTS_V2 flag: only action rows at the top, at most 5 of them, each holding 1 to
    5 buttons or a single select menu. Buttons: a link button has a ``url`` and no ``custom_id``, any
    other has a ``custom_id``. Select menus: 1 to 25 options, ``0 <= min_values <= max_values <=
    len(options)`` for string selects. Every ``custom_id`` 1 to 100 characters and unique per message.
    """
    if not v2:
        for i, comp in enumerate(components):
            if comp.get("type") != 1:
                raise form_error(
                    ["components", i],
                    "UNION_TYPE_CHOICES",
                    'Value of field "type" must be one of (1,).',
                )
        if len(components) > MAX_COMPONENT_ROWS:
            raise _too_long(["components"], MAX_COMPONENT_ROWS)
    seen: set[str] = set()
    _check_children(["components"], components, seen)


def _claim_custom_id(where: list[str | int], custom_id: str, seen: set[str]) -> None:
    """A component's custom_id (messages and modals alike): 1 to 100 characters, unique in the payload."""
    if not 1 <= len(custom_id) <= 100:
        raise form_error(
            [*where, "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    if custom_id in seen:
        raise form_error(
            [*where, "custom_id"],
            "COMPONENT_CUSTOM_ID_DUPLICATED",
            "Component custom id cannot be duplicated",
        )
    seen.add(custom_id)


def _check_children(path: list[str | int], items: list[dict[str, Any]], seen: set[str]) -> None:
    for i, comp in enumerate(items):
        here = [*path, i]
        ctype = comp.get("type")
        if ctype == 1:
            children = comp.get("components") or []
            if not 1 <= len(children) <= MAX_ROW_COMPONENTS:
                raise form_error(
                    [*here, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            for j, child in enumerate(children):
                if child.get("type") in SELECT_TYPES and len(children) > 1:
                    raise form_error(
                        [*here, "components", j],
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                        "The specified component exceeds the maximum width",
                    )
            _check_children([*here, "components"], children, seen)
            continue
        if ctype == 2:
            _check_button(here, comp)
        elif ctype in SELECT_TYPES:
            _check_select(here, comp)
        for key in ("components",):
            if isinstance(comp.get(key), list):
                _check_children([*here, key], comp[key], seen)
        if isinstance(comp.get("accessory"), dict):
            _check_children([*here, "accessory"], [comp["accessory"]], seen)
        custom_id = comp.get("custom_id")
        if custom_id is not None:
            _claim_custom_id(here, str(custom_id), seen)


def _check_button(path: list[str | int], button: dict[str, Any]) -> None:
    label = button.get("label")
    if label is not None and len(str(label)) > BUTTON_LABEL:
        raise _too_long([*path, "label"], BUTTON_LABEL)
    style = button.get("style")
    if style == BUTTON_STYLE_LINK:
        if not button.get("url"):
            raise form_error([*path, "url"], "BUTTON_COMPONENT_URL_REQUIRED", "A url is required")
        if button.get("custom_id") is not None:
            raise form_error(
                [*path, "custom_id"],
                "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID",
                "A custom id cannot be specified for link buttons",
            )
        if not is_url(str(button["url"]), attachments=False):
            raise form_error([*path, "url"], "URL_TYPE_INVALID_URL", "Not a well formed URL.")
    elif style != BUTTON_STYLE_PREMIUM:
        if not button.get("custom_id"):
            raise form_error(
                [*path, "custom_id"], "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED", "A custom id is required"
            )
        if button.get("url") is not None:
            raise form_error(
                [*path, "url"],
                "BUTTON_COMPONENT_NOT_LINK_HAS_URL",
                "A url cannot be specified for non-link buttons",
            )


def _check_select(path: list[str | int], select: dict[str, Any]) -> None:
    if not select.get("custom_id"):
        raise form_error([*path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
    lo = select.get("min_values")
    hi = select.get("max_values")
    lo = 1 if lo is None else lo
    hi = 1 if hi is None else hi
    if not 0 <= lo <= MAX_SELECT_OPTIONS:
        raise form_error(
            [*path, "min_values"], "NUMBER_TYPE_MAX", "int value should be less than or equal to 25."
        )
    if not 1 <= hi <= MAX_SELECT_OPTIONS:
        raise form_error(
            [*path, "max_values"], "NUMBER_TYPE_MAX", "int value should be less than or equal to 25."
        )
    if lo > hi:
        raise form_error(
            [*path, "min_values"],
            "SELECT_COMPONENT_MIN_VALUES_TOO_HIGH",
            "min_values must be less than or equal to max_values",
        )
    if select.get("type") != 3:
        return
    options = select.get("options") or []
    if not 1 <= len(options) <= MAX_SELECT_OPTIONS:
        raise form_error([*path, "options"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
    if hi > len(options):
        raise form_error(
            [*path, "max_values"],
            "SELECT_COMPONENT_MAX_VALUES_TOO_HIGH",
            "max_values must be less than or equal to the number of options",
        )
    values: set[str] = set()
    for k, option in enumerate(options):
        for key in ("label", "value"):
            text = str(option.get(key) or "")
            if not 1 <= len(text) <= SELECT_OPTION_TEXT:
                raise form_error(
                    [*path, "options", k, key], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
        description = option.get("description")
        if description is not None and len(str(description)) > SELECT_OPTION_TEXT:
            raise _too_long([*path, "options", k, "description"], SELECT_OPTION_TEXT)
        if option["value"] in values:
            raise form_error(
                [*path, "options", k, "value"],
                "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED",
                "Select component option value was already specified",
            )
        values.add(option["value"])


def check_modal(data: dict[str, Any]) -> None:
    """A modal (callback type 9): custom_id 1-100, title 1-45, 1 to 5 rows/labels, labels <= 45."""
    custom_id = str(data.get("custom_id") or "")
    if not 1 <= len(custom_id) <= 100:
        raise form_error(
            ["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    title = str(data.get("title") or "")
    if not 1 <= len(title) <= MODAL_TITLE:
        raise form_error(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    components = data.get("components") or []
    if not 1 <= len(components) <= MAX_MODAL_COMPONENTS:
        raise form_error(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    seen: set[str] = set()
    for i, row in enumerate(components):
        inner = row.get("components") or (
            [row["component"]] if isinstance(row.get("component"), dict) else []
        )
        if row.get("type") == 18:
            label = str(row.get("label") or "")
            if not 1 <= len(label) <= MODAL_LABEL:
                raise form_error(
                    ["data", "components", i, "label"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 45 in length.",
                )
        for j, comp in enumerate(inner):
            where: list[str | int] = [
                "data",
                "components",
                i,
                "component" if row.get("type") == 18 else "components",
            ]
            if row.get("type") != 18:
                where.append(j)
            label = comp.get("label")
            if label is not None and not 1 <= len(str(label)) <= MODAL_LABEL:
                raise form_error(
                    [*where, "label"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length."
                )
            _claim_custom_id(where, str(comp.get("custom_id") or ""), seen)


def check_autocomplete(data: dict[str, Any]) -> None:
    """Autocomplete results (callback type 8): at most 25 choices, names 1-100, string values <= 100."""
    choices = data.get("choices") or []
    if len(choices) > MAX_CHOICES:
        raise _too_long(["data", "choices"], MAX_CHOICES)
    for i, choice in enumerate(choices):
        name = str(choice.get("name") or "")
        if not 1 <= len(name) <= CHOICE_TEXT:
            raise form_error(
                ["data", "choices", i, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        value = choice.get("value")
        if isinstance(value, str) and len(value) > CHOICE_TEXT:
            raise _too_long(["data", "choices", i, "value"], CHOICE_TEXT)


def is_url(value: str, *, attachments: bool) -> bool:
    """An absolute http(s) URL (or ``attachment://name`` where Discord accepts uploads)."""
    parts = urlsplit(value)
    if attachments and parts.scheme == "attachment":
        return bool(parts.netloc or parts.path)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and " " not in value


def is_iso8601(value: str) -> bool:
    """An ISO 8601 date-time, as embed timestamps must be."""
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def check_not_empty(payload: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
    """A new message needs content, an embed, a file, a sticker, components or a poll (50006)."""
    if (
        has_content(payload)
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
            if command_size(cmd) > MAX_COMMAND_SIZE:
                raise form_error(
                    [i],
                    "APPLICATION_COMMAND_TOO_LARGE",
                    f"Command exceeds maximum size ({MAX_COMMAND_SIZE})",
                )
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
    names: set[str] = set()
    for i, opt in enumerate(options):
        _check_name([*path, i, "name"], str(opt.get("name", "")))
        if opt.get("name") in names:
            raise form_error(
                [*path, i, "name"],
                "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            )
        names.add(str(opt.get("name")))
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
        choices = opt.get("choices") or []
        if len(choices) > 25:
            raise _too_long([*path, i, "choices"], 25)
        for k, choice in enumerate(choices):
            if not 1 <= len(str(choice.get("name") or "")) <= CHOICE_TEXT:
                raise form_error(
                    [*path, i, "choices", k, "name"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            value = choice.get("value")
            if isinstance(value, str) and len(value) > CHOICE_TEXT:
                raise _too_long([*path, i, "choices", k, "value"], CHOICE_TEXT)
        for key in ("min_length", "max_length"):
            bound = opt.get(key)
            if bound is not None and not 0 <= int(bound) <= MAX_OPTION_STRING:
                raise form_error(
                    [*path, i, key],
                    "NUMBER_TYPE_MAX",
                    f"int value should be less than or equal to {MAX_OPTION_STRING}.",
                )


def command_size(cmd: dict[str, Any]) -> int:
    """Characters Discord counts towards a command's 8000 limit: names, descriptions, choice names and
    values, over the command and every option (the longest localization of each)."""

    def longest(obj: dict[str, Any], key: str) -> int:
        base = len(str(obj.get(key) or ""))
        localized = obj.get(f"{key}_localizations") or {}
        return max([base, *(len(str(v)) for v in localized.values())])

    def options_size(options: list[dict[str, Any]]) -> int:
        total = 0
        for opt in options:
            total += longest(opt, "name") + longest(opt, "description")
            for choice in opt.get("choices") or []:
                total += longest(choice, "name") + len(str(choice.get("value", "")))
            total += options_size(opt.get("options") or [])
        return total

    return longest(cmd, "name") + longest(cmd, "description") + options_size(cmd.get("options") or [])
