"""The verdict a person reads at a glance, the trend, the alarm rule, copies, and the suggestions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bot.review.ranking import Standing, best, rank
from bot.review.suggest import DatasetFacts, JobFacts, suggest
from bot.review.verdict import (
    AlarmPolicy,
    CheckpointVerdict,
    TrainingPhoto,
    alarm_due,
    copied_photo,
    fell_after_peak,
    is_recognised,
    likeness_text,
    verdicts,
)

DLIB = "dlib-resnet128-v1"
CEILING = 0.96


def scored(
    step: int, mean: float | None, recognised: int, *, loss: float = 0.1, **extra: Any
) -> dict[str, Any]:
    return {
        "step": step,
        "mean": mean,
        "max": mean,
        "face_share": 1.0 if mean is not None else 0.0,
        "engine": DLIB,
        "ceiling": CEILING,
        "samples": 4,
        "faces": 4 if mean is not None else 0,
        "recognised": recognised,
        "loss": loss,
        **extra,
    }


def test_recognised_uses_the_engines_same_person_threshold() -> None:
    assert is_recognised(0.925, DLIB) and not is_recognised(0.924, DLIB)
    assert is_recognised(0.41, "insightface-buffalo_l") and not is_recognised(0.39, "insightface-buffalo_l")
    assert not is_recognised(None, DLIB) and not is_recognised(0.99, "unknown-engine")


def test_likeness_never_reads_above_the_ceiling() -> None:
    # dlib: a stranger's typical 0.84 is 0 %, the ceiling is 100 %; rounded down, capped, said in words.
    assert likeness_text(0.975, CEILING, DLIB) == "likeness at the dataset's own ceiling (or above)"
    assert likeness_text(CEILING, CEILING, DLIB) == "likeness at the dataset's own ceiling (or above)"
    assert likeness_text(0.9595, CEILING, DLIB) == "likeness 99% of the dataset's ceiling"
    assert likeness_text(0.90, CEILING, DLIB) == "likeness 50% of the dataset's ceiling"
    assert likeness_text(0.80, CEILING, DLIB) == "likeness of a stranger (0% of the dataset's ceiling)"
    assert likeness_text(None, CEILING, DLIB) == ""
    assert "101" not in likeness_text(0.9696, CEILING, DLIB)


def test_verdict_text_and_trend() -> None:
    history = {
        4: scored(4, 0.85, 0),
        8: scored(8, 0.90, 1),
        12: scored(12, 0.95, 3),
        16: scored(16, 0.951, 3),
        20: scored(20, 0.91, 1),
    }
    judged = verdicts(history, CEILING)
    assert [v.trend for v in judged] == [None, "rising", "rising", "rising", "falling"]
    assert judged[1].text("elena") == (
        "recognised as elena in 1 of 4 samples · likeness 50% of the dataset's ceiling · rising"
    )
    no_face = verdicts({4: scored(4, None, 0)}, CEILING)[0]
    assert no_face.text("elena") == "recognised as elena in 0 of 4 samples (no face in 4)"
    flat = verdicts({4: scored(4, 0.9, 1), 8: scored(8, 0.9005, 1)}, CEILING)[1]
    assert flat.trend == "flat"


def test_likeness_falling_after_a_peak_names_the_checkpoint_to_keep() -> None:
    history = {4: scored(4, 0.88, 0), 8: scored(8, 0.95, 4), 12: scored(12, 0.92, 2)}
    peak = fell_after_peak(verdicts(history, CEILING))
    assert peak is not None and peak.step == 8
    assert peak.text().endswith("keep step 8")
    assert fell_after_peak(verdicts({4: scored(4, 0.88, 0), 8: scored(8, 0.95, 4)}, CEILING)) is None
    # A memorising peak is no peak to keep.
    copies = [[i, 1] for i in range(4)]
    memorised = {4: scored(4, 0.90, 1), 8: scored(8, 0.99, 4, copies=copies), 12: scored(12, 0.93, 3)}
    assert fell_after_peak(verdicts(memorised, CEILING)) is None


def test_the_alarm_waits_for_the_second_checkpoint_or_the_share_of_steps() -> None:
    policy = AlarmPolicy()  # 2nd checkpoint or 30 %
    first = {10: scored(10, 0.83, 0, loss=0.12)}
    assert alarm_due(first, CEILING, total_steps=100, policy=policy) is None  # 10 %: too early
    second = {**first, 20: scored(20, 0.83, 0, loss=0.10)}
    decision = alarm_due(second, CEILING, total_steps=100, policy=policy)
    assert decision is not None and decision.verdict.step == 20 and decision.checkpoints == 2
    assert decision.loss.text() == "the loss is falling (0.120 → 0.100)"
    # By the share of steps when checkpoints are sparse.
    sparse = {40: scored(40, None, 0, loss=0.1)}
    assert alarm_due(sparse, CEILING, total_steps=100, policy=policy) is not None
    # Configurable per preset and job.
    late = AlarmPolicy.from_params({"face_alarm": {"checkpoint": 3, "fraction": 0.5}})
    assert alarm_due(second, CEILING, total_steps=100, policy=late) is None


def test_no_alarm_when_the_face_is_recognised_or_the_loss_is_broken() -> None:
    policy = AlarmPolicy()
    learning = {10: scored(10, 0.9, 1), 20: scored(20, 0.94, 2)}
    assert alarm_due(learning, CEILING, total_steps=100, policy=policy) is None
    diverging = {10: scored(10, 0.83, 0, loss=0.1), 20: scored(20, 0.83, 0, loss=0.2)}
    assert alarm_due(diverging, CEILING, total_steps=100, policy=policy) is None
    # Step-to-step noise is not a rising loss.
    noisy = {10: scored(10, 0.83, 0, loss=0.19), 20: scored(20, 0.83, 0, loss=0.21)}
    decision = alarm_due(noisy, CEILING, total_steps=100, policy=policy)
    assert decision is not None and decision.loss.text() == "the loss is about flat (0.190 → 0.210)"
    nan = {10: scored(10, 0.83, 0, loss=0.1), 20: scored(20, 0.83, 0, loss=float("nan"))}
    assert alarm_due(nan, CEILING, total_steps=100, policy=policy) is None
    # A face that was learned and fades is over-training (the peak call-out), not "the face is not coming".
    fading = {10: scored(10, 0.95, 4), 20: scored(20, 0.86, 0)}
    assert alarm_due(fading, CEILING, total_steps=100, policy=policy) is None


def test_a_copy_needs_the_face_and_the_picture_of_one_training_photo() -> None:
    rng = np.random.default_rng(1)
    face = rng.standard_normal(128).astype(np.float32)
    face /= np.linalg.norm(face)
    other = rng.standard_normal(128).astype(np.float32)
    other /= np.linalg.norm(other)
    photos = [TrainingPhoto(3, "ffff0000ffff0000", face), TrainingPhoto(5, "0000ffff0000ffff", other)]
    assert copied_photo("ffff0000ffff0003", face, photos, DLIB) == 3  # 2 bits and the same face
    assert copied_photo("0000ffff0000ffff", face, photos, DLIB) is None  # photo 5's picture, not its face
    assert copied_photo("f0f0f0f0f0f0f0f0", face, photos, DLIB) is None  # the face in a new picture
    assert copied_photo(None, face, photos, DLIB) is None


def test_ranking_prefers_the_best_likeness_that_does_not_copy() -> None:
    standings = [
        Standing(4, 0.90, face_share=1.0),
        Standing(8, 0.95, face_share=1.0),
        Standing(12, 0.99, face_share=1.0, memorising=True),
    ]
    assert [s.step for s in rank(standings)] == [8, 4, 12]
    chosen = best(standings)
    assert chosen is not None and chosen.step == 8
    only_copies = [Standing(12, 0.99, face_share=1.0, memorising=True)]
    fallback = best(only_copies)
    assert fallback is not None and fallback.step == 12  # still shown, flagged by the summary


def test_checkpoint_memorising_when_most_samples_copy() -> None:
    assert CheckpointVerdict(8, 4, 4, 4, 0.99, CEILING, DLIB, copies=2).memorising
    assert not CheckpointVerdict(8, 4, 4, 4, 0.99, CEILING, DLIB, copies=1).memorising


def facts(**changes: Any) -> DatasetFacts:
    base: dict[str, Any] = {"name": "elena", "trigger": "ohwx", "photos": 35}
    return DatasetFacts(**{**base, **changes})


def job(**changes: Any) -> JobFacts:
    base: dict[str, Any] = {
        "preset": "sdxl-v4",
        "family": "sdxl",
        "overrides": {"steps": "1500"},
        "crops_subset": False,
        "alpha_mask": False,
        "network_dim": 32,
        "total_steps": 1500,
    }
    return JobFacts(**{**base, **changes})


def test_suggestions_for_the_studios_run() -> None:
    result = suggest(
        facts(
            small_faces=(2, 5, 9),
            croppable=(2, 5),
            near_duplicates=(7,),
            harmful={7: "curation (dlib): near-duplicate"},
            trigger="elena",
            trigger_problems=("'elena' is a first name",),
            trigger_alternatives=("ohwx", "sks"),
        ),
        job(),
    )
    assert result.preset == "sdxl-face" and result.add_crops and result.exclude_flagged
    assert result.overrides == {"steps": "1500"}  # the face preset brings its own rank and crops
    text = "\n".join(result.lines())
    assert "face crops of the 2 photos whose face is small (#2, #5)" in text
    assert "the face-weighted preset `sdxl-face` instead of `sdxl-v4`" in text
    assert "a rarer trigger such as `ohwx`, `sks`" in text
    assert "fewer near-duplicates: 1 photo (#7)" in text
    assert "nothing is rented until the requester confirms" in text


def test_suggestions_within_a_family_without_a_face_preset() -> None:
    result = suggest(facts(), job(preset="sd15-local", family="sd15", network_dim=8, crops_subset=True))
    assert result.preset == "sd15-local"
    assert result.overrides == {"steps": "1500", "network_dim": "16", "network_alpha": "8"}
    rising = suggest(
        facts(),
        job(
            preset="sdxl-face",
            network_dim=64,
            total_steps=1000,
            rising_at_end=True,
            overrides={"max_train_steps": "1000", "rank": "64"},
        ),
    )
    # The job's own "max_train_steps" gives way to the suggested steps (one setting, two names).
    assert rising.overrides == {"rank": "64", "steps": "1500"} and rising.preset == "sdxl-face"


@pytest.mark.parametrize("preset", ["sdxl-face", "flux-dev-face"])
def test_no_suggestion_when_nothing_calls_for_one(preset: str) -> None:
    family = "sdxl" if preset == "sdxl-face" else "flux"
    dim = 64 if family == "sdxl" else 32
    result = suggest(facts(), job(preset=preset, family=family, network_dim=dim, crops_subset=True))
    assert not result and result.preset == preset
