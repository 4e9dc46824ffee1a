"""Trigger-word checks: common words, first names, several CLIP tokens, rare suggestions."""

from __future__ import annotations

import pytest

from bot.training.triggers import (
    RARE_TOKEN_POOL,
    check_trigger,
    clip_tokens,
    first_names,
    is_rare_token,
    scan_rare_tokens,
    suggest_triggers,
)


@pytest.mark.parametrize(
    ("word", "code"),
    [
        ("woman", "common_word"),
        ("elena", "first_name"),
        ("emma", "first_name"),
        ("sks", "known_clash"),
        ("zxqv", "multi_token"),
    ],
)
def test_weak_triggers_are_warned(word: str, code: str) -> None:
    report = check_trigger(word)
    assert not report.ok
    assert code in {f.code for f in report.findings}
    assert report.suggestions, "a warned trigger comes with alternatives"
    assert all(is_rare_token(s) for s in report.suggestions)
    assert word not in report.suggestions


def test_ohwx_is_fine() -> None:
    report = check_trigger("ohwx")
    assert report.ok, report.warnings
    assert report.tokens == ("ohwx",)
    assert report.suggestions == ()


def test_clip_tokenizer_is_the_real_bpe() -> None:
    # Known ids of openai/clip-vit-large-patch14's vocabulary.
    assert clip_tokens("a person riding a motorcycle") == ["a", "person", "riding", "a", "motorcycle"]
    assert clip_tokens("zxqv") == ["z", "x", "q", "v"]


def test_suggestions_are_deterministic_and_vary_by_seed() -> None:
    first = suggest_triggers(4, seed="elena")
    assert first == suggest_triggers(4, seed="elena")
    assert first[0] == "ohwx"
    others = {tuple(suggest_triggers(4, seed=s)) for s in ("a", "b", "c", "d", "e")}
    assert len(others) > 1
    assert "ohwx" not in suggest_triggers(3, exclude=["ohwx"])


def test_pool_passes_every_rule_and_is_found_by_the_scan() -> None:
    assert all(is_rare_token(w) for w in RARE_TOKEN_POOL)
    found = scan_rare_tokens(["cvwx", "vcwx"])  # the generator, on a narrow pattern, finds pool entries
    assert {"mowx", "wiwx", "ohwx", "alwx"} <= set(found)
    assert all(is_rare_token(w) for w in found)
    assert "emma" in first_names() and "ohwx" not in first_names()


def test_format_problem() -> None:
    report = check_trigger("two words")
    assert "format" in {f.code for f in report.findings}
