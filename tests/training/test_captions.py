"""Caption templates, Cloudinary tags, prefix/suffix and the trigger-first check."""

from __future__ import annotations

import pytest

from bot.training.captions import (
    CaptionError,
    add_prefix,
    bulk_prefix_suffix,
    check_captions,
    ensure_trigger,
    render_caption,
    starts_with_trigger,
    tags_from_source,
)


def test_template_caption() -> None:
    assert render_caption("ohwx", "woman", ["smiling", "red_dress", " beach "]) == (
        "ohwx woman, smiling, red dress, beach"
    )
    assert render_caption("ohwx", "woman", []) == "ohwx woman"
    assert render_caption("ohwx", "woman", ["a"], template="{trigger}, {class}, {tags}") == "ohwx, woman, a"
    with pytest.raises(CaptionError):
        render_caption("ohwx", "woman", template="{class}, {tags}")
    with pytest.raises(CaptionError):
        render_caption("ohwx", "woman", template="{trigger} {kind}")


def test_tags_from_cloudinary_drop_names_and_folders() -> None:
    tags = tags_from_source(
        ["elena", "Outdoor", "red_dress", "datasets/elena", "outdoor"],
        {"custom": {"caption": "smiling at the beach, sunset", "alt": "Elena portrait"}},
        drop=["elena", "ohwx", "woman"],
    )
    assert tags == ["outdoor", "red dress", "smiling at the beach", "sunset"]
    assert tags_from_source([], {"alt": "close-up"}) == ["close-up"]


def test_prefix_goes_after_the_trigger_and_suffix_last() -> None:
    assert add_prefix("ohwx woman, smiling", "ohwx", "photo") == "ohwx woman, photo, smiling"
    out = bulk_prefix_suffix(
        {"a": "ohwx woman, x", "b": "ohwx woman"}, "ohwx", prefix="raw photo", suffix="8k"
    )
    assert out == {"a": "ohwx woman, raw photo, x, 8k", "b": "ohwx woman, raw photo, 8k"}
    assert all(starts_with_trigger(c, "ohwx") for c in out.values())


def test_per_image_edit_keeps_trigger_first() -> None:
    assert ensure_trigger("smiling, beach", "ohwx", "woman") == "ohwx woman, smiling, beach"
    assert ensure_trigger("ohwx woman, smiling", "ohwx", "woman") == "ohwx woman, smiling"
    assert ensure_trigger("beach, ohwx woman", "ohwx", "woman") == "ohwx woman, beach"


def test_check_captions() -> None:
    good = {"1.jpg": "ohwx woman, a", "2.jpg": "OHWX woman"}
    assert check_captions(good, "ohwx", keep_tokens=1, shuffle=True) == []
    problems = check_captions({"1.jpg": "woman ohwx", "2.jpg": " ", "3.jpg": "ohwxx woman"}, "ohwx")
    assert len(problems) == 3
    assert any("empty" in p for p in problems)
    assert check_captions(good, "ohwx", keep_tokens=0, shuffle=True) != []
