"""Presets sample early enough for the face alarm, and the alarm's timing can be set per preset and job."""

from __future__ import annotations

import pytest

from bot.review.verdict import AlarmPolicy
from bot.training.presets import OverrideError, apply_overrides, load_preset, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_the_first_checkpoint_comes_within_the_first_fifth_of_the_run(name: str) -> None:
    preset = load_preset(name)
    every = preset.checkpoint_every_n_steps
    assert every is not None and preset.sample_every_n_steps == every, "samples at every checkpoint"
    assert every <= 0.2 * preset.max_train_steps, (
        f"{name}: first checkpoint at {every}/{preset.max_train_steps}"
    )
    # ...so the alarm (2nd checkpoint or 30 %) judges while most of the money is unspent.
    policy = AlarmPolicy.from_params({"face_alarm": preset.face_alarm})
    assert (
        min(policy.checkpoint * every, policy.fraction * preset.max_train_steps)
        <= 0.4 * preset.max_train_steps
    )


def test_the_alarm_timing_is_an_override() -> None:
    preset, applied = apply_overrides(
        load_preset("sdxl-face"), {"preset.face_alarm_checkpoint": "3", "preset.face_alarm_fraction": "0.25"}
    )
    assert preset.face_alarm == {"checkpoint": 3, "fraction": 0.25}
    assert applied == {"preset.face_alarm_checkpoint": 3, "preset.face_alarm_fraction": 0.25}
    with pytest.raises(OverrideError):
        apply_overrides(load_preset("sdxl-face"), {"preset.face_alarm_checkpoint": "soon"})
