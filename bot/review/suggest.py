"""What to change for the next run, from this dataset's report card and this job's settings.

``suggest`` is pure: it takes what curation stored about the dataset (:class:`DatasetFacts`) and what
the job trained with (:class:`JobFacts`) and returns :class:`Suggestions` — the sentences the alarm and
a poor run's summary show, and the changes "Retry with these changes" makes: the dataset changes that
can be applied (face crops, exclusions of harmful photos) and the preset and overrides of the new quote.

The rules, in the order they are shown (each only when the facts call for it):
1. face crops of the photos whose face is small (and train them: ``face.crops_subset=true``);
2. the family's face-weighted preset (face crops + face-weighted loss), keeping the job's own overrides
   that the new preset accepts;
3. a rarer trigger when the trigger is a common word or a name (advice only: renaming the trigger
   rewrites the captions, which the team should see first);
4. a higher rank when the run's is below the family's usual identity rank, or more steps when the
   likeness was still rising at the end;
5. fewer near-duplicates, and out with the other harmful photos (``/dataset curate`` found them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.text import plural
from bot.training.overrides import ALIASES
from bot.training.presets import OverrideError, apply_overrides, load_preset, preset_names

log = logging.getLogger(__name__)

# The face-weighted preset of each model family (none for SD1.5: its preset adds crops instead).
FACE_PRESETS = {"sdxl": "sdxl-face", "flux": "flux-dev-face"}
# The rank an identity usually needs per family (the face presets' own network_dim).
IDENTITY_RANK = {"sd15": 16, "sdxl": 64, "flux": 32}
# Overrides a new preset decides for itself: the job's own values for them are not carried over to it.
_REPLACED = {"network_dim", "dim", "rank", "network_alpha", "alpha", "face.crops_subset", "face.alpha_mask"}


@dataclass(frozen=True)
class DatasetFacts:
    """What curation stored about the dataset (positions are the numbers on the contact sheets)."""

    name: str
    trigger: str
    photos: int  # included full-subset photos
    small_faces: Sequence[int] = ()
    near_duplicates: Sequence[int] = ()
    harmful: Mapping[int, str] = field(default_factory=dict)  # position → exclusion reason
    croppable: Sequence[int] = ()  # small faces a crop can be made of now
    crops: int = 0  # face crops already in the dataset
    trigger_problems: Sequence[str] = ()
    trigger_alternatives: Sequence[str] = ()


@dataclass(frozen=True)
class JobFacts:
    """What the job trained with, after its overrides."""

    preset: str
    family: str
    overrides: Mapping[str, str]
    crops_subset: bool
    alpha_mask: bool
    network_dim: int | None
    total_steps: int
    rising_at_end: bool = False


@dataclass(frozen=True)
class Suggestions:
    """Sentences to show and the changes a retry makes."""

    items: tuple[str, ...]
    preset: str
    overrides: Mapping[str, str]
    add_crops: bool = False
    exclude_flagged: bool = False

    def __bool__(self) -> bool:
        return bool(self.items)

    def overrides_text(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.overrides.items())

    def lines(self) -> list[str]:
        out = ["What to change:"]
        out.extend(f"• {item}" for item in self.items)
        retry = [f"preset `{self.preset}`"]
        if self.overrides:
            retry.append(f"overrides `{self.overrides_text()}`")
        changes = []
        if self.add_crops:
            changes.append("adds the face crops")
        if self.exclude_flagged:
            changes.append("excludes the flagged photos")
        done = f"{' and '.join(changes)}, then " if changes else ""
        out.append(
            f"**Retry with these changes** {done}quotes a new run with {', '.join(retry)}; "
            "nothing is rented until the requester confirms."
        )
        return out


def _numbers(positions: Sequence[int]) -> str:
    shown = ", ".join(f"#{p}" for p in list(positions)[:12])
    return shown + (f" and {len(positions) - 12} more" if len(positions) > 12 else "")


def _photos_show(n: int) -> str:
    return "1 photo shows" if n == 1 else f"{n} photos show"


def _carried(preset: str, overrides: Mapping[str, str], replaced: set[str]) -> dict[str, str]:
    """The job's overrides that ``preset`` accepts, one by one (an unknown key is dropped, not fatal)."""
    kept: dict[str, str] = {}
    base = load_preset(preset)
    # "steps" and "max_train_steps" name one setting: compare what the keys resolve to.
    resolved = {ALIASES.get(key, key) for key in replaced}
    for key, value in overrides.items():
        if ALIASES.get(key, key) in resolved:
            continue
        try:
            apply_overrides(base, {key: value})
        except OverrideError:
            log.info("override %s=%s does not apply to %s: left out of the retry", key, value, preset)
            continue
        kept[key] = value
    return kept


def suggest(dataset: DatasetFacts, job: JobFacts) -> Suggestions:
    """What to change, and how a retry would do it (see the module docstring for the rules)."""
    items: list[str] = []
    changes: dict[str, str] = {}
    add_crops = False
    preset = job.preset

    # 1. Small faces: crop them, and train the crops.
    if dataset.small_faces:
        if dataset.croppable:
            add_crops = True
            items.append(
                f"face crops of the {plural(len(dataset.croppable), 'photo')} whose face is small "
                f"({_numbers(dataset.croppable)}): in full-body photos the face is a few percent of the "
                "pixels, so the LoRA learns the body and clothes instead"
            )
        elif dataset.crops:
            items.append(
                f"train the {dataset.crops} face crop{'s' if dataset.crops != 1 else ''} the dataset "
                f"already has: {_photos_show(len(dataset.small_faces))} the face small "
                f"({_numbers(dataset.small_faces)})"
            )
        else:
            n = len(dataset.small_faces)
            items.append(
                f"close-up photos: {_photos_show(n)} the face small ({_numbers(dataset.small_faces)}), "
                f"too small to crop without upscaling"
            )
    crops_available = add_crops or dataset.crops > 0

    # 2. The face-weighted preset of the family.
    face_preset = FACE_PRESETS.get(job.family)
    if face_preset is not None and face_preset in preset_names() and job.preset != face_preset:
        preset = face_preset
        items.append(
            f"the face-weighted preset `{face_preset}` instead of `{job.preset}`: it trains face crops "
            "beside the full photos and weights the loss towards the face"
        )
    elif not job.crops_subset and crops_available:
        changes["face.crops_subset"] = "true"
        if not dataset.small_faces:
            items.append("train the face crops beside the full photos (`face.crops_subset=true`)")

    # 3. A rarer trigger (advice: the captions change with it).
    if dataset.trigger_problems:
        alternatives = ", ".join(f"`{word}`" for word in list(dataset.trigger_alternatives)[:3])
        also = f" such as {alternatives}" if alternatives else ""
        items.append(
            f"a rarer trigger{also}: {dataset.trigger_problems[0]} "
            f"(`/dataset trigger {dataset.name}` changes it and its captions)"
        )

    # 4. Capacity and length.
    target_rank = IDENTITY_RANK.get(job.family)
    if (
        preset == job.preset
        and target_rank is not None
        and job.network_dim is not None
        and job.network_dim < target_rank
    ):
        changes["network_dim"] = str(target_rank)
        changes["network_alpha"] = str(target_rank // 2)
        items.append(
            f"a higher rank: network_dim {target_rank} (alpha {target_rank // 2}) instead of "
            f"{job.network_dim}, room for the detail of a face"
        )
    if job.rising_at_end and job.total_steps > 0:
        more = int(job.total_steps * 1.5)
        changes["steps"] = str(more)
        items.append(f"more steps ({more} instead of {job.total_steps}): the likeness was still rising")

    # 5. Near-duplicates and the other harmful photos.
    exclude = bool(dataset.harmful)
    if dataset.near_duplicates:
        n = len(dataset.near_duplicates)
        verbs = "repeats another photo and over-weights" if n == 1 else "repeat another photo and over-weight"
        items.append(
            f"fewer near-duplicates: {plural(n, 'photo')} ({_numbers(dataset.near_duplicates)}) "
            f"{verbs} one look"
        )
    others = {p: r for p, r in dataset.harmful.items() if p not in set(dataset.near_duplicates)}
    if others:
        items.append(
            f"leave out the {plural(len(others), 'photo')} curation flagged ({_numbers(sorted(others))})"
        )

    # A new preset brings its own rank and face settings; within the same preset the job's stay.
    overrides = _carried(preset, job.overrides, set(changes) | (_REPLACED if preset != job.preset else set()))
    overrides.update(changes)
    return Suggestions(
        items=tuple(items),
        preset=preset,
        overrides=overrides,
        add_crops=add_crops,
        exclude_flagged=exclude,
    )
