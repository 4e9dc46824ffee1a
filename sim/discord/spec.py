"""Discord's official OpenAPI description as the simulator's referee.

Every JSON body the simulator answers with is validated against the spec's response schema for its
route and status, and every JSON body (or multipart ``payload_json``) and query string it receives
against the request schema. A mismatch is a :class:`Violation` (route + JSON path): on the request
side the simulator also refuses the request with Discord's 400 50035, as Discord would; on either
side the violation is kept in :data:`VIOLATIONS` so the test suite fails the test that caused it
(see ``tests/conftest.py``).

The spec is ``../shared/vendor/discord-openapi.json.gz`` (discord/discord-api-spec, MIT). Where it
and the prose documentation or the real client's behaviour disagree, the documentation wins; every
such place is listed in :data:`EXCEPTIONS` with its reason, and nowhere else.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sim.testdata import SHARED_DIR

SPEC_PATH = SHARED_DIR / "vendor" / "discord-openapi.json.gz"
_BASE_URI = "urn:discord-openapi"


@dataclass(frozen=True)
class SpecException:
    """One place where the simulator follows the prose docs / real client instead of the spec."""

    pointer: str  # JSON pointer into the spec document
    replacement: Any  # the schema used there instead
    reason: str


_SNOWFLAKE_INT = {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}

# What Discord really sends and accepts where the OpenAPI description says otherwise.
EXCEPTIONS: tuple[SpecException, ...] = (
    SpecException(
        "/components/schemas/RatelimitedResponse",
        {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "retry_after": {"type": "number"},
                "global": {"type": "boolean"},
                "code": {"type": "integer"},
            },
            "required": ["message", "retry_after", "global"],
        },
        "429 bodies: the rate-limits page documents {message, retry_after, global} without `code` "
        "(the spec inherits a required `code` from Error); discord.py reads only retry_after/global.",
    ),
    SpecException(
        "/components/schemas/InnerErrors",
        {
            "type": "object",
            "properties": {
                "_errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["code", "message"],
                    },
                }
            },
            "additionalProperties": False,
            "required": ["_errors"],
        },
        "Form errors: the docs' error examples carry string codes per field ('BASE_TYPE_REQUIRED', "
        "'BASE_TYPE_MAX_LENGTH'...), the spec reuses the integer-coded Error object.",
    ),
    SpecException(
        "/components/schemas/InteractionCallbackResponse/properties/resource",
        {
            "oneOf": [
                {"$ref": "#/components/schemas/CreateMessageInteractionCallbackResponse"},
                {"$ref": "#/components/schemas/LaunchActivityInteractionCallbackResponse"},
                {"$ref": "#/components/schemas/UpdateMessageInteractionCallbackResponse"},
                {
                    "type": "object",
                    "properties": {"type": {"type": "integer", "enum": [5, 6, 9]}},
                    "required": ["type"],
                    "not": {"required": ["message"]},
                },
            ]
        },
        "Callback `resource`: the docs' interaction callback resource object has `type` for every "
        "callback type and `message` only for types 4 and 7; the spec only lists 4, 7 and 12.",
    ),
    SpecException(
        "/components/schemas/MessageAllowedMentionsRequest/properties/users/items",
        {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/SnowflakeType"}, _SNOWFLAKE_INT]},
        "allowed_mentions.users: Discord accepts snowflakes as JSON integers too; discord.py 2.7's "
        "AllowedMentions.to_dict sends the ids as integers.",
    ),
    SpecException(
        "/components/schemas/MessageAllowedMentionsRequest/properties/roles/items",
        {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/SnowflakeType"}, _SNOWFLAKE_INT]},
        "allowed_mentions.roles: as for users, discord.py 2.7 sends integer ids, which Discord accepts.",
    ),
    SpecException(
        "/components/schemas/MessageAttachmentRequest/properties/id",
        {"oneOf": [{"$ref": "#/components/schemas/SnowflakeType"}, {"type": "integer", "minimum": 0}]},
        "Attachments of a create/edit: for a new upload `id` is the index n of its files[n] part "
        "(docs: 'Uploading Files'); discord.py 2.7 sends it as an integer.",
    ),
)


@dataclass(frozen=True)
class Violation:
    """A body that does not match the spec: where, and why."""

    # "request" (the bot sent it), "response" or "event" (the simulator sent it, REST or gateway)
    direction: str
    method: str
    route: str  # the spec's path template, e.g. /channels/{channel_id}/messages
    path: str  # the concrete path
    status: int | None  # response status (None for requests)
    json_path: str  # e.g. $.embeds[0].fields[1].inline
    message: str
    validator: str  # the failing JSON-schema keyword ("required", "maxLength", "format"...)

    def __post_init__(self) -> None:
        if len(self.message) > 300:  # the offending instance can be a whole message
            object.__setattr__(self, "message", self.message[:300] + "…")

    def __str__(self) -> str:
        where = f"{self.method} {self.route}" + (f" -> {self.status}" if self.status is not None else "")
        return f"{self.direction} {where} ({self.path}): {self.json_path}: {self.message}"


# Every violation seen in this process, in order. The test suite clears it before each test and fails
# the test when it is not empty afterwards.
VIOLATIONS: list[Violation] = []
_expected = threading.local()


@contextlib.contextmanager
def expecting_refusals() -> Iterator[list[Violation]]:
    """Within this block, request-side mismatches are expected (a test deliberately sends what
    Discord refuses): they are collected in the yielded list instead of :data:`VIOLATIONS`.
    Response-side mismatches are simulator bugs and still count."""
    previous = getattr(_expected, "sink", None)
    sink: list[Violation] = []
    _expected.sink = sink
    try:
        yield sink
    finally:
        _expected.sink = previous


def record(violations: list[Violation]) -> None:
    """Keep violations: expected refusals go to the active ``expecting_refusals`` sink."""
    sink = getattr(_expected, "sink", None)
    for v in violations:
        if sink is not None and v.direction == "request":
            sink.append(v)
        else:
            VIOLATIONS.append(v)


# ---- loading ---------------------------------------------------------------------------------
def _set_pointer(doc: dict[str, Any], pointer: str, value: Any) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
    node: Any = doc
    for part in parts[:-1]:
        node = node[part]
    if parts[-1] not in node:
        raise KeyError(f"spec exception points at nothing: {pointer}")
    node[parts[-1]] = value


@cache
def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """The spec with :data:`EXCEPTIONS` applied (loaded once per process)."""
    if not path.exists():
        raise FileNotFoundError(
            f"Discord's OpenAPI description is missing at {path} (shared/vendor beside the checkout)"
        )
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    for exc in EXCEPTIONS:
        _set_pointer(doc, exc.pointer, exc.replacement)
    return doc


def _format_checker() -> Any:
    """Formats the spec uses, checked as Discord parses them."""
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.tzinfo is not None and "T" in value

    @checker.checks("uri", raises=ValueError)
    def _uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parts = urlsplit(value)
        return bool(parts.scheme) and bool(parts.netloc) and " " not in value

    @checker.checks("int32")
    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("int64")
    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    return checker


_TEMPLATE_PARAM = re.compile(r"\{([^}]+)\}")


class SpecContract:
    """Route matching and cached, compiled validators for request and response bodies."""

    def __init__(self, doc: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(_BASE_URI, resource)
        self._validator_cls = Draft202012Validator
        self._formats = _format_checker()
        self._validators: dict[str, Any] = {}
        routes = []
        for template in doc["paths"]:
            escaped = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
            pattern = _TEMPLATE_PARAM.sub(r"(?P<\1>[^/]+)", escaped)
            literal = len(_TEMPLATE_PARAM.sub("", template))
            routes.append((literal, template, re.compile(pattern + "$")))
        # Literal segments win over parameters (/users/@me before /users/{user_id}).
        routes.sort(key=lambda r: -r[0])
        self._routes = [(t, p) for _lit, t, p in routes]

    def route(self, path: str) -> str | None:
        """The spec's path template for a concrete path relative to /api/v10, if any."""
        for template, pattern in self._routes:
            if pattern.match(path):
                return template
        return None

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        """The operation object, or None when the spec does not describe this method."""
        op = self.doc["paths"][template].get(method.lower())
        return op if isinstance(op, dict) else None

    def _validator(self, pointer: str) -> Any:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = self._validator_cls(
                {"$ref": f"{_BASE_URI}#{pointer}"}, registry=self._registry, format_checker=self._formats
            )
            self._validators[pointer] = validator
        return validator

    @staticmethod
    def _pointer(*parts: str) -> str:
        return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)

    def request_errors(self, method: str, template: str, body: Any) -> list[Any]:
        """Schema errors of a request body (JSON or multipart payload_json)."""
        op = self.operation(method, template)
        if op is None or "requestBody" not in op:
            return []
        content = op["requestBody"].get("content", {})
        if "application/json" not in content:
            return []
        pointer = self._pointer(
            "paths", template, method.lower(), "requestBody", "content", "application/json", "schema"
        )
        return _sorted_errors(self._validator(pointer), body)

    def response_errors(self, method: str, template: str, status: int, body: Any) -> list[Any]:
        """Schema errors of a response body for its status (exact status, else 4XX)."""
        op = self.operation(method, template)
        if op is None or status >= 500:
            # Server errors are outside the description (Discord's own 5xx bodies vary, often HTML).
            return []
        responses = op.get("responses", {})
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        if key not in responses:
            return [_Missing(f"the spec describes no {status} response for {method} {template}")]
        response = responses[key]
        if "$ref" in response:
            pointer = response["$ref"].lstrip("#")
            response = self._resolve(pointer)
        else:
            pointer = self._pointer("paths", template, method.lower(), "responses", key)
        content = response.get("content") or {}
        if "application/json" not in content:
            if body is None:
                return []
            return [_Missing(f"the spec describes no JSON body for {status} of {method} {template}")]
        if body is None:
            return [_Missing(f"the spec describes a JSON body for {status} of {method} {template}")]
        return _sorted_errors(self._validator(pointer + "/content/application~1json/schema"), body)

    def schema_errors(self, schema_name: str, instance: Any) -> list[Any]:
        """Errors of ``instance`` against ``components/schemas/<schema_name>`` (gateway objects: the
        spec describes no gateway, but its events carry the same objects as the REST answers)."""
        return _sorted_errors(self._validator(f"/components/schemas/{schema_name}"), instance)

    def query_errors(self, method: str, template: str, query: dict[str, str]) -> list[tuple[str, str, str]]:
        """(name, keyword, message) for query parameters whose value the spec's schema refuses."""
        item = self.doc["paths"][template]
        op = self.operation(method, template) or {}
        out: list[tuple[str, str, str]] = []
        for param in [*item.get("parameters", []), *op.get("parameters", [])]:
            if param.get("in") != "query" or param["name"] not in query:
                continue
            raw = query[param["name"]]
            schema = param.get("schema", {})
            value, coerce_error = _coerce(raw, self._resolve_schema(schema))
            if coerce_error is not None:
                out.append((param["name"], "type", coerce_error))
                continue
            for error in _sorted_errors(self._inline_validator(schema), value):
                out.append((param["name"], error.validator, error.message))
        return out

    def _inline_validator(self, schema: dict[str, Any]) -> Any:
        key = "inline:" + json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            # Inline parameter schemas only use "#/components/..." refs: point them into the spec.
            validator = self._validator_cls(
                _rebase_refs(schema), registry=self._registry, format_checker=self._formats
            )
            self._validators[key] = validator
        return validator

    def _resolve(self, pointer: str) -> dict[str, Any]:
        node: Any = self.doc
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _resolve_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self._resolve(schema["$ref"].lstrip("#"))
        return schema


def _rebase_refs(schema: Any) -> Any:
    """Copy of ``schema`` whose local refs point into the registered spec document."""
    if isinstance(schema, dict):
        return {
            k: f"{_BASE_URI}{v}"
            if k == "$ref" and isinstance(v, str) and v.startswith("#")
            else _rebase_refs(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase_refs(v) for v in schema]
    return schema


def _coerce(raw: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """A query string value as the type its schema names (Discord parses them so)."""
    types = schema.get("type")
    types = types if isinstance(types, list) else [types] if types else []
    if "integer" in types:
        try:
            return int(raw), None
        except ValueError:
            return raw, f'Value "{raw}" is not int.'
    if "number" in types:
        try:
            return float(raw), None
        except ValueError:
            return raw, f'Value "{raw}" is not a number.'
    if "boolean" in types:
        lowered = raw.lower()
        if lowered in ("true", "1"):
            return True, None
        if lowered in ("false", "0"):
            return False, None
        return raw, "Must be either true or false."
    return raw, None


class _Missing:
    """A response-level mismatch that is not a schema error (no such status, body where none is)."""

    validator = "response"
    absolute_path: tuple[Any, ...] = ()

    def __init__(self, message: str) -> None:
        self.message = message

    @property
    def json_path(self) -> str:
        return "$"


def _sorted_errors(validator: Any, instance: Any) -> list[Any]:
    """The most telling error: oneOf/anyOf are narrowed to the branch that got furthest."""
    from jsonschema.exceptions import relevance

    errors = list(validator.iter_errors(instance))
    if not errors:
        return []
    return [_deepest(min(errors, key=relevance))]


def _deepest(error: Any) -> Any:
    """Descend into a failed oneOf/anyOf to the branch the instance was meant for: the one that does
    not fail on the discriminating ``type``/``enum``, with the fewest errors."""
    from jsonschema.exceptions import relevance

    while error.context:
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            key = sub.relative_schema_path[0] if sub.relative_schema_path else None
            branches.setdefault(key, []).append(sub)

        def score(errors: list[Any]) -> tuple[bool, int]:
            wrong_kind = any(
                e.validator in ("enum", "const", "type") and len(e.relative_path) <= 1 for e in errors
            )
            return wrong_kind, len(errors)

        chosen = min(branches.values(), key=score)
        error = min(chosen, key=relevance)
    return error


def unavailable_reason() -> str | None:
    """Why the referee cannot run here (no spec file, no jsonschema), or None when it can.

    ``loraops sandbox`` on a user's machine has neither; the test suite requires both."""
    if not SPEC_PATH.exists():
        return f"Discord's OpenAPI description is not at {SPEC_PATH}"
    try:
        import jsonschema  # noqa: F401
        import referencing  # noqa: F401
    except ImportError:
        return "jsonschema is not installed (pip install -e '.[dev]')"
    return None


@cache
def contract() -> SpecContract:
    """The process-wide contract (validators are compiled lazily and cached per route)."""
    return SpecContract(load_spec())
