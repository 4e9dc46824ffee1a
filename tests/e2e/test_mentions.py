"""Who the bot pings, read from the simulator's resolved mentions (content + allowed_mentions + permissions,
as Discord resolves them), not from what the bot asked for.

The worst case is set up on purpose: the bot may mention @everyone and every role is mentionable, so a
message that carried user text without a tight ``allowed_mentions`` would really ping people.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from sim.cloudinary import generated_image
from sim.discord import Perm, SimMessage
from sim.harness import BotHarness, quoted_job_id
from sim.testdata import testdata_faces as faces_dir

from .helpers import bot_messages, create_dataset_with_photos, wait_message
from .test_review import review_bot, row_of, run_job, summary_of


def pings(message: SimMessage) -> tuple[set[int], set[int], bool]:
    """(users, roles, @everyone/@here) the message really pinged."""
    return {u.id for u in message.mentions}, set(message.mention_roles), message.mention_everyone


def bot_messages_since(h: BotHarness, first_id: int) -> list[SimMessage]:
    """Every message the bot posted (or filled in) since ``first_id``, ephemeral ones included."""
    return [m for m in h.sim.messages.values() if m.author.id == h.sim.bot_user.id and m.id >= first_id]


def everyone_may_be_pinged(h: BotHarness) -> str:
    """Give the bot Mention Everyone, make every role mentionable; return a text pinging all of them."""
    h.sim.role("loraops").permissions |= Perm.MENTION_EVERYONE
    for role in h.sim.guild.roles.values():
        role.mentionable = True
    assert h.admin is not None and h.reviewer is not None
    reviewer_role = h.sim.role("reviewer")
    return f"@everyone @here <@{h.admin.id}> <@!{h.reviewer.id}> <@&{reviewer_role.id}>"


def assert_pings_nobody(messages: Iterable[SimMessage], *, except_invoker: int | None = None) -> None:
    seen = 0
    for message in messages:
        seen += 1
        users, roles, everyone = pings(message)
        allowed = {except_invoker} if except_invoker is not None else set()
        assert users <= allowed and not roles and not everyone, (message.content[:200], pings(message))
    assert seen, "no message to check"


async def test_user_text_in_every_kind_of_message_pings_nobody(harness: BotHarness) -> None:
    h = harness
    assert h.trainer is not None
    evil = everyone_may_be_pinged(h)
    first = h.sim.snowflakes.next()

    # Names, triggers and classes: refused or accepted, whatever echoes them must not ping.
    for options in (
        {"name": evil, "trigger": "ohwx", "class": "woman"},
        {"name": "elena", "trigger": evil, "class": "woman"},
        {"name": "elena", "trigger": "ohwx", "class": evil},
    ):
        handle = await h.sim.invoke_slash("dataset create", options, user=h.trainer)
        assert await handle.response(timeout=20) is not None
    created = await h.sim.invoke_slash(
        "dataset create", {"name": "maya", "trigger": "sks", "class": "woman"}, user=h.trainer
    )
    assert await created.response(timeout=20) is not None

    # File names of attachments, and the report that lists them.
    photo = generated_image(3, size=(256, 256), fmt="JPEG")
    added = await h.sim.invoke_slash(
        "dataset add",
        {"name": "maya"},
        user=h.trainer,
        attachments=[(f"{evil}.jpg", photo), ("ok.jpg", photo)],
    )
    assert await added.response(timeout=30) is not None

    # Captions, reasons, numbers and prefixes typed by users.
    for command, options in (
        ("dataset caption", {"name": "maya", "number": 1, "text": evil}),
        ("dataset caption", {"name": "maya", "number": 1}),
        ("dataset caption", {"name": "maya", "prefix": evil}),
        ("dataset exclude", {"name": "maya", "numbers": "1", "reason": evil}),
        ("dataset exclude", {"name": "maya", "numbers": evil}),
        ("dataset show", {"name": "maya"}),
        ("dataset trigger", {"name": "maya", "word": f"@here <@&{h.sim.role('reviewer').id}>"}),  # <= 64
        ("dataset show", {"name": evil}),
    ):
        handle = await h.sim.invoke_slash(command, options, user=h.trainer)
        assert await handle.response(timeout=30) is not None, (command, options)
        await h.sim.wait_until(lambda: not any(m.loading for m in bot_messages_since(h, first)), timeout=30)

    said = bot_messages_since(h, first)
    assert any("@" in m.content and "everyone" in m.content for m in said), "the text was echoed somewhere"
    assert_pings_nobody(said, except_invoker=h.trainer.id)


@pytest.mark.slow
async def test_summary_pings_exactly_requester_and_reviewers_and_a_channel_without_attach_files_is_told(
    tmp_path: Path,
) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:2]
    other = faces_dir() / "kit_harington" / "kit_1.jpg"
    async with review_bot(tmp_path, photos, other) as h:
        assert h.trainer is not None
        everyone_may_be_pinged(h)  # the summary must still ping only whom it means to
        # The job channel takes Attach Files from the bot's role (it may still write and react there).
        h.sim.set_overwrite(None, h.sim.role("loraops"), deny=Perm.ATTACH_FILES)
        first = h.sim.snowflakes.next()
        job_id = await run_job(h, "steps=8 save_every_n_steps=4 sample_every_n_steps=4")
        summary = await wait_message(h, summary_of(job_id), timeout=120)

        assert pings(summary) == ({h.trainer.id}, {h.sim.role("reviewer").id}, False)
        assert h.sim.files_of(summary.id) == []
        assert "denies me **Attach Files**" in summary.content
        assert f"`/train samples job:{job_id}`" in summary.content
        assert "role was not pinged" not in summary.content

        rows = bot_messages(h, row_of(4)) + bot_messages(h, row_of(8))
        assert len(rows) == 2 and all(h.sim.files_of(r.id) == [] for r in rows)
        assert all("denies me **Attach Files**" in r.content for r in rows)
        assert_pings_nobody([m for m in bot_messages_since(h, first) if m.id != summary.id])

        # Where files are allowed, /train samples shows the grid (an interaction answer).
        look = await h.sim.invoke_slash("train samples", {"job": job_id}, user=h.trainer)
        shown = await look.response(timeout=30)
        assert shown is not None and [n for n, _ in h.sim.files_of(shown.id)] == [f"job{job_id}-grid.jpg"]


@pytest.mark.slow
async def test_summary_says_when_the_reviewer_role_cannot_be_pinged(tmp_path: Path) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:2]
    other = faces_dir() / "kit_harington" / "kit_1.jpg"
    harness = BotHarness(tmp_path / "bot", settings_overrides={"face_engine": "dlib"}, with_training=True)
    harness.sim.role("reviewer").mentionable = False  # the server's default for a new role
    harness.standin_env = {"SDSTANDIN_FACE_FROM": str(other)}
    async with harness as h:
        assert h.trainer is not None
        await create_dataset_with_photos(h, photos)
        job_id = await run_job(h, "steps=4 save_every_n_steps=4 sample_every_n_steps=4")
        summary = await wait_message(h, summary_of(job_id), timeout=120)
        assert pings(summary) == ({h.trainer.id}, set(), False)
        assert "The reviewer role was not pinged: make it mentionable" in summary.content


@pytest.mark.slow
async def test_overrides_and_display_names_in_training_messages_ping_nobody(tmp_path: Path) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:2]
    async with BotHarness(tmp_path / "bot", with_training=True) as h:
        await create_dataset_with_photos(h, photos)
        evil = everyone_may_be_pinged(h)
        # A trainer whose server nickname is itself a ping: it is shown by "cancelled by <name>".
        sneaky = h.sim.add_member(
            "mallory", roles=["trainer"], nick=f"@everyone <@&{h.sim.role('reviewer').id}>"
        )
        first = h.sim.snowflakes.next()

        for overrides in (evil, f"steps=8 {evil}=1", f"network_dim={evil}"):
            refused = await h.sim.invoke_slash(
                "train start",
                {"dataset": "elena", "preset": "sd15-local", "overrides": overrides},
                user=sneaky,
            )
            assert await refused.response(timeout=30) is not None
        estimate = await h.sim.invoke_slash(
            "train estimate", {"dataset": "elena", "preset": "sd15-local", "overrides": evil}, user=sneaky
        )
        assert await estimate.response(timeout=30) is not None

        quoted = await h.sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": "sd15-local", "overrides": "steps=8"}, user=sneaky
        )
        quote = await quoted.response(timeout=30)
        assert quote is not None
        job_id = quoted_job_id(quote)
        assert job_id is not None, quote.content
        cancel = await h.sim.invoke_component(quote.id, f"loraops:train:cancel:{job_id}", sneaky)
        await cancel.ack()
        await h.sim.wait_until(lambda: "Cancelled by" in h.sim.message(quote.id).content, timeout=20)
        # The reason recorded with the job carries the nickname; status and list show it.
        for command, options in (("train status", {"job": job_id}), ("train list", {})):
            shown = await h.sim.invoke_slash(command, options, user=sneaky)
            assert await shown.response(timeout=30) is not None
        said = bot_messages_since(h, first)
        assert any("@\u200beveryone" in m.content for m in said), "the nickname was shown somewhere, as text"

        assert_pings_nobody(bot_messages_since(h, first), except_invoker=sneaky.id)
