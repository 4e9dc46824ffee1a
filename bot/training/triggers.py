"""Trigger-word checks: a weak trigger is a known cause of a LoRA that learns the body and not the face.

Three rules, each offline:

- **common word** — word frequencies from ``wordfreq`` (Zipf scale: 3 ≈ once per million words),
  the highest over English and seven other European languages. A trigger the text encoder already
  understands ("woman", "luna") is pulled toward that meaning.
- **first name** — ``first_names.txt`` beside this module, a hand-assembled list of ~870 frequent given
  names across naming traditions. wordfreq alone cannot tell "emma" (a name) from "ohwx" (noise), so the
  list answers "is it a name". A name drags in the base model's idea of people called that.
- **several tokens** — the real CLIP BPE tokenizer (the ``instant-clip-tokenizer`` package embeds the
  openai/clip-vit-large-patch14 vocabulary used by SD1.5, SDXL's first text encoder, SDXL's OpenCLIP
  encoder (same BPE) and Flux's CLIP-L; no download). Flux's T5 tokenizes differently and is not
  checked. A trigger split into pieces learns slower and collides with the pieces' meanings.

Plus a short list of tokens with a known clash (``sks`` is a rifle). :func:`suggest_triggers` proposes
rare alternatives from :data:`RARE_TOKEN_POOL` — pronounceable strings found by :func:`scan_rare_tokens`
over consonant/vowel patterns against the CLIP vocabulary — each re-checked by the same rules.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

FIRST_NAMES_PATH = Path(__file__).with_name("first_names.txt")
# English from wordfreq's large list (down to Zipf ~1); the others from its "small" lists (Zipf >= 3 only),
# which load in ~0.1 s instead of ~1-3 s each: enough to catch words common in those languages.
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "pl")
COMMON_ZIPF = 3.0  # once per million words or more: the text encoder knows it
KNOWN_ZIPF = 1.5  # seen in text often enough to carry some meaning
RARE_TOKEN_MIN_ID = 30_000  # later BPE merges = rarer strings in CLIP's training text

KNOWN_CLASHES: dict[str, str] = {
    "sks": "'sks' is the SKS rifle to the text encoder: samples drift toward guns (a known DreamBooth trap)",
    "tok": "'tok' is a common word in several languages",
    "zwx": "'zwx' splits into several CLIP tokens",
}

# Found with scan_rare_tokens() (vowel+3 consonants and consonant+vowel+2 consonants patterns, single CLIP
# token with id >= RARE_TOKEN_MIN_ID, Zipf < 1 in every checked language), then word fragments with an
# obvious meaning ("gypt", "lism", "roft") removed by hand. "ohwx" is the community's usual choice.
RARE_TOKEN_POOL: tuple[str, ...] = (
    "ohwx",
    "alwx",
    "azwx",
    "ilwx",
    "inwx",
    "kywx",
    "miwx",
    "mowx",
    "wawx",
    "wiwx",
    "gawx",
    "nyrd",
    "sakh",
    "elxn",
    "wicz",
)

Severity = Literal["warning", "info"]


@dataclass(frozen=True)
class TriggerFinding:
    code: Literal["common_word", "known_word", "first_name", "multi_token", "known_clash", "format"]
    severity: Severity
    message: str


@dataclass(frozen=True)
class TriggerReport:
    """What the checks found about one trigger word; ``ok`` when nothing worth a warning."""

    trigger: str
    zipf: float
    tokens: tuple[str, ...]
    findings: tuple[TriggerFinding, ...] = field(default=())
    suggestions: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not any(f.severity == "warning" for f in self.findings)

    @property
    def warnings(self) -> list[str]:
        return [f.message for f in self.findings if f.severity == "warning"]


@cache
def first_names() -> frozenset[str]:
    """The bundled first-name list (lower case)."""
    words: set[str] = set()
    for line in FIRST_NAMES_PATH.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            words.update(line.split())
    return frozenset(words)


@cache
def _tokenizer() -> Any:
    # instant-clip-tokenizer is a compiled module without type information
    module = importlib.import_module("instant_clip_tokenizer")
    return module.Tokenizer()


def clip_tokens(text: str) -> list[str]:
    """The CLIP BPE pieces of ``text`` (lower-cased as CLIP does), e.g. ``["zx", "q"]``."""
    tokenizer = _tokenizer()
    return [tokenizer.decode([token]).strip() for token in tokenizer.encode(text.lower())]


def clip_token_ids(text: str) -> list[int]:
    return list(_tokenizer().encode(text.lower()))


def word_zipf(word: str) -> float:
    """Highest wordfreq Zipf frequency of ``word`` over :data:`LANGUAGES` (0 = never seen)."""
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, lang, wordlist="best" if lang == "en" else "small") for lang in LANGUAGES)


def check_trigger(trigger: str, *, suggest: int = 4, seed: str = "") -> TriggerReport:
    """Check ``trigger`` by every rule and, when it earns a warning, propose ``suggest`` rare alternatives.

    ``seed`` (e.g. the dataset name) varies which alternatives are proposed, deterministically.
    """
    word = trigger.strip()
    findings: list[TriggerFinding] = []
    if not re.fullmatch(r"[A-Za-z0-9]{2,32}", word):
        findings.append(
            TriggerFinding(
                "format",
                "warning",
                f"trigger {trigger!r} should be one word of 2-32 "
                "letters or digits: captions are split on commas and spaces",
            )
        )
    lower = word.lower()
    zipf = word_zipf(lower) if word else 0.0
    tokens = tuple(clip_tokens(lower)) if word else ()
    if lower in KNOWN_CLASHES:
        findings.append(TriggerFinding("known_clash", "warning", KNOWN_CLASHES[lower]))
    if zipf >= COMMON_ZIPF:
        findings.append(
            TriggerFinding(
                "common_word",
                "warning",
                f"'{lower}' is a common word (Zipf {zipf:.1f}): "
                "the model already has a meaning for it and the identity gets diluted",
            )
        )
    elif zipf >= KNOWN_ZIPF:
        findings.append(
            TriggerFinding("known_word", "info", f"'{lower}' appears in ordinary text (Zipf {zipf:.1f})")
        )
    if lower in first_names():
        findings.append(
            TriggerFinding(
                "first_name",
                "warning",
                f"'{lower}' is a first name: the base model's "
                "idea of people with that name leaks into the face",
            )
        )
    if len(tokens) > 1:
        findings.append(
            TriggerFinding(
                "multi_token",
                "warning",
                f"'{lower}' splits into {len(tokens)} CLIP tokens "
                f"({' + '.join(tokens)}): use a single-token trigger",
            )
        )
    report = TriggerReport(trigger=word, zipf=zipf, tokens=tokens, findings=tuple(findings))
    if report.ok or suggest <= 0:
        return report
    return TriggerReport(
        trigger=word,
        zipf=zipf,
        tokens=tokens,
        findings=tuple(findings),
        suggestions=tuple(suggest_triggers(suggest, seed=seed or lower, exclude=[lower])),
    )


def is_rare_token(word: str) -> bool:
    """True when ``word`` passes every rule: one CLIP token, not a word, not a name, no known clash."""
    lower = word.lower()
    return (
        bool(re.fullmatch(r"[a-z0-9]{2,32}", lower))
        and lower not in KNOWN_CLASHES
        and lower not in first_names()
        and len(clip_token_ids(lower)) == 1
        and word_zipf(lower) < KNOWN_ZIPF
    )


def suggest_triggers(count: int = 4, *, seed: str = "", exclude: Iterable[str] = ()) -> list[str]:
    """``count`` rare trigger words, "ohwx" first, the rest picked deterministically from ``seed``."""
    excluded = {e.lower() for e in exclude}
    pool = [w for w in RARE_TOKEN_POOL if w not in excluded and is_rare_token(w)]
    head, rest = pool[:1], pool[1:]
    rest.sort(key=lambda w: hashlib.sha256(f"{seed}:{w}".encode()).hexdigest())
    return (head + rest)[:count]


_VOWELS = "aeiouy"
_CONSONANTS = "bcdfghjklmnprstvwxz"


def scan_rare_tokens(
    patterns: Iterable[str] = ("vccc", "cvcc"), *, min_id: int = RARE_TOKEN_MIN_ID, max_zipf: float = 1.0
) -> list[str]:
    """Pronounceable strings (``c`` = consonant, ``v`` = vowel, other letters literal) that are one rare
    CLIP token and no word.

    How :data:`RARE_TOKEN_POOL` was found; slow (a few seconds per 40 000 candidates), so not run per request.
    """
    alphabet = {"c": _CONSONANTS, "v": _VOWELS}
    tokenizer = _tokenizer()
    found: list[str] = []
    for pattern in patterns:
        for letters in itertools.product(*(alphabet.get(p, p) for p in pattern)):
            word = "".join(letters)
            ids = tokenizer.encode(word)
            if (
                len(ids) == 1
                and ids[0] >= min_id
                and word not in first_names()
                and word_zipf(word) < max_zipf
            ):
                found.append(word)
    return found
