"""Hostile settings, budgets, captions and links typed into Discord (beside the hostile-file tests of
test_gather.py): each is refused with its own reason, privately and before any spend, or shown inert;
nothing is half-written."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from bot.errors import InvalidInputError
from sim.cloudinary import generated_image
from sim.discord import InteractionHandle, SimMessage, SimUser
from sim.harness import BotHarness
from sim.testdata import testdata_faces as faces_dir
from storage.db import unit_of_work
from storage.models import Caption, DatasetSnapshot, GuildSettings, Image, Job

from .helpers import create_dataset_with_photos

PRESET = "sd15-local"


def _user(user: SimUser | None) -> SimUser:
    assert user is not None
    return user


async def _private(h: BotHarness, handle: InteractionHandle, timeout: float = 30) -> str:
    """Everything the bot answered privately to an interaction (the response or, when a public
    "thinking" reply was withdrawn, the ephemeral follow-up), once it has arrived."""

    def said() -> list[SimMessage] | None:
        messages = [m for m in (handle.original, *handle.followups) if m is not None]
        private = [m for m in messages if m.ephemeral and m.content and not m.loading and not m.deleted]
        return private or None

    return "\n".join(m.content for m in await h.sim.wait_until(said, timeout))


async def _count(h: BotHarness, model: type) -> int:
    async with unit_of_work(h.bot_app.services.sessions) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
async def training(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path / "bot", with_training=True) as h:
        await create_dataset_with_photos(h, sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:2])
        yield h


# Each hostile override and what the refusal must say about it (through /train estimate and start).
HOSTILE_OVERRIDES = [
    (
        'network_weights=/etc/passwd dataset_config=/etc/passwd network_args=["conv_dim=1e9","../../x"]',
        [
            "`network_weights` is refused: paths, model files and output locations are the bot's",
            "`dataset_config` is refused: paths",
            "`network_args` is refused: free-form",
        ],
    ),
    (
        "output_dir=../../etc output_name=../../x logging_dir=/tmp/x sample_prompts=/etc/passwd "
        "pretrained_model_name_or_path=/etc/passwd",
        [
            "`output_dir` is refused",
            "`output_name` is refused",
            "`logging_dir` is refused",
            "`sample_prompts` is refused",
            "`pretrained_model_name_or_path` is refused",
        ],
    ),
    ("batch=100000", ["batch_size = 100000 is above the maximum 64"]),
    ("learning_rate=nan", ["learning_rate = nan: must be a finite number"]),
    ("lr=inf steps=1e400", ["learning_rate = inf: must be a finite number", "expected a whole number"]),
    (
        "face.background=2 preset.min_vram_gb=-5",
        ["face.background = 2.0 is above the maximum 1", "preset.min_vram_gb = -5 is below the minimum 6"],
    ),
    ("optimizer_args=[\"foo=__import__('os')\"]", ["`foo` is not an optimizer option"]),
    ("log_with=wandb wandb_api_key=x", ["would send the run or a credential to an outside service"]),
    ("**x**=1 [a](https://evil.example)=2", ["unknown key", "`**x**`"]),
]


async def test_hostile_overrides_are_refused_privately_before_any_spend(training: BotHarness) -> None:
    h = training
    trainer = _user(h.trainer)
    assert h.runpod is not None
    for typed, reasons in HOSTILE_OVERRIDES:
        for command in ("train estimate", "train start"):
            handle = await h.sim.invoke_slash(
                command, {"dataset": "elena", "preset": PRESET, "overrides": typed}, user=trainer
            )
            said = await _private(h, handle)
            for reason in reasons:
                assert reason in said, (command, typed, said)
        if typed.startswith("**x**"):
            # What was typed is shown inside code spans, where Discord renders no Markdown and no link.
            assert "`**x**`" in said and "`[a](https://evil.example)`" in said
    # The export renders the same settings for local training: refused the same way, nothing written.
    export = await h.sim.invoke_slash(
        "dataset export",
        {"name": "elena", "preset": PRESET, "overrides": "network_weights=/etc/passwd output_dir=/tmp"},
        user=trainer,
    )
    said = await _private(h, export)
    assert "`network_weights` is refused: paths" in said and "`output_dir` is refused" in said, said
    assert h.settings is not None
    exports = h.settings.data_dir / "exports"
    assert not exports.exists() or list(exports.iterdir()) == []
    # Nothing was planned, frozen, quoted or rented; no public message was left behind.
    assert await _count(h, Job) == 0
    assert await _count(h, DatasetSnapshot) == 0
    assert h.runpod.pods == {}
    public = [m for m in h.sim.messages_in() if not m.ephemeral and m.author.id == h.sim.bot_user.id]
    assert [m.content for m in public if "refused" in m.content or "Job #" in m.content] == []


async def test_a_budget_that_rounds_to_nothing_is_refused_on_start_too(training: BotHarness) -> None:
    h = training
    for budget, reason in [
        ("0.004", "A budget of $0.00 (after rounding to the cent) is too small"),
        ("nan", "`nan` is not an amount in dollars"),
        ("-1", "can't be negative"),
    ]:
        handle = await h.sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": PRESET, "budget": budget}, user=_user(h.trainer)
        )
        said = await _private(h, handle)
        assert reason in said and "between $0.01 and $10,000.00" in said, said
    assert await _count(h, Job) == 0


async def test_budgets_are_checked_after_rounding_on_every_update(harness: BotHarness) -> None:
    h = harness
    admin = _user(h.admin)
    ok = await h.sim.invoke_slash("budget set", {"job": "2.50", "month": "40"}, user=admin)
    assert "$2.50 per job, $40.00 per month" in await _private(h, ok)
    for options, reason in [
        ({"job": "0.004"}, "The budget per job of $0.00 (after rounding to the cent) is too small"),
        ({"job": "-5"}, "The budget per job can't be negative"),
        ({"job": "NaN"}, "`NaN` is not an amount in dollars"),
        ({"job": "1e9"}, "`1e9` is not an amount in dollars"),
        ({"month": "99999999"}, "The monthly budget of $99,999,999.00 is more than allowed"),
        ({"month": "0.001"}, "The monthly budget of $0.00 (after rounding to the cent) is too small"),
    ]:
        handle = await h.sim.invoke_slash("budget set", options, user=admin)
        said = await _private(h, handle)
        assert reason in said and "between $0.01 and $10,000.00" in said, said
    both = await h.sim.invoke_slash("budget set", {"job": "0.001", "month": "nan"}, user=admin)
    said = await _private(h, both)  # one message, both problems
    assert "The budget per job of $0.00" in said and "`nan` is not an amount in dollars" in said, said
    # Every refusal left the stored budgets as they were.
    async with unit_of_work(h.bot_app.services.sessions) as session:
        row = await session.get(GuildSettings, h.sim.guild.id)
        assert row is not None and (row.job_budget_usd, row.monthly_budget_usd) == (
            Decimal("2.5"),
            Decimal("40"),
        )
    # The service refuses an unrounded amount that did not come through the command, too.
    with pytest.raises(InvalidInputError, match="too small"):
        await h.bot_app.services.guilds.update(h.sim.guild.id, job_budget_usd=Decimal("0.004"))


HOSTILE_CAPTION = (
    "ohwx woman [click me](https://evil.example/x) **BOLD** ||spoiler|| @everyone <@1> "
    "# not a heading \u202etxt.exe \u2066isolated\u2069 zero\u200bwidth"
)


async def test_a_hostile_caption_is_echoed_inert(harness: BotHarness) -> None:
    h = harness
    trainer = _user(h.trainer)
    await create_dataset_with_photos(h, sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:1])
    handle = await h.sim.invoke_slash(
        "dataset caption", {"name": "elena", "number": 1, "text": HOSTILE_CAPTION}, user=trainer
    )
    message = await handle.response()
    assert message is not None and not handle.ephemeral
    shown = message.content
    # Markdown and links are escaped: Discord shows them as typed and links nothing.
    assert r"\[click me\](https\://evil.example/x)" in shown and "](https://" not in shown
    assert r"\*\*BOLD\*\*" in shown and r"\|\|spoiler\|\|" in shown
    # Bidirectional controls are shown by name, never obeyed; invisible characters too.
    for char in ("\u202e", "\u2066", "\u2069", "\u200b" + "width"):
        assert char not in shown
    assert r"\[U+202E\]txt.exe" in shown and r"\[U+2066\]isolated" in shown
    # Mentions are broken (and allowed_mentions pings no one).
    assert "@everyone" not in shown and "<@1>" not in shown
    bodies = [r.json for r in h.sim.requests if isinstance(r.json, dict)]
    sent = next(
        b.get("data") or b
        for b in bodies
        if shown in (b.get("content"), (b.get("data") or {}).get("content"))
    )
    mentions = sent.get("allowed_mentions") or {"parse": []}
    assert mentions.get("parse", []) == []
    # The caption itself is kept as typed (it is data for the trainer), the echo is what is neutral.
    async with unit_of_work(h.bot_app.services.sessions) as session:
        stored = await session.scalar(select(Caption.text).order_by(Caption.id.desc()).limit(1))
    assert stored is not None and "[click me](https://evil.example/x)" in stored


async def test_numeric_ip_hosts_are_refused_by_the_address_policy(tmp_path: Path) -> None:
    async with BotHarness(tmp_path / "bot", settings_overrides={"allow_private_urls": False}) as h:
        await h.bot_app.services.datasets.create(
            guild_id=h.sim.guild.id,
            name="elena",
            trigger="ohwx",
            class_word="woman",
            owner_id=_user(h.trainer).id,
        )
        urls = "http://0x7f000001/a.jpg http://2130706433/b.jpg http://0177.0.0.1/c.jpg http://127.1/d.jpg"
        handle = await h.sim.invoke_slash(
            "dataset gather", {"name": "elena", "source": "url", "urls": urls}, user=_user(h.trainer)
        )
        text = await _final_text(h, handle)
        assert "no images added; 4 rejected" in text, text
        for host in ("0x7f000001", "2130706433", "0177.0.0.1", "127.1"):
            assert f"refused: {host} is 127.0.0.1, a loopback address" in text, text
        assert await _count(h, Image) == 0


def _animated(fmt: str, seed: int) -> bytes:
    """Three different frames; each file's first frame is a different picture."""
    frames = [
        PILImage.open(io.BytesIO(generated_image(seed * 10 + i, size=(96, 96), fmt="PNG"))).convert("RGB")
        for i in range(3)
    ]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


async def _final_text(h: BotHarness, handle: InteractionHandle) -> str:
    def done() -> SimMessage | None:
        message = handle.original
        if (
            message is None
            or message.loading
            or message.content.split("…")[0]
            in (
                "Listing",
                "Downloading",
                "Processing",
            )
        ):
            return None
        return message

    message: SimMessage = await h.sim.wait_until(done, 60)
    return message.content


async def test_animated_images_are_added_as_their_first_frame_and_the_report_says_so(
    harness: BotHarness,
) -> None:
    h = harness
    await h.bot_app.services.datasets.create(
        guild_id=h.sim.guild.id,
        name="elena",
        trigger="ohwx",
        class_word="woman",
        owner_id=_user(h.trainer).id,
    )
    still = generated_image(5, size=(96, 96), fmt="PNG")
    handle = await h.sim.invoke_slash(
        "dataset add",
        {"name": "elena"},
        user=_user(h.trainer),
        attachments=[
            ("wave.gif", _animated("GIF", 1)),
            ("spin.png", _animated("PNG", 2)),  # APNG
            ("blink.webp", _animated("WEBP", 3)),
            ("still.png", still),
        ],
    )
    text = await _final_text(h, handle)
    assert "added 4 images (#1–#4)" in text and "3 animated images: only the first frame is used" in text, (
        text
    )
    assert "Animated (first frame used):" in text
    for name in ("wave.gif", "spin.png", "blink.webp"):
        assert f"`{name}`: 3 frames, only the first is used" in text
    assert "`still.png`" not in text
    assert await _count(h, Image) == 4
