"""Choosing the best checkpoint, and deciding when training has stopped improving (pure functions).

Ranking: only checkpoints in whose samples a face was found are candidates. A checkpoint whose samples
mostly copy training photos (memorising, see ``bot.review.verdict``) ranks after every one that does
not: its likeness is the photos', not a learned one. Then they are ordered by mean face similarity **at
the precision shown to people** (3 decimals: two scores that read the same are a tie), then by
reviewers' net votes (👍 − 👎), then by the max similarity, then the earlier step (fewer steps means
less over-fitting for the same likeness).

Early stop: "the mean similarity has not improved for ``patience`` checkpoints" — the best so far was
reached ``patience`` or more checkpoints ago. Improvements smaller than ``min_delta`` do not count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

SCORE_DECIMALS = 3


@dataclass(frozen=True, slots=True)
class Standing:
    """What ranking needs to know about one checkpoint."""

    step: int
    score_mean: float | None
    score_max: float | None = None
    face_share: float | None = None
    up: int = 0
    down: int = 0
    checkpoint_id: int | None = None
    memorising: bool = False

    @property
    def net_votes(self) -> int:
        return self.up - self.down

    @property
    def has_face(self) -> bool:
        return (
            self.score_mean is not None
            and math.isfinite(self.score_mean)
            and (self.face_share is None or self.face_share > 0)
        )


def _rank_key(standing: Standing) -> tuple[bool, float, int, float, int]:
    assert standing.score_mean is not None
    return (
        not standing.memorising,
        round(standing.score_mean, SCORE_DECIMALS),
        standing.net_votes,
        standing.score_max if standing.score_max is not None else -math.inf,
        -standing.step,
    )


def rank(standings: Sequence[Standing]) -> list[Standing]:
    """Candidates (a face was found) best first; checkpoints without any face are left out."""
    return sorted((s for s in standings if s.has_face), key=_rank_key, reverse=True)


def best(standings: Sequence[Standing]) -> Standing | None:
    """The best checkpoint, or None when no checkpoint's samples showed a face."""
    ranked = rank(standings)
    return ranked[0] if ranked else None


@dataclass(frozen=True, slots=True)
class EarlyStopDecision:
    """Whether to stop, and why (``reason`` is a plain sentence for the channel)."""

    stop: bool
    best_step: int | None
    best_score: float | None
    checkpoints_since_best: int
    reason: str


def early_stop(
    history: Sequence[tuple[int, float | None]], patience: int | None, *, min_delta: float = 0.0
) -> EarlyStopDecision:
    """Decide from ``(step, mean similarity)`` per checkpoint (in any order) whether training should stop.

    A checkpoint with no face (None) counts as "not improved" once some face has been seen; before that
    nothing stops. ``patience`` None or < 1 disables early stop.
    """
    ordered = sorted(history, key=lambda item: item[0])
    best_step: int | None = None
    best_score: float | None = None
    since = 0
    for step, score in ordered:
        if (
            score is not None
            and math.isfinite(score)
            and (best_score is None or score > best_score + min_delta)
        ):
            best_step, best_score, since = step, score, 0
        else:
            since += 1
    if not patience or patience < 1:
        return EarlyStopDecision(False, best_step, best_score, since, "early stop is off")
    if best_score is None:
        # Nothing to compare with: early in a run no face is normal (the model has not learned one yet).
        # A run that never draws a face is stopped by its budget and deadline, not by this rule.
        return EarlyStopDecision(False, None, None, since, "no face found yet")
    if since >= patience:
        reason = (
            f"face similarity has not improved for {since} checkpoint{'s' if since != 1 else ''} "
            f"(best {best_score:.3f} at step {best_step}, patience {patience})"
        )
        return EarlyStopDecision(True, best_step, best_score, since, reason)
    return EarlyStopDecision(
        False,
        best_step,
        best_score,
        since,
        f"improving (best {best_score:.3f} at step {best_step}, {since}/{patience})",
    )


def money_saved(
    remaining_steps: int, steps_per_second: float | None, price_per_hour: Decimal | None
) -> Decimal | None:
    """The cost of the steps not run: remaining steps ÷ rate × price per second, in dollars, rounded to
    a hundredth of a cent (a short run's saving is under a cent; ``usd`` shows it as ``$0.0012``).

    None when the rate or price is unknown.
    """
    if price_per_hour is None or steps_per_second is None or not math.isfinite(steps_per_second):
        return None
    if steps_per_second <= 0:
        return None
    seconds = Decimal(max(remaining_steps, 0)) / Decimal(str(steps_per_second))
    return (seconds * price_per_hour / Decimal(3600)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
