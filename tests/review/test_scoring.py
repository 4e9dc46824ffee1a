"""Scoring samples against an identity reference: real photos, the dlib engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.review.ranking import Standing, best
from bot.review.scoring import (
    MixedEnginesError,
    ReferenceScorer,
    SampleScore,
    ThreadedScorer,
    aggregate,
    pct_of_ceiling,
    score_images,
)

from ._helpers import blank, photo


def test_aggregate_means_over_samples_with_a_face() -> None:
    scores = [
        SampleScore("e", True, 0.8, 80.0, True),
        SampleScore("e", False, None, None, None),
        SampleScore("e", True, 0.6, 60.0, False),
        SampleScore("e", False, None, None, None),
    ]
    summary = aggregate(scores)
    assert summary.mean == pytest.approx(0.7)  # not 0.35: the mean is over the two faces found
    assert summary.max == pytest.approx(0.8)
    assert summary.face_share == pytest.approx(0.5)
    assert (summary.samples, summary.faces, summary.engine) == (4, 2, "e")
    assert summary.pct(0.875) == pytest.approx(80.0)


def test_aggregate_without_faces_and_empty() -> None:
    none = aggregate([SampleScore("e", False, None, None, None)] * 3)
    assert (none.mean, none.max, none.face_share) == (None, None, 0.0)
    empty = aggregate([])
    assert (empty.mean, empty.face_share, empty.engine) == (None, 0.0, None)


def test_scores_of_different_engines_are_never_mixed() -> None:
    with pytest.raises(MixedEnginesError):
        aggregate(
            [
                SampleScore("dlib-x", True, 0.9, 90.0, True),
                SampleScore("insightface-y", True, 0.5, 60.0, True),
            ]
        )


def test_pct_of_ceiling_edge_cases() -> None:
    assert pct_of_ceiling(0.5, 0.8) == pytest.approx(62.5)
    assert pct_of_ceiling(None, 0.8) is None
    assert pct_of_ceiling(0.5, None) is None
    assert pct_of_ceiling(0.5, 0.0) is None
    assert pct_of_ceiling(float("nan"), 0.8) is None


def test_scores_rise_as_samples_grow_closer_to_the_reference(
    obama_scorer: ReferenceScorer, faces_dir: Path
) -> None:
    """Samples move from no face, to strangers, to the person: checkpoint means rise, the last is best."""
    checkpoints = {
        100: [blank(), blank((30, 60, 90))],
        200: [photo(faces_dir, "biden/biden_2.jpg"), photo(faces_dir, "kit_harington/kit_1.jpg")],
        300: [photo(faces_dir, "obama/obama_4.jpg"), photo(faces_dir, "kit_harington/kit_1.jpg")],
        400: [photo(faces_dir, "obama/obama_4.jpg"), photo(faces_dir, "obama/obama_small.jpg")],
    }
    summaries = {step: aggregate(score_images(obama_scorer, images)) for step, images in checkpoints.items()}
    assert summaries[100].mean is None and summaries[100].face_share == 0.0
    m200, m300, m400 = (summaries[s].mean for s in (200, 300, 400))
    assert m200 is not None and m300 is not None and m400 is not None
    assert m200 < m300 < m400
    assert summaries[400].face_share == 1.0
    # The reference's own held-out photos score about at the ceiling; strangers well below it.
    assert obama_scorer.ceiling is not None
    assert m400 > 0.95 * obama_scorer.ceiling
    assert m200 < 0.9 * obama_scorer.ceiling
    standings = [Standing(step, s.mean, s.max, s.face_share) for step, s in summaries.items()]
    top = best(standings)
    assert top is not None and top.step == 400


def test_every_score_carries_the_engine(obama_scorer: ReferenceScorer, faces_dir: Path) -> None:
    scores = score_images(obama_scorer, [photo(faces_dir, "obama/obama_small.jpg"), b"not an image"])
    assert {s.engine for s in scores} == {"dlib-resnet128-v1"}
    assert scores[0].face_found and scores[0].percent_of_ceiling is not None
    assert not scores[1].face_found  # unreadable bytes: no face, the batch goes on


async def test_threaded_scorer_runs_off_the_loop(obama_scorer: ReferenceScorer, faces_dir: Path) -> None:
    scorer = ThreadedScorer(obama_scorer)
    assert scorer.engine == obama_scorer.engine and scorer.ceiling == obama_scorer.ceiling
    scores = await scorer.score_many([blank(), photo(faces_dir, "obama/obama_small.jpg")])
    assert [s.face_found for s in scores] == [False, True]
