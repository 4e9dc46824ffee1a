"""Message texts for the end of a run and for review events (design §2 steps 7–8), free of Discord.

The cog turns a :class:`Notice` into a message and passes ``allowed_mentions`` built from
``mention_user_ids``/``mention_role_ids``, so only the requester and the reviewer role can be pinged.
Text that users wrote (dataset names, trigger words, captions, prompts, log lines, error text) is
neutralised here as well — belt and braces: ``@everyone``, ``@here`` and ``<@…>``/``<@!…>``/``<@&…>``
get a zero-width space that stops Discord from reading them as mentions, and Markdown is escaped
where the text sits inline. Every content fits Discord's 2 000 characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from bot.training.money import usd
from storage.models import JobState

MESSAGE_LIMIT = 2000
ZWSP = "\u200b"

_EVERYONE_HERE = re.compile(r"@(everyone|here)", re.IGNORECASE)
_ANGLE_MENTION = re.compile(r"<(?=@)")
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]])")


def neutralise(text: str) -> str:
    """Make user-written text unable to mention anyone: ``@everyone``, ``@here``, ``<@id>``/``<@&id>``
    are broken
    with a zero-width space (they still read the same)."""
    text = _EVERYONE_HERE.sub(lambda m: "@" + ZWSP + m.group(1), text)
    # "<@123>", "<@!123>" (users) and "<@&123>" (roles): "<\u200b@123>" is plain text.
    return _ANGLE_MENTION.sub("<" + ZWSP, text)


def escape_markdown(text: str) -> str:
    """Escape Markdown so a name like ``**x**`` shows as typed."""
    return _MARKDOWN.sub(r"\\\1", text)


def inline(text: str, limit: int = 100) -> str:
    """User text shown inline in a sentence: one line, clipped, no mentions, no Markdown."""
    one_line = " ".join(text.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "…"
    return escape_markdown(neutralise(one_line))


def code_block(lines: Sequence[str], limit: int = 700) -> str:
    """User/log text in a code block: neutralised, backticks defused, the last lines kept within ``limit``."""
    kept: list[str] = []
    size = 0
    for line in reversed([neutralise(line).replace("`", "ˋ") for line in lines]):
        line = line if len(line) <= 300 else line[:299] + "…"
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
    pct = (
        f" = {best.pct_of_ceiling:.0f}% of the dataset's ceiling {report.ceiling:.3f}"
        if (best.pct_of_ceiling is not None and report.ceiling is not None)
        else ""
    )
    share = f", face in {best.face_share:.0%} of samples" if best.face_share is not None else ""
    votes = f", votes {best.net_votes:+d}" if best.net_votes else ""
    engine = f" ({report.engine})" if report.engine else ""
    similarity = f"face similarity {best.score_mean:.3f}{engine}"
    return f"Best checkpoint: **step {best.step}**, {similarity}{pct}{share}{votes}."


def _reviewers(report: JobReport) -> tuple[str, tuple[int, ...]]:
    if report.reviewer_role_id is None:
        return "", ()
    return f"<@&{report.reviewer_role_id}> ", (report.reviewer_role_id,)


def success_summary(report: JobReport) -> Notice:
    """The summary when training finished: best checkpoint, cost, time, and how to approve."""
    mention, roles = _reviewers(report)
    lines = [_head(report, "finished"), _facts(report), _best_line(report)]
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
) -> str:
    """The text posted with a checkpoint's grid row (reviewers react 👍/👎 on it).

    ``votes_here`` is False for a re-posted row: votes count only on the row posted at the checkpoint.
    """
    where = f"Checkpoint step {step}/{total_steps}" if total_steps else f"Checkpoint step {step}"
    if score_mean is None:
        score = "no face found in any sample"
    else:
        pct = f" ({100 * score_mean / ceiling:.0f}% of ceiling {ceiling:.3f})" if ceiling else ""
        best = f", max {score_max:.3f}" if score_max is not None else ""
        score = f"face similarity mean {score_mean:.3f}{pct}{best}"
    share = f", face in {face_share:.0%} of samples" if face_share is not None else ""
    engine_text = f" [{engine}]" if engine else ""
    vote = (
        "React 👍 / 👎 to vote." if votes_here else "Vote with 👍 / 👎 on the row posted at the checkpoint."
    )
    lines = [f"**{where}**: {score}{share}{engine_text}. {vote}"]
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
