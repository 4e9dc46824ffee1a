"""Message texts for the end of a run and for review events (design §2 steps 7–8), free of Discord.

The cog turns a :class:`Notice` into a message and passes ``allowed_mentions`` built from
``mention_user_ids``/``mention_role_ids``, so only the requester and the reviewer role can be pinged.
Text that users wrote (dataset names, trigger words, captions, prompts, log lines, error text) is
neutralised here as well — belt and braces: ``@everyone``, ``@here`` and ``<@…>``/``<@!…>``/``<@&…>``
get a zero-width space that stops Discord from reading them as mentions, and Markdown is escaped
where the text sits inline. Every content fits Discord's 2 000 characters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from bot.text import ZWSP as ZWSP  # re-exported: tests and callers import it from here
from bot.text import escape_markdown as text_escape_markdown
from bot.text import no_mentions, plain, truncate, visible
from bot.training.money import usd
from storage.models import JobState

MESSAGE_LIMIT = 2000


def neutralise(text: str) -> str:
    """User-written text that can mention no one and carries no control or bidi characters (the rules
    live in :mod:`bot.text`, the one home for showing user text)."""
    return no_mentions(visible(text, keep_newlines=True))


def escape_markdown(text: str) -> str:
    """Escape Markdown so a name like ``**x**`` shows as typed."""
    return text_escape_markdown(text)


def inline(text: str, limit: int = 100) -> str:
    """User text shown inline in a sentence: one line, clipped, no mentions, no Markdown."""
    return plain(" ".join(text.split()), limit)


def code_block(lines: Sequence[str], limit: int = 700) -> str:
    """User/log text in a code block: neutralised, backticks defused, the last lines kept within ``limit``."""
    kept: list[str] = []
    size = 0
    for line in reversed([neutralise(line).replace("`", "ˋ") for line in lines]):
        line = truncate(line, 300)
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    if not kept:
        return ""
    return "```\n" + "\n".join(reversed(kept)) + "\n```"


def money(amount: Decimal | None) -> str:
    if amount is None:
        return "unknown"
    return usd(amount)


def duration(value: timedelta | None) -> str:
    if value is None:
        return "unknown"
    minutes = int(value.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{int(value.total_seconds())} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Fit ``text`` into a message, keeping code fences balanced."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2] + "…"
    if cut.count("```") % 2:
        cut = text[: limit - 6] + "…\n```"
    return cut


@dataclass(frozen=True, slots=True)
class Notice:
    """A message text plus the only ids it may ping (the cog's ``allowed_mentions``)."""

    content: str
    mention_user_ids: tuple[int, ...] = ()
    mention_role_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BestCheckpoint:
    step: int
    score_mean: float
    pct_of_ceiling: float | None
    face_share: float | None
    net_votes: int = 0
    verdict: str | None = None  # "recognised as elena in 3 of 4 samples · likeness 96% of …"


@dataclass(frozen=True, slots=True)
class JobReport:
    """What the end-of-run message says. Strings here may be user-written: they are neutralised when shown."""

    job_id: int
    state: JobState
    dataset_name: str
    trigger_word: str
    preset: str
    requester_id: int
    cost_usd: Decimal
    budget_usd: Decimal
    step: int = 0
    total_steps: int = 0
    elapsed: timedelta | None = None
    gpu_type: str | None = None
    engine: str | None = None
    ceiling: float | None = None
    best: BestCheckpoint | None = None
    checkpoints: int = 0
    error: str | None = None
    last_log: Sequence[str] = field(default_factory=tuple)
    reviewer_role_id: int | None = None
    approvals_required: int = 1
    early_stop_reason: str | None = None
    money_saved: Decimal | None = None
    cancelled_by: int | None = None
    last_verdict: str | None = None  # the last checkpoint's verdict, when it is not the best
    peak: str | None = None  # "likeness is falling after its peak at step 8 …: keep step 8"
    memorising_steps: Sequence[int] = field(default_factory=tuple)
    suggestions: Sequence[str] = field(default_factory=tuple)  # what to change (a poor or failed run)


def _head(report: JobReport, verb: str) -> str:
    trigger = neutralise(report.trigger_word).replace("`", "ˋ")
    return (
        f"<@{report.requester_id}> training job #{report.job_id} for **{inline(report.dataset_name, 40)}** "
        f"(trigger `{trigger}`, preset {inline(report.preset, 40)}) {verb}."
    )


def _facts(report: JobReport) -> str:
    parts = [f"steps {report.step}/{report.total_steps}" if report.total_steps else f"step {report.step}"]
    parts.append(f"time {duration(report.elapsed)}")
    parts.append(f"cost {money(report.cost_usd)} of {money(report.budget_usd)} budget")
    if report.gpu_type:
        parts.append(f"GPU {inline(report.gpu_type, 40)}")
    return " · ".join(parts)


def _best_line(report: JobReport) -> str:
    best = report.best
    if best is None:
        if report.checkpoints:
            return f"No face was found in the samples of any of the {report.checkpoints} checkpoints."
        return "No checkpoint was saved."
    share = ""
    if best.pct_of_ceiling is not None and report.ceiling is not None and best.verdict is None:
        # Rounded down and capped: at or above the ceiling reads as such, never "101%".
        share = (
            f" = at the dataset's own ceiling {report.ceiling:.3f} (or above)"
            if best.pct_of_ceiling >= 100
            else f" = {math.floor(best.pct_of_ceiling)}% of the dataset's ceiling {report.ceiling:.3f}"
        )
    faces = f", face in {best.face_share:.0%} of samples" if best.face_share is not None else ""
    votes = f", votes {best.net_votes:+d}" if best.net_votes else ""
    engine = f" ({report.engine})" if report.engine else ""
    similarity = f"face similarity {best.score_mean:.3f}{engine}"
    verdict = f"{best.verdict}; " if best.verdict else ""
    return f"Best checkpoint: **step {best.step}**: {verdict}{similarity}{share}{faces}{votes}."


def _verdict_lines(report: JobReport) -> list[str]:
    lines: list[str] = []
    if report.last_verdict:
        lines.append(f"Last checkpoint: {report.last_verdict}.")
    if report.peak:
        lines.append(f"Over-training: {report.peak}.")
    if report.memorising_steps:
        steps = ", ".join(str(step) for step in report.memorising_steps)
        lines.append(
            f"Memorising at step{'s' if len(report.memorising_steps) != 1 else ''} {steps}: most samples "
            "copy a training photo; the best checkpoint is chosen among those that do not."
        )
    lines.extend(report.suggestions)
    return lines


def _reviewers(report: JobReport) -> tuple[str, tuple[int, ...]]:
    if report.reviewer_role_id is None:
        return "", ()
    return f"<@&{report.reviewer_role_id}> ", (report.reviewer_role_id,)


def success_summary(report: JobReport) -> Notice:
    """The summary when training finished: best checkpoint, cost, time, and how to approve."""
    mention, roles = _reviewers(report)
    lines = [_head(report, "finished"), _facts(report), _best_line(report), *_verdict_lines(report)]
    if report.early_stop_reason:
        saved = f" (saved about {money(report.money_saved)})" if report.money_saved is not None else ""
        lines.append(f"Stopped early: {neutralise(report.early_stop_reason)}{saved}.")
    if report.best is not None:
        need = report.approvals_required
        lines.append(
            f"{mention}react 👍/👎 on the grid rows to vote; ✅ on this message from {need} reviewer"
            f"{'s' if need != 1 else ''} approves step {report.best.step} and delivers it."
        )
    return Notice(clip("\n".join(lines)), (report.requester_id,), roles)


def failure_summary(report: JobReport) -> Notice:
    """Training failed: the cause (error text and the last log lines) and what it cost."""
    cause = inline(report.error or "unknown error", 300)
    lines = [_head(report, "failed"), f"Cause: {cause}", _facts(report)]
    if report.checkpoints:
        lines.append(_best_line(report))
    lines.extend(_verdict_lines(report))
    log = code_block(report.last_log)
    if log:
        lines.append("Last log lines:")
        lines.append(log)
    return Notice(clip("\n".join(lines)), (report.requester_id,))


def no_gpu_summary(report: JobReport) -> Notice:
    """No GPU of the requested kind was available: nothing ran and nothing (or little) was spent."""
    detail = f" ({inline(report.error, 200)})" if report.error else ""
    lines = [
        _head(report, "could not start"),
        f"Cause: no GPU available{detail}. Try again later or another preset.",
        f"cost {money(report.cost_usd)}",
    ]
    return Notice(clip("\n".join(lines)), (report.requester_id,))


def cancel_summary(report: JobReport) -> Notice:
    """Someone cancelled the run: who, how far it got, and the best checkpoint so far if any."""
    by = f" by <@{report.cancelled_by}>" if report.cancelled_by is not None else ""
    lines = [_head(report, f"was cancelled{by}"), _facts(report)]
    if report.checkpoints:
        lines.append(_best_line(report))
    lines.extend(_verdict_lines(report))
    users = (report.requester_id,)
    return Notice(clip("\n".join(lines)), users)


def budget_stop_summary(report: JobReport) -> Notice:
    """The budget was reached and the pod stopped: spend, budget, and what was kept."""
    lines = [
        _head(report, "was stopped: budget reached"),
        f"Spent {money(report.cost_usd)} of the {money(report.budget_usd)} budget; the pod was stopped.",
        _facts(report),
    ]
    if report.checkpoints:
        lines.append(_best_line(report))
    lines.extend(_verdict_lines(report))
    if report.error:
        lines.append(f"Detail: {inline(report.error, 300)}")
    return Notice(clip("\n".join(lines)), (report.requester_id,))


def job_summary(report: JobReport) -> Notice:
    """The end-of-run message for any terminal state."""
    if report.state is JobState.SUCCEEDED:
        return success_summary(report)
    if report.state is JobState.CANCELLED:
        return cancel_summary(report)
    if report.state is JobState.BUDGET_STOPPED:
        return budget_stop_summary(report)
    if report.state is JobState.FAILED:
        if report.error and "no gpu" in report.error.lower():
            return no_gpu_summary(report)
        return failure_summary(report)
    raise ValueError(f"job #{report.job_id} is still {report.state.value}: no summary yet")


def checkpoint_caption(
    *,
    step: int,
    total_steps: int,
    score_mean: float | None,
    score_max: float | None,
    face_share: float | None,
    ceiling: float | None,
    engine: str | None,
    prompts: Sequence[str] = (),
    votes_here: bool = True,
    verdict: str | None = None,
    peak: str | None = None,
) -> str:
    """The text posted with a checkpoint's grid row (reviewers react 👍/👎 on it).

    ``verdict`` (see ``bot.review.verdict``) leads: recognised in k of n, likeness, trend. ``peak`` calls
    out likeness falling after an earlier checkpoint. ``votes_here`` is False for a re-posted row: votes
    count only on the row posted at the checkpoint.
    """
    where = f"Checkpoint step {step}/{total_steps}" if total_steps else f"Checkpoint step {step}"
    if score_mean is None:
        score = "no face found in any sample"
    else:
        best = f", max {score_max:.3f}" if score_max is not None else ""
        score = f"face similarity mean {score_mean:.3f}{best}"
        if ceiling:
            score += f" (ceiling {ceiling:.3f})"
    share = f", face in {face_share:.0%} of samples" if face_share is not None else ""
    engine_text = f" [{engine}]" if engine else ""
    vote = (
        "React 👍 / 👎 to vote." if votes_here else "Vote with 👍 / 👎 on the row posted at the checkpoint."
    )
    head = f"**{where}**: {verdict}." if verdict else f"**{where}**:"
    lines = [head if verdict else f"**{where}**: {score}{share}{engine_text}. {vote}"]
    if verdict:
        lines.append(f"{score}{share}{engine_text}. {vote}")
    if peak:
        lines.append(f"⚠️ {peak}.")
    for number, prompt in enumerate(prompts, start=1):
        # sd-scripts prompt lines end in options (" --n negative --w 512 --d 42"): show the prompt only.
        lines.append(f"{number}. {inline(prompt.split(' --', 1)[0], 150)}")
    return clip("\n".join(lines))


def approval_text(*, job_id: int, step: int, approvers: Sequence[int], promoted: bool = False) -> str:
    """Announces an approval (mentions are of approvers; the cog's allowed_mentions decides who is pinged)."""
    who = ", ".join(f"<@{user}>" for user in approvers) or "reviewers"
    how = "promoted" if promoted else "approved"
    return f"Checkpoint step {step} of job #{job_id} {how} by {who}; delivering it."


def early_stop_text(*, job_id: int, reason: str, saved: Decimal | None) -> str:
    saving = f"; this saves about {money(saved)}" if saved is not None else ""
    return f"Job #{job_id} stops early: {neutralise(reason)}{saving}."
