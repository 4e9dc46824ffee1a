"""Message texts: mentions in user text are neutralised; only the requester and reviewers are pinged."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest

from bot.review.notify import (
    MESSAGE_LIMIT,
    ZWSP,
    BestCheckpoint,
    JobReport,
    checkpoint_caption,
    code_block,
    inline,
    job_summary,
    neutralise,
)
from storage.models import JobState

# What Discord would read as a mention: @everyone, @here, <@id>, <@!id>, <@&id>.
MENTION = re.compile(r"@everyone|@here|<@[!&]?\d+>", re.IGNORECASE)


def _report(state: JobState, **kw: object) -> JobReport:
    base: dict[str, object] = {
        "job_id": 7,
        "state": state,
        "dataset_name": "elena @everyone",
        "trigger_word": "ohwx<@&555>",
        "preset": "sdxl-face",
        "requester_id": 4000,
        "cost_usd": Decimal("0.1449"),
        "budget_usd": Decimal("5"),
        "step": 1500,
        "total_steps": 1500,
        "elapsed": timedelta(minutes=51),
        "gpu_type": "NVIDIA RTX A5000",
        "engine": "dlib-resnet128-v1",
        "ceiling": 0.95,
        "best": BestCheckpoint(1000, 0.912, 96.0, 1.0, 2),
        "checkpoints": 6,
        "reviewer_role_id": 2100,
        "approvals_required": 2,
    }
    base.update(kw)
    return JobReport(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["@everyone look", "hi @here", "@EveryOne", "<@123456>", "<@!123456>", "<@&987>", "a@everyone<@&1><@2>"],
)
def test_neutralise_breaks_every_mention(text: str) -> None:
    safe = neutralise(text)
    assert not MENTION.search(safe)
    assert safe.replace(ZWSP, "") == text  # reads the same


def test_plain_text_is_untouched() -> None:
    assert neutralise("mail me at a@b.c, <3 and <#123>") == "mail me at a@b.c, <3 and <#123>"


def test_inline_and_code_block() -> None:
    assert inline("**bold** @here\nline") == "\\*\\*bold\\*\\* @" + ZWSP + "here line"
    block = code_block(["ok", "```<@1> escape```", "x" * 400])
    assert block.startswith("```\n") and block.endswith("\n```") and block.count("```") == 2
    assert not MENTION.search(block)
    assert len(code_block([f"line {i}" for i in range(500)], limit=100)) < 130  # the last lines, bounded


def _pings(content: str) -> set[str]:
    return set(MENTION.findall(content))


def test_success_summary_pings_only_the_requester_and_reviewers() -> None:
    notice = job_summary(_report(JobState.SUCCEEDED))
    assert _pings(notice.content) == {"<@4000>", "<@&2100>"}
    assert notice.mention_user_ids == (4000,) and notice.mention_role_ids == (2100,)
    assert "step 1000" in notice.content and "0.912" in notice.content and "96%" in notice.content
    assert "$0.14 of $5.00" in notice.content and "51 min" in notice.content
    assert "✅" in notice.content and "2 reviewers" in notice.content


def test_failure_summary_shows_the_cause_and_last_log_lines_safely() -> None:
    notice = job_summary(
        _report(
            JobState.FAILED,
            error="CUDA out of memory @here",
            best=None,
            last_log=["step 10/1500 loss 0.1", "RuntimeError: CUDA OOM <@&1>"],
        )
    )
    assert _pings(notice.content) == {"<@4000>"}
    assert notice.mention_role_ids == ()
    assert "Cause: CUDA out of memory" in notice.content and "RuntimeError" in notice.content


def test_cancel_budget_and_no_gpu_summaries() -> None:
    cancelled = job_summary(_report(JobState.CANCELLED, cancelled_by=4001))
    assert "cancelled by <@4001>" in cancelled.content
    assert cancelled.mention_user_ids == (4000,)  # the canceller is named, not pinged
    budget = job_summary(_report(JobState.BUDGET_STOPPED, cost_usd=Decimal("5.0012")))
    assert "budget reached" in budget.content and "$5.00 of the $5.00 budget" in budget.content
    no_gpu = job_summary(
        _report(JobState.FAILED, error="No GPU available: RTX A5000", best=None, checkpoints=0)
    )
    assert "could not start" in no_gpu.content and "no GPU available" in no_gpu.content
    with pytest.raises(ValueError):
        job_summary(_report(JobState.TRAINING))


def test_summaries_fit_a_discord_message() -> None:
    notice = job_summary(
        _report(JobState.FAILED, error="x" * 5000, last_log=["y" * 299] * 50, dataset_name="d" * 500)
    )
    assert len(notice.content) <= MESSAGE_LIMIT
    assert notice.content.count("```") % 2 == 0


def test_no_face_summary() -> None:
    notice = job_summary(_report(JobState.SUCCEEDED, best=None))
    assert "No face was found" in notice.content and "✅" not in notice.content


def test_checkpoint_caption() -> None:
    caption = checkpoint_caption(
        step=500,
        total_steps=1500,
        score_mean=0.7,
        score_max=0.8,
        face_share=0.75,
        ceiling=0.875,
        engine="dlib-resnet128-v1",
        prompts=["ohwx woman @everyone", "beach"],
    )
    assert (
        "step 500/1500" in caption
        and "0.700" in caption
        and "(ceiling 0.875)" in caption
        and "75%" in caption
    )
    # The verdict leads when there is one; the raw numbers follow it.
    with_verdict = checkpoint_caption(
        step=500,
        total_steps=1500,
        score_mean=0.7,
        score_max=0.8,
        face_share=0.75,
        ceiling=0.875,
        engine="dlib-resnet128-v1",
        verdict="recognised as elena in 1 of 4 samples · likeness 40% of the dataset's ceiling · rising",
        peak="likeness is falling after its peak at step 250 (80% → 60% of the ceiling): keep step 250",
    )
    first, second, third = with_verdict.splitlines()[:3]
    assert first == (
        "**Checkpoint step 500/1500**: recognised as elena in 1 of 4 samples · "
        "likeness 40% of the dataset's ceiling · rising."
    )
    assert second.startswith("face similarity mean 0.700") and "React" in second
    assert third.startswith("⚠️ likeness is falling after its peak at step 250") and "keep step 250" in third
    assert not MENTION.search(caption)
    none = checkpoint_caption(
        step=500, total_steps=0, score_mean=None, score_max=None, face_share=0.0, ceiling=None, engine=None
    )
    assert "no face found" in none


def test_a_reposted_row_points_votes_to_the_original_row() -> None:
    kwargs = {
        "step": 8,
        "total_steps": 12,
        "score_mean": 0.9,
        "score_max": 0.95,
        "face_share": 1.0,
        "ceiling": 0.97,
        "engine": "dlib",
    }
    assert "React 👍 / 👎 to vote." in checkpoint_caption(**kwargs)  # type: ignore[arg-type]
    reposted = checkpoint_caption(**kwargs, votes_here=False)  # type: ignore[arg-type]
    assert "React" not in reposted
    assert "on the row posted at the checkpoint" in reposted
