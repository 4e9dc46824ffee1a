"""Is the face being learned? The verdict on a checkpoint, the trend, the alarm rule, copies (pure).

A person reads three things at a glance on every checkpoint row, the chart and the summary:

- **recognised**: "recognised as elena in 1 of 4 samples" — a sample counts when its best face is at or
  above the engine's same-person threshold (``EngineProfile.same_person``), the rule curation uses to
  call two photos the same person;
- **likeness**: the mean face similarity as a share of the dataset's own ceiling (the mean similarity
  of the person's photos to each other), on the scale of ``bot.review.grid.likeness_pct`` where 0 % is
  what a stranger typically scores with this engine. Rounded *down* and capped: "97% of the dataset's
  ceiling", and at or above the ceiling "at the dataset's own ceiling" — never "101%";
- **trend** since the last checkpoints: rising, flat or falling.

The alarm (``alarm_due``) answers the studio's question early: by the ``checkpoint``-th checkpoint or
``fraction`` of the steps (whichever comes first; per preset and per job), if the face is recognised in
few or none of the samples while the loss is not rising — training "works" but learns the rest — the
requester is told while most of the money is still unspent.

Memorisation: a sample whose face *and* picture are near-copies of one training photo (``is_copy``)
is a copy, not a generated likeness; a checkpoint whose samples are mostly copies is memorising, and
ranking prefers the best likeness that does not copy (``bot.review.ranking``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bot.faces.engines import profile_for
from bot.faces.report import SAME_PICTURE_BITS
from bot.review.grid import likeness_pct
from bot.text import plural

Trend = Literal["rising", "flat", "falling"]

# "Few" samples: at most this share recognised (1 of 4, 2 of 8) counts as the face not coming.
FEW_RECOGNISED = 0.25
# A likeness change smaller than this many points of the ceiling is "flat". dlib cosines are compressed
# (strangers score 0.74-0.90 against a ceiling of ~0.96), so one point is already a visible change.
TREND_POINTS = 1.0
# How many earlier checkpoints the trend compares with (their mean).
TREND_WINDOW = 2
# Likeness this many points below its peak, at a later checkpoint, is "falling after a peak".
PEAK_DROP_POINTS = 2.0
# A checkpoint is memorising when at least this share of its samples with a face are copies.
MEMORISING_SHARE = 0.5
# The loss counts as rising (a broken run, not the alarm's case) above this multiple of its first reading.
LOSS_RISING = 1.25
# The alarm's defaults (a preset's [preset] face_alarm_checkpoint / face_alarm_fraction override them).
ALARM_CHECKPOINT = 2
ALARM_FRACTION = 0.3


def is_memorising(copies: int, faces: int) -> bool:
    """Most of a checkpoint's samples with a face copy a training photo."""
    return faces > 0 and copies / faces >= MEMORISING_SHARE


def same_person_threshold(engine: str | None) -> float | None:
    """The engine's same-person threshold; None for an engine with no known profile."""
    if engine is None:
        return None
    try:
        return profile_for(engine).same_person
    except ValueError:
        return None


def is_recognised(similarity: float | None, engine: str | None) -> bool:
    """The engine's same-person rule, applied to a sample's best face."""
    threshold = same_person_threshold(engine)
    if similarity is None or threshold is None or not math.isfinite(similarity):
        return False
    return similarity >= threshold


def share_of_ceiling(similarity: float | None, ceiling: float | None, engine: str | None) -> float | None:
    """Likeness in points: 0 = what a stranger typically scores with this engine, 100 = the dataset's
    ceiling (see ``bot.review.grid.likeness_pct``: raw cosines of some engines are compressed, so a
    plain ratio would put a stranger at 85 %). None when unknown."""
    if similarity is None or ceiling is None or not math.isfinite(similarity) or not math.isfinite(ceiling):
        return None
    return likeness_pct(similarity, ceiling, engine)


def likeness_text(similarity: float | None, ceiling: float | None, engine: str | None) -> str:
    """ "likeness 87% of the dataset's ceiling" / "… at the dataset's own ceiling" / "" when unknown."""
    return _likeness_in_words(
        share_of_ceiling(similarity, ceiling, engine),
        at_ceiling="likeness at the dataset's own ceiling (or above)",
        stranger="likeness of a stranger (0% of the dataset's ceiling)",
        share="likeness {}% of the dataset's ceiling",
    )


def likeness_short(similarity: float | None, ceiling: float | None, engine: str | None) -> str:
    """For image labels: "87% of ceiling", "at ceiling", "0% of ceiling", or ""."""
    return _likeness_in_words(
        share_of_ceiling(similarity, ceiling, engine),
        at_ceiling="at ceiling",
        stranger="0% of ceiling",
        share="{}% of ceiling",
    )


def _likeness_in_words(points: float | None, *, at_ceiling: str, stranger: str, share: str) -> str:
    if points is None:
        return ""
    if points >= 100.0:
        return at_ceiling
    if points <= 0.0:
        return stranger
    # Rounded down: 99.7 must not read "100%", which would claim the ceiling.
    return share.format(math.floor(points))


@dataclass(frozen=True, slots=True)
class CheckpointVerdict:
    """What one checkpoint's samples say about the face."""

    step: int
    samples: int  # samples scored
    faces: int  # samples in which a face was found
    recognised: int  # samples recognised as the person
    mean: float | None  # mean similarity over the samples with a face
    ceiling: float | None
    engine: str | None = None
    copies: int = 0  # samples that copy a training photo
    trend: Trend | None = None  # None at the first checkpoint

    @property
    def likeness(self) -> float | None:
        return share_of_ceiling(self.mean, self.ceiling, self.engine)

    @property
    def recognised_share(self) -> float:
        return self.recognised / self.samples if self.samples else 0.0

    @property
    def memorising(self) -> bool:
        return is_memorising(self.copies, self.faces)

    @property
    def few_recognised(self) -> bool:
        return self.recognised_share <= FEW_RECOGNISED

    def recognised_text(self, dataset: str) -> str:
        """ "recognised as elena in 1 of 4 samples" (``dataset`` is shown as given: the caller escapes it)."""
        text = f"recognised as {dataset} in {self.recognised} of {plural(self.samples, 'sample')}"
        if self.faces < self.samples:
            missing = self.samples - self.faces
            text += f" (no face in {missing})"
        return text

    def text(self, dataset: str) -> str:
        """The verdict as one clause: recognised, likeness, trend, copies."""
        parts = [self.recognised_text(dataset)]
        likeness = likeness_text(self.mean, self.ceiling, self.engine)
        if likeness:
            parts.append(likeness)
        if self.trend is not None:
            parts.append(self.trend)
        if self.copies:
            what = "memorising: " if self.memorising else ""
            parts.append(f"{what}{self.copies} of {self.samples} copy a training photo")
        return " · ".join(parts)


def _metric(verdict: CheckpointVerdict) -> float:
    # No face at all reads as a stranger's likeness (0): a checkpoint that lost the face is not better.
    likeness = verdict.likeness
    if likeness is not None:
        return max(0.0, likeness)
    return 100.0 * verdict.mean if verdict.mean is not None and verdict.ceiling is None else 0.0


def trend_of(previous: Sequence[CheckpointVerdict], current: CheckpointVerdict) -> Trend | None:
    """Rising / flat / falling: this checkpoint's likeness against the mean of the last ones."""
    window = [v for v in previous if v.step < current.step][-TREND_WINDOW:]
    if not window:
        return None
    before = sum(_metric(v) for v in window) / len(window)
    delta = _metric(current) - before
    if delta > TREND_POINTS:
        return "rising"
    if delta < -TREND_POINTS:
        return "falling"
    # Same likeness but more samples recognised is progress a person would call rising.
    recognised_before = sum(v.recognised_share for v in window) / len(window)
    if current.recognised_share > recognised_before:
        return "rising"
    if current.recognised_share < recognised_before:
        return "falling"
    return "flat"


def verdict_from_payload(payload: Mapping[str, Any], ceiling: float | None) -> CheckpointVerdict:
    """A verdict from a ``checkpoint_scored`` event payload (see ``bot.review.service``)."""
    samples = int(payload.get("samples") or 0)
    face_share = payload.get("face_share")
    faces = payload.get("faces")
    if faces is None:
        faces = round(float(face_share) * samples) if face_share is not None and samples else 0
    return CheckpointVerdict(
        step=int(payload["step"]),
        samples=samples,
        faces=int(faces),
        recognised=int(payload.get("recognised") or 0),
        mean=payload.get("mean"),
        ceiling=ceiling,
        engine=payload.get("engine"),
        copies=len(payload.get("copies") or ()),
    )


def verdicts(history: Mapping[int, Mapping[str, Any]], ceiling: float | None) -> list[CheckpointVerdict]:
    """Every scored checkpoint's verdict, by step, each with its trend since the ones before."""
    plain = [verdict_from_payload(history[step], ceiling) for step in sorted(history)]
    out: list[CheckpointVerdict] = []
    for verdict in plain:
        out.append(
            CheckpointVerdict(
                step=verdict.step,
                samples=verdict.samples,
                faces=verdict.faces,
                recognised=verdict.recognised,
                mean=verdict.mean,
                ceiling=verdict.ceiling,
                engine=verdict.engine,
                copies=verdict.copies,
                trend=trend_of(out, verdict),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Peak:
    """Likeness fell after a peak: keep the peak's checkpoint."""

    step: int
    likeness: float
    now: float

    def text(self) -> str:
        peak, now = math.floor(min(self.likeness, 100.0)), math.floor(min(self.now, 100.0))
        return (
            f"likeness is falling after its peak at step {self.step} "
            f"({peak}% → {now}% of the ceiling): keep step {self.step}"
        )


def fell_after_peak(history: Sequence[CheckpointVerdict]) -> Peak | None:
    """The peak checkpoint (not memorising) when the latest likeness is clearly below it."""
    candidates = [v for v in history if not v.memorising and v.faces]
    if len(history) < 2 or not candidates:
        return None
    peak = max(candidates, key=lambda v: (_metric(v), -v.step))
    latest = history[-1]
    if peak.step >= latest.step:
        return None
    if _metric(peak) - _metric(latest) < PEAK_DROP_POINTS:
        return None
    return Peak(peak.step, _metric(peak), _metric(latest))


# -- the alarm ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    """When to judge whether the face is coming: at the ``checkpoint``-th checkpoint or at ``fraction``
    of the steps, whichever is reached first."""

    checkpoint: int = ALARM_CHECKPOINT
    fraction: float = ALARM_FRACTION

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> AlarmPolicy:
        """From a job's ``params["face_alarm"]`` (set from the preset and the job's overrides)."""
        raw = (params or {}).get("face_alarm") or {}
        checkpoint = raw.get("checkpoint", ALARM_CHECKPOINT)
        fraction = raw.get("fraction", ALARM_FRACTION)
        try:
            return cls(max(1, int(checkpoint)), min(1.0, max(0.0, float(fraction))))
        except (TypeError, ValueError):
            return cls()

    def reached(self, checkpoints_so_far: int, step: int, total_steps: int) -> bool:
        by_fraction = total_steps > 0 and step >= self.fraction * total_steps
        return checkpoints_so_far >= self.checkpoint or by_fraction


@dataclass(frozen=True, slots=True)
class LossTrend:
    first: float | None
    last: float | None

    @property
    def known(self) -> bool:
        return self.first is not None and self.last is not None and self.first != self.last

    @property
    def rising(self) -> bool:
        # A quarter of slack: a diffusion run's loss is noisy from step to step (the timestep drawn
        # matters more than the learning), so two readings differ by 10 % and more either way; a
        # broken run's loss climbs by multiples or turns NaN.
        return (
            self.first is not None
            and self.last is not None
            and (not math.isfinite(self.last) or self.last > self.first * LOSS_RISING)
        )

    def text(self) -> str:
        if self.first is None or self.last is None:
            return "the loss is not known yet"
        if not math.isfinite(self.last):
            return "the loss is NaN"
        if self.first == self.last:
            return f"loss {self.last:.3f}"
        word = "falling" if self.last < self.first else ("rising" if self.rising else "about flat")
        return f"the loss is {word} ({self.first:.3f} → {self.last:.3f})"


@dataclass(frozen=True, slots=True)
class AlarmDecision:
    """The alarm fires: the face is not coming while training goes on."""

    verdict: CheckpointVerdict
    loss: LossTrend
    checkpoints: int
    policy: AlarmPolicy


def loss_trend(history: Mapping[int, Mapping[str, Any]]) -> LossTrend:
    losses = [
        float(history[step]["loss"]) for step in sorted(history) if history[step].get("loss") is not None
    ]
    if not losses:
        return LossTrend(None, None)
    return LossTrend(losses[0], losses[-1])


def alarm_due(
    history: Mapping[int, Mapping[str, Any]],
    ceiling: float | None,
    *,
    total_steps: int,
    policy: AlarmPolicy,
) -> AlarmDecision | None:
    """Whether the latest checkpoint calls for the alarm (the caller makes sure it fires once).

    Judged from the policy's point on, at each checkpoint until it fires: the face recognised in few or
    no samples (and never better before: a face that was learned and fades is over-training, which
    ``fell_after_peak`` calls out), and the loss not rising (a rising or NaN loss is a broken run,
    which fails on its own).
    """
    if not history:
        return None
    all_verdicts = verdicts(history, ceiling)
    latest = all_verdicts[-1]
    if not policy.reached(len(all_verdicts), latest.step, total_steps):
        return None
    if latest.samples == 0 or not latest.few_recognised:
        return None
    if any(not v.few_recognised for v in all_verdicts[:-1]):
        return None  # the face was learned and is being lost: the peak call-out's case, not this one
    loss = loss_trend(history)
    if loss.rising:
        return None
    return AlarmDecision(latest, loss, len(all_verdicts), policy)


# -- copies of training photos -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainingPhoto:
    """What the copy check needs of one training photo: its number, picture hash and face embedding."""

    position: int
    phash: str | None
    embedding: np.ndarray | None


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def copied_photo(
    phash: str | None,
    embedding: np.ndarray | None,
    photos: Sequence[TrainingPhoto],
    engine: str,
) -> int | None:
    """The position of the training photo this sample is a near-copy of (face and picture), or None.

    Both must agree: the same face alone is what a good LoRA draws in new pictures, and the same
    framing alone is a pose, not a copy.
    """
    if phash is None or embedding is None:
        return None
    near = profile_for(engine).near_duplicate
    best: tuple[int, int] | None = None
    for photo in photos:
        if photo.phash is None or photo.embedding is None:
            continue
        distance = hamming(phash, photo.phash)
        if distance > SAME_PICTURE_BITS:
            continue
        if float(np.dot(embedding, photo.embedding)) < near:
            continue
        if best is None or distance < best[0]:
            best = (distance, photo.position)
    return best[1] if best is not None else None
