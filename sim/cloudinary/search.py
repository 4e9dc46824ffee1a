"""Search API expressions (``POST /resources/search``, ``expression``) as Cloudinary parses them.

A tokenizer and a recursive-descent parser build a small tree; ``compile_expression`` turns it into a
predicate over :class:`~sim.cloudinary.server.SimAsset`. A malformed expression raises
:class:`SearchExpressionError`, which the server answers with HTTP 400 ``{"error": {"message": …}}``.

Sources followed (stored copies of Cloudinary's own material):

- "Search expressions", https://cloudinary.com/documentation/search_expressions.md: Lucene-like
  syntax; values with spaces or reserved characters go in double quotes, inside which only ``"`` and
  ``*`` need a backslash; outside quotes ``! ( ) { } [ ] * ^ ~ ? : \\ = & > <`` ``"`` and whitespace must
  be escaped with a backslash; Boolean operators must be ALL CAPS; ``OR`` or ``||``; a term without a
  field is searched in all the asset's string fields; field names are case sensitive; relative times
  (``>=3d`` is "within the last 3 days").
- Cloudinary's asset-management SDK (github.com/cloudinary/asset-management-js, docs/sdks/search):
  "token match (``field:value``), exact match (``field=value``), trailing ``*`` for prefix match, ranges
  (``[a TO b]``, ``{a TO b}``) and comparisons (``>``, ``<``, ``>=``, ``<=``). Combine terms with uppercase
  ``AND``, ``OR``, ``NOT``, or ``+``/``-``, and group with parentheses." Its request hook quotes bare
  ISO date-times after date operators (the colons in ``12:30:00`` are reserved) and removes the space
  in ``tags: shirt``, so both are malformed when sent as typed; the simulator rejects them.
- "Search API reference", https://cloudinary.com/documentation/search_api: ``uploaded_at>1d AND
  bytes>1m`` ("uploaded within the last day, larger than 1 MB"); Cloudinary's 2017 product update shows
  ``tag:dog uploaded_at>1m aspect_ratio>="4:3" width>2048`` as all four conditions at once, i.e. terms
  side by side are ANDed, and ``1m`` on a date is a month.

Where those pages are silent the simulator chooses (and says so here): ``k``/``m``/``g`` (or ``kb``…)
are powers of 1024; ``:`` splits both sides into lower-cased words (letters and digits; anything else
separates) and matches the query's words as a consecutive run; ``=`` compares the whole value, case
sensitive; ``*`` may appear anywhere in a value (``public_id:elena/*``, ``tags:eln*``) and matches any
run of characters, against the whole value and, for ``:``, against each word; dates compared with
``:``/``=`` match the same UTC day; a query made only of negations matches everything else.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sim.cloudinary.server import SimAsset

Predicate = Callable[["SimAsset"], bool]


class SearchExpressionError(ValueError):
    """A malformed or unsupported expression: the Search API answers 400."""


# -- tokens --------------------------------------------------------------------------------------------

TokenKind = Literal[
    "word", "quoted", "op", "lparen", "rparen", "lrange", "rrange", "and", "or", "not", "must"
]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # the value with escapes resolved (for words and quoted strings)
    pos: int  # 0-based character offset, for error messages
    wild: tuple[bool, ...] = ()  # per character of ``text``: an unescaped ``*`` (a wildcard)
    space_before: bool = False


_KEYWORDS: dict[str, TokenKind] = {"AND": "and", "OR": "or", "NOT": "not"}
_STOP = set(' \t\r\n()[]{}":=<>')
_RESERVED_IN_WORD = set("^~?!&|")


def tokenize(expression: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(expression)
    spaced = True
    while i < n:
        ch = expression[i]
        if ch.isspace():
            spaced = True
            i += 1
            continue
        start = i
        term_may_start = spaced or (bool(tokens) and tokens[-1].kind in ("lparen", "not", "must"))
        if ch == "(":
            tokens.append(Token("lparen", ch, start, space_before=spaced))
            i += 1
        elif ch == ")":
            tokens.append(Token("rparen", ch, start, space_before=spaced))
            i += 1
        elif ch in "[{":
            tokens.append(Token("lrange", ch, start, space_before=spaced))
            i += 1
        elif ch in "]}":
            tokens.append(Token("rrange", ch, start, space_before=spaced))
            i += 1
        elif expression.startswith("&&", i):
            tokens.append(Token("and", "&&", start, space_before=spaced))
            i += 2
        elif expression.startswith("||", i):
            tokens.append(Token("or", "||", start, space_before=spaced))
            i += 2
        elif ch in "<>":
            op = expression[i : i + 2] if expression.startswith("=", i + 1) else ch
            tokens.append(Token("op", op, start, space_before=spaced))
            i += len(op)
        elif ch in ":=":
            tokens.append(Token("op", ch, start, space_before=spaced))
            i += 1
        elif ch in "-+!" and term_may_start and i + 1 < n and not expression[i + 1].isspace():
            # A prefix operator only at the start of a term; inside a word "-" is just a character.
            tokens.append(Token("not" if ch in "-!" else "must", ch, start, space_before=spaced))
            i += 1
        elif ch == '"':
            text, wild, i = _quoted(expression, i)
            tokens.append(Token("quoted", text, start, wild, space_before=spaced))
        else:
            text, wild, i = _word(expression, i)
            kind: TokenKind = "word"
            if not any(wild) and expression[start:i] == text:  # an escaped \AND is a plain word
                kind = _KEYWORDS.get(text, "word")
            tokens.append(Token(kind, text, start, wild, space_before=spaced))
        spaced = False
    return tokens


def _quoted(expression: str, i: int) -> tuple[str, tuple[bool, ...], int]:
    chars: list[str] = []
    wild: list[bool] = []
    j = i + 1
    while j < len(expression):
        ch = expression[j]
        if ch == "\\" and j + 1 < len(expression):
            chars.append(expression[j + 1])
            wild.append(False)
            j += 2
            continue
        if ch == '"':
            return "".join(chars), tuple(wild), j + 1
        chars.append(ch)
        wild.append(ch == "*")
        j += 1
    raise SearchExpressionError(f"unterminated quoted value starting at position {i + 1}")


def _word(expression: str, i: int) -> tuple[str, tuple[bool, ...], int]:
    chars: list[str] = []
    wild: list[bool] = []
    j = i
    while j < len(expression):
        ch = expression[j]
        if ch == "\\":
            if j + 1 >= len(expression):
                raise SearchExpressionError("a backslash at the end of the expression escapes nothing")
            chars.append(expression[j + 1])
            wild.append(False)
            j += 2
            continue
        if ch in _STOP or expression.startswith("&&", j) or expression.startswith("||", j):
            break
        if ch in _RESERVED_IN_WORD:
            raise SearchExpressionError(
                f"reserved character '{ch}' at position {j + 1}; "
                "escape it with a backslash or quote the value"
            )
        chars.append(ch)
        wild.append(ch == "*")
        j += 1
    return "".join(chars), tuple(wild), j


# -- the tree ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    text: str
    wild: tuple[bool, ...]
    quoted: bool

    @property
    def has_wildcard(self) -> bool:
        return any(self.wild)

    def pattern(self, *, ignore_case: bool) -> re.Pattern[str]:
        parts = [".*" if w else re.escape(c) for c, w in zip(self.text, self.wild, strict=True)]
        return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


@dataclass(frozen=True)
class Term:
    field: str | None  # None: every string field
    op: str  # ":" "=" "<" "<=" ">" ">="
    value: Value


@dataclass(frozen=True)
class Range:
    field: str
    low: Value | None  # None: open (``*``)
    high: Value | None
    low_inclusive: bool
    high_inclusive: bool


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    children: tuple[Node, ...]


Node = Term | Range | Not | All | Any_


class _Parser:
    """query := or ; or := and (OR and)* ; and := unary ((AND)? unary)* ; unary := (NOT|-|!|+) unary | primary
    primary := "(" or ")" | FIELD op value | FIELD ":" range | value"""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> Node:
        node = self.or_()
        extra = self.peek()
        if extra is not None:
            raise _unexpected(extra)
        return node

    def or_(self) -> Node:
        children = [self.and_()]
        while (token := self.peek()) is not None and token.kind == "or":
            self.take()
            if self.peek() is None:
                raise _nothing_after(token)
            children.append(self.and_())
        return children[0] if len(children) == 1 else Any_(tuple(children))

    def and_(self) -> Node:
        children = [self.unary()]
        while (token := self.peek()) is not None and token.kind not in ("or", "rparen"):
            if token.kind == "and":
                self.take()
                if self.peek() is None:
                    raise _nothing_after(token)
            children.append(self.unary())  # side by side: AND
        return children[0] if len(children) == 1 else All(tuple(children))

    def unary(self) -> Node:
        token = self.peek()
        if token is None:
            raise SearchExpressionError("the expression ends where a search term was expected")
        if token.kind in ("not", "must"):
            self.take()
            if self.peek() is None:
                raise _nothing_after(token)
            child = self.unary()
            return Not(child) if token.kind == "not" else child
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "lparen":
            if (closing := self.peek()) is not None and closing.kind == "rparen":
                raise SearchExpressionError(f"empty parentheses at position {token.pos + 1}")
            node = self.or_()
            closing = self.peek()
            if closing is None or closing.kind != "rparen":
                raise SearchExpressionError(f"missing ')' for the '(' at position {token.pos + 1}")
            self.take()
            return node
        if token.kind in ("word", "quoted"):
            after = self.peek()
            if token.kind == "word" and after is not None and after.kind == "op" and not after.space_before:
                return self.field_clause(token)
            return Term(None, ":", Value(token.text, token.wild, token.kind == "quoted"))
        raise _unexpected(token)

    def field_clause(self, name: Token) -> Node:
        op = self.take()
        if any(name.wild) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_\-]+)?", name.text):
            raise SearchExpressionError(f"'{name.text}' at position {name.pos + 1} is not a field name")
        field = name.text
        value = self.peek()
        if value is None or value.space_before:
            raise SearchExpressionError(
                f"'{field}{op.text}' at position {name.pos + 1} has no value (write it without a space)"
            )
        if value.kind == "lrange":
            if op.text != ":":
                raise SearchExpressionError(f"a range goes after '{field}:', not '{field}{op.text}'")
            return self.range_(field)
        if value.kind not in ("word", "quoted"):
            raise _unexpected(value)
        self.take()
        return Term(field, op.text, Value(value.text, value.wild, value.kind == "quoted"))

    def range_(self, field: str) -> Node:
        opening = self.take()
        low = self.bound()
        to = self.peek()
        if to is None or to.kind != "word" or to.text != "TO":
            raise SearchExpressionError(f"the range at position {opening.pos + 1} needs 'low TO high'")
        self.take()
        high = self.bound()
        closing = self.peek()
        if closing is None or closing.kind != "rrange":
            raise SearchExpressionError(
                f"the range at position {opening.pos + 1} is not closed with ']' or '}}'"
            )
        self.take()
        return Range(field, low, high, opening.text == "[", closing.text == "]")

    def bound(self) -> Value | None:
        token = self.peek()
        if token is None or token.kind not in ("word", "quoted"):
            raise SearchExpressionError("a range needs a value on each side of TO")
        self.take()
        if token.kind == "word" and token.text == "*" and all(token.wild):
            return None
        return Value(token.text, token.wild, token.kind == "quoted")


def _nothing_after(token: Token) -> SearchExpressionError:
    return SearchExpressionError(f"'{token.text}' at position {token.pos + 1} has nothing after it")


def _unexpected(token: Token) -> SearchExpressionError:
    return SearchExpressionError(f"unexpected '{token.text}' at position {token.pos + 1}")


def parse(expression: str) -> Node | None:
    """The tree of ``expression``; ``None`` for an empty one (which matches every asset)."""
    tokens = tokenize(expression)
    if not tokens:
        return None
    return _Parser(tokens).parse()


# -- fields --------------------------------------------------------------------------------------------

STRING_FIELDS = (
    "public_id",
    "filename",
    "display_name",
    "asset_folder",
    "folder",
    "tags",
    "resource_type",
    "type",
    "format",
    "asset_id",
    "access_mode",
    "status",
)
NUMBER_FIELDS = ("bytes", "width", "height", "pixels", "aspect_ratio")
DATE_FIELDS = ("created_at", "uploaded_at")
# A term without a field looks in these (free-text fields, not ones limited to a fixed list of values).
FREE_TEXT_FIELDS = ("public_id", "filename", "display_name", "asset_folder", "folder", "tags", "context")


def _string_values(asset: SimAsset, field: str) -> list[str]:
    if field.startswith("context."):
        value = asset.context.get(field.split(".", 1)[1])
        return [value] if value is not None else []
    match field:
        case "public_id":
            return [asset.public_id]
        case "filename" | "display_name":
            return [asset.display_name]
        case "asset_folder":
            return [asset.asset_folder]
        case "folder":
            # Fixed-folder accounts: the public_id's path; dynamic folders: the asset folder.
            return list(dict.fromkeys(v for v in (asset.folder, asset.asset_folder) if v))
        case "tags":
            return list(asset.tags)
        case "context":
            return list(asset.context.values())
        case "resource_type":
            return [asset.resource_type]
        case "type":
            return [asset.type]
        case "format":
            return [asset.format]
        case "asset_id":
            return [asset.asset_id]
        case "access_mode":
            return ["public"]
        case "status":
            return ["active"]
    raise SearchExpressionError(f"Unsupported search field: {field}")


def _number(asset: SimAsset, field: str) -> float | None:
    match field:
        case "bytes":
            return float(len(asset.data))
        case "width":
            return float(asset.width) if asset.width is not None else None
        case "height":
            return float(asset.height) if asset.height is not None else None
        case "pixels":
            return float(asset.width * asset.height) if asset.width and asset.height else None
        case "aspect_ratio":
            return asset.width / asset.height if asset.width and asset.height else None
    raise SearchExpressionError(f"Unsupported search field: {field}")


_WORD_SPLIT = re.compile(r"[^0-9A-Za-z\u00C0-\uFFFF]+")


def words(text: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(text.lower()) if w]


_SIZE = re.compile(r"(\d+(?:\.\d+)?)(b|kb?|mb?|gb?)?", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 1024, "kb": 1024}
_SIZE_FACTORS |= {"m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def _parse_number(field: str, value: Value) -> float:
    text = value.text.strip()
    if value.has_wildcard:
        raise SearchExpressionError(f"'{field}' is a number: '{text}' cannot have a wildcard")
    if field == "aspect_ratio" and (ratio := re.fullmatch(r"(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)", text)):
        width, height = float(ratio.group(1)), float(ratio.group(2))
        if height == 0:
            raise SearchExpressionError(f"'{text}' is not an aspect ratio")
        return width / height
    if field == "bytes" and (size := _SIZE.fullmatch(text)):
        return float(size.group(1)) * _SIZE_FACTORS[(size.group(2) or "").lower()]
    try:
        return float(text)
    except ValueError:
        raise SearchExpressionError(f"'{field}' is a number: '{text}' is not one") from None


_RELATIVE = re.compile(r"(\d+)([hdwmy])")
_RELATIVE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def _parse_instant(field: str, value: Value, now: datetime) -> tuple[datetime, bool]:
    """The instant ``value`` names, and whether it is a whole day (an ISO date without a time)."""
    text = value.text.strip()
    if value.has_wildcard:
        raise SearchExpressionError(f"'{field}' is a date: '{text}' cannot have a wildcard")
    if relative := _RELATIVE.fullmatch(text):
        amount, unit = int(relative.group(1)), relative.group(2)
        span = timedelta(hours=amount) if unit == "h" else timedelta(days=amount * _RELATIVE_DAYS[unit])
        return now - span, False
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC), True
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SearchExpressionError(
            f"'{field}' is a date: '{text}' is neither an ISO 8601 date nor a relative time like 3d"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC), False


# -- evaluation ----------------------------------------------------------------------------------------


def compile_expression(expression: str, *, now: datetime | None = None) -> Predicate:
    """A predicate for ``expression``; raises :class:`SearchExpressionError` when it is malformed.

    Every term is checked here, before any asset is looked at, so a bad field or value is an error even
    when no asset would reach it.
    """
    node = parse(expression)
    if node is None:
        return lambda _asset: True
    return _compile(node, now or datetime.now(UTC))


def _compile(node: Node, now: datetime) -> Predicate:
    if isinstance(node, All):
        parts = [_compile(child, now) for child in node.children]
        return lambda asset: all(part(asset) for part in parts)
    if isinstance(node, Any_):
        parts = [_compile(child, now) for child in node.children]
        return lambda asset: any(part(asset) for part in parts)
    if isinstance(node, Not):
        inner = _compile(node.child, now)
        return lambda asset: not inner(asset)
    if isinstance(node, Range):
        return _compile_range(node, now)
    return _compile_term(node, now)


def _compile_term(term: Term, now: datetime) -> Predicate:
    field = term.field
    if field is None:
        return _string_predicate(FREE_TEXT_FIELDS, ":", term.value)
    if field in NUMBER_FIELDS:
        number = _parse_number(field, term.value)
        compare = _COMPARE[term.op]
        wanted = _rounded(number)
        return lambda asset: (got := _number(asset, field)) is not None and compare(_rounded(got), wanted)
    if field in DATE_FIELDS:
        instant, whole_day = _parse_instant(field, term.value, now)
        if term.op in (":", "="):
            if whole_day:
                return lambda asset: asset.created_at.astimezone(UTC).date() == instant.date()
            return lambda asset: asset.created_at.replace(microsecond=0) == instant.replace(microsecond=0)
        if whole_day and term.op in (">", "<="):
            instant += timedelta(days=1)  # "after 2024-01-01" is from the next day on
            compare = _COMPARE[">=" if term.op == ">" else "<"]
        else:
            compare = _COMPARE[term.op]
        return lambda asset: compare(asset.created_at, instant)
    if field == "context":
        raise SearchExpressionError("Unsupported search field: context (search a key with context.<key>)")
    if field in STRING_FIELDS or field.startswith("context."):
        if term.op not in (":", "="):
            raise SearchExpressionError(f"'{field}' is text: use ':' or '=', not '{term.op}'")
        return _string_predicate((field,), term.op, term.value)
    raise SearchExpressionError(f"Unsupported search field: {field}")


def _string_predicate(fields: Iterable[str], op: str, value: Value) -> Predicate:
    names = tuple(fields)
    if op == "=":
        if value.has_wildcard:
            pattern = value.pattern(ignore_case=False)
            return lambda asset: any(pattern.fullmatch(v) for f in names for v in _string_values(asset, f))
        return lambda asset: any(v == value.text for f in names for v in _string_values(asset, f))
    if value.has_wildcard:
        pattern = value.pattern(ignore_case=True)
        return lambda asset: any(
            pattern.fullmatch(v) or any(pattern.fullmatch(w) for w in words(v))
            for f in names
            for v in _string_values(asset, f)
        )
    wanted = words(value.text)
    if not wanted:
        raise SearchExpressionError(f"'{value.text}' has no letters or digits to search for")
    return lambda asset: any(_has_run(words(v), wanted) for f in names for v in _string_values(asset, f))


def _has_run(haystack: list[str], run: list[str]) -> bool:
    size = len(run)
    return any(haystack[i : i + size] == run for i in range(len(haystack) - size + 1))


def _compile_range(node: Range, now: datetime) -> Predicate:
    field = node.field
    if field in NUMBER_FIELDS:
        low = _rounded(_parse_number(field, node.low)) if node.low is not None else None
        high = _rounded(_parse_number(field, node.high)) if node.high is not None else None

        def number_in(asset: SimAsset) -> bool:
            got = _number(asset, field)
            return got is not None and _within(_rounded(got), low, high, node)

        return number_in
    if field in DATE_FIELDS:
        low_at = _parse_instant(field, node.low, now) if node.low is not None else None
        high_at = _parse_instant(field, node.high, now) if node.high is not None else None
        low = high = None
        if low_at is not None:
            # An exclusive whole day starts after that day.
            low = low_at[0] + timedelta(days=1) if low_at[1] and not node.low_inclusive else low_at[0]
        if high_at is not None:
            # An inclusive whole day ends at the end of that day.
            high = high_at[0] + timedelta(days=1) if high_at[1] and node.high_inclusive else high_at[0]
        whole_low = low_at is not None and low_at[1]
        whole_high = high_at is not None and high_at[1]
        bounds = Range(
            field,
            node.low,
            node.high,
            node.low_inclusive or whole_low,
            node.high_inclusive and not whole_high,
        )
        return lambda asset: _within(asset.created_at, low, high, bounds)
    if field in STRING_FIELDS or field.startswith("context."):
        raise SearchExpressionError(f"'{field}' is text: ranges apply to numbers and dates")
    raise SearchExpressionError(f"Unsupported search field: {field}")


def _within(got: Any, low: Any, high: Any, node: Range) -> bool:
    """``got`` within ``low``..``high`` (``None``: open), each end inclusive as ``node`` says."""
    if low is not None and (got < low or (got == low and not node.low_inclusive)):
        return False
    return high is None or not (got > high or (got == high and not node.high_inclusive))


def _rounded(value: float) -> float:
    # Aspect ratios are stored to 5 decimals by Cloudinary; "4:3" must equal 1.33333.
    return round(value, 5)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ":": operator.eq,
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
