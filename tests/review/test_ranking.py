"""Best checkpoint, ties broken by votes, early stop and money saved (pure functions)."""

from __future__ import annotations

from decimal import Decimal

from bot.review.ranking import Standing, best, early_stop, money_saved, rank


def test_best_is_the_highest_face_similarity() -> None:
    standings = [
        Standing(500, 0.61, 0.7, 1.0, up=3),
        Standing(1000, 0.74, 0.8, 0.75),
        Standing(1500, 0.69, 0.9, 1.0, down=1),
    ]
    top = best(standings)
    assert top is not None and top.step == 1000
    assert [s.step for s in rank(standings)] == [1000, 1500, 500]


def test_ties_are_broken_by_net_votes() -> None:
    standings = [
        Standing(500, 0.7001, up=1, down=1),
        Standing(1000, 0.7003, up=2, down=0),  # same score as shown (0.700), more net votes
        Standing(1500, 0.7004, up=3, down=2),
    ]
    top = best(standings)
    assert top is not None and top.step == 1000
    # Without votes the tie falls to the earlier step (less training for the same likeness).
    assert best([Standing(1500, 0.70), Standing(1000, 0.70)]).step == 1000  # type: ignore[union-attr]


def test_votes_do_not_beat_a_clearly_better_score() -> None:
    top = best([Standing(500, 0.60, up=10), Standing(1000, 0.75, down=3)])
    assert top is not None and top.step == 1000


def test_checkpoints_without_a_face_are_not_candidates() -> None:
    assert best([Standing(500, None, up=5), Standing(1000, None, face_share=0.0)]) is None
    top = best([Standing(500, None, up=5), Standing(1000, 0.2, face_share=0.25)])
    assert top is not None and top.step == 1000


def test_early_stop_after_patience_checkpoints_without_improvement() -> None:
    history = [(250, 0.30), (500, 0.45), (750, 0.52), (1000, 0.51), (1250, 0.50)]
    assert not early_stop(history, patience=3).stop
    decision = early_stop([*history, (1500, 0.52)], patience=3)  # equal is not an improvement
    assert decision.stop
    assert decision.best_step == 750 and decision.checkpoints_since_best == 3
    assert "not improved for 3 checkpoints" in decision.reason
    # A late improvement resets the count.
    assert not early_stop([*history, (1500, 0.60)], patience=3).stop


def test_early_stop_options() -> None:
    flat = [(s, 0.5) for s in (100, 200, 300, 400, 500)]
    assert not early_stop(flat, patience=None).stop
    assert not early_stop(flat, patience=0).stop
    assert early_stop(flat, patience=4).stop
    # min_delta: tiny gains do not count as improvement
    creeping = [(100, 0.5), (200, 0.501), (300, 0.502), (400, 0.503)]
    assert not early_stop(creeping, patience=3).stop
    assert early_stop(creeping, patience=3, min_delta=0.01).stop
    # order of the history does not matter
    assert early_stop(list(reversed(flat)), patience=4).best_step == 100


def test_early_stop_waits_for_a_first_face() -> None:
    decision = early_stop([(100, None), (200, None), (300, None)], patience=2)
    assert not decision.stop and decision.best_step is None and "no face" in decision.reason
    # once a face was seen, checkpoints without one count as "not improved"
    assert early_stop([(100, None), (200, 0.4), (300, None), (400, None)], patience=2).stop


def test_money_saved_is_remaining_steps_times_price_per_second() -> None:
    # 1800 steps at 2 it/s = 900 s; at $0.36/h = $0.0001/s → $0.09
    assert money_saved(1800, 2.0, Decimal("0.36")) == Decimal("0.09")
    assert money_saved(0, 2.0, Decimal("0.36")) == Decimal("0.00")
    assert money_saved(1800, None, Decimal("0.36")) is None
    assert money_saved(1800, 0.0, Decimal("0.36")) is None
    assert money_saved(1800, 2.0, None) is None
