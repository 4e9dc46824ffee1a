"""How the stand-in's sample images behave over a run: learning, failing, the studio's case, memorising.

``SDSTANDIN_SAMPLES`` picks the mode (default ``learning``):

- ``learning``   the default curve of :mod:`sim.sdscripts.images`: noise (or ``SDSTANDIN_FACE_FROM``)
                 fading into the dataset's photos over the run;
- ``failing``    the studio's failure: the samples learn the dataset's body, clothes and scene as fast as
                 a real run does, but the face never converges — it stays another person's face
                 (``SDSTANDIN_FACE_FROM``) or an unresolved smudge. The loss falls as usual (the
                 trainer's loss curve does not depend on the mode, as a real loss does not show it);
- ``studio``     cause and effect as in a real run: the face fails as in ``failing`` unless the training
                 set shows the face large — a ``face_crops`` subset or face-weighted (alpha-masked RGBA)
                 images — in which case it is learned early (recognisable from about a fifth of the run);
- ``memorising`` learning up to 70 % of the run, then every sample *is* a training photo (the photo of that
                 prompt, at its own proportions): what an over-trained LoRA does.

The face box of a photo is found with dlib's HOG detector when dlib is installed (it is wherever the
bot's face engine runs); without it the failing modes smudge the upper middle of the picture.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from . import images
from .images import identity_weight

MODES = ("learning", "failing", "studio", "memorising")
# The body, clothes and scene converge between these shares of the run in the failing modes.
BODY_FROM, BODY_TO = 0.05, 0.35
# In memorising mode the samples are training photos from this share of the run on.
MEMORISE_FROM = 0.7


def mode() -> str:
    value = os.environ.get("SDSTANDIN_SAMPLES", "learning").strip().lower() or "learning"
    if value not in MODES:
        raise ValueError(f"SDSTANDIN_SAMPLES={value!r}: expected one of {', '.join(MODES)}")
    return value


def _ramp(progress: float, start: float, end: float) -> float:
    return float(min(1.0, max(0.0, (progress - start) / (end - start))))


@lru_cache(maxsize=1)
def _detector() -> Any:
    try:
        # dlib-bin ships no type information; treat the module as Any.
        dlib: Any = importlib.import_module("dlib")
    except ImportError:
        return None
    return dlib.get_frontal_face_detector()


def face_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest face's box (x0, y0, x1, y1) in an RGB array, or None."""
    detector = _detector()
    height, width = pixels.shape[:2]
    if detector is None:
        # No detector: where a portrait's face usually is.
        return (int(width * 0.35), int(height * 0.12), int(width * 0.65), int(height * 0.45))
    found = list(detector(np.ascontiguousarray(pixels.astype(np.uint8)), 1))
    if not found:
        return None
    rect = max(found, key=lambda r: r.width() * r.height())
    return (
        max(0, rect.left()),
        max(0, rect.top()),
        min(width, rect.right()),
        min(height, rect.bottom()),
    )


def _grow(
    box: tuple[int, int, int, int], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return (
        max(0, int(x0 - dx)),
        max(0, int(y0 - dy * 1.3)),  # more room above: hair line and forehead
        min(width, int(x1 + dx)),
        min(height, int(y1 + dy)),
    )


def _feathered_mask(width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    inner = Image.new("L", (max(1, int(width * 0.8)), max(1, int(height * 0.8))), 255)
    mask.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
    return mask.filter(ImageFilter.GaussianBlur(max(1.0, min(width, height) * 0.08)))


def _other_face(face_from: Path, size: tuple[int, int]) -> Image.Image | None:
    with Image.open(face_from) as other:
        pixels = images.fit(other, size[0] * 4, size[1] * 4)
    box = face_box(pixels)
    if box is None:
        return None
    grown = _grow(box, 0.35, pixels.shape[1], pixels.shape[0])
    crop = Image.fromarray(pixels.astype(np.uint8)).crop(grown)
    return crop.resize(size, Image.Resampling.LANCZOS)


def unlearned_face(
    picture: Image.Image, face_from: Path | None, box: tuple[int, int, int, int] | None
) -> Image.Image:
    """``picture`` with its face replaced by one the LoRA did not learn: another person's, or a smudge."""
    if box is None:
        return picture
    width, height = picture.size
    x0, y0, x1, y1 = _grow(box, 0.25, width, height)
    size = (max(8, x1 - x0), max(8, y1 - y0))
    replacement = _other_face(face_from, size) if face_from is not None else None
    if replacement is None:
        # An unresolved face: the region at a coarse resolution, as a base model's generic face looks
        # from far off; no engine finds a face in it.
        region = picture.crop((x0, y0, x1, y1))
        replacement = region.resize((4, 4), Image.Resampling.BILINEAR).resize(size, Image.Resampling.BICUBIC)
    out = picture.copy()
    out.paste(replacement, (x0, y0), _feathered_mask(*size))
    return out


def _closer(pixels: np.ndarray, zoom: float) -> np.ndarray:
    """The picture framed ``zoom`` times closer around its upper middle (where portraits keep the face)."""
    height, width = pixels.shape[:2]
    w, h = int(width / zoom), int(height / zoom)
    x0, y0 = (width - w) // 2, int((height - h) * 0.3)
    crop = Image.fromarray(pixels.astype(np.uint8)).crop((x0, y0, x0 + w, y0 + h))
    return np.asarray(crop.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _learns_face(dataset_images: list[Path]) -> bool:
    """Does the training set show the face large? Face crops, or alpha-masked (face-weighted) images."""
    if any(image.parent.name == "face_crops" for image in dataset_images):
        return True
    for image in dataset_images[:4]:
        try:
            with Image.open(image) as opened:
                if opened.mode in ("RGBA", "LA"):
                    return True
        except OSError:
            continue
    return False


def _photo(dataset_images: list[Path], prompt_index: int) -> Path:
    full = [p for p in dataset_images if p.parent.name != "face_crops"] or dataset_images
    return full[prompt_index % len(full)]


def _converging(
    dataset_images: list[Path],
    *,
    prompt_index: int,
    progress: float,
    width: int,
    height: int,
    seed: int,
    step: int,
    learned_face: bool,
    face_from: Path | None,
) -> Image.Image:
    rng = images.sample_rng(seed, step)
    # A new picture of the person, not the training photo itself: a closer framing (as a prompt asking
    # for a portrait gets), so only the memorising mode returns copies of training photos.
    target = _closer(
        images.prompt_photo(_photo(dataset_images, prompt_index), prompt_index, width, height), 1.25
    )
    noise = images.noise_field(width, height, rng)
    picture = images.blend(noise, target, _ramp(progress, BODY_FROM, BODY_TO), rng)
    if learned_face:
        return picture
    return unlearned_face(picture, face_from, face_box(target))


def make_sample(
    dataset_images: list[Path],
    *,
    prompt_index: int,
    step: int,
    total_steps: int,
    width: int,
    height: int,
    seed: int,
    nan: bool = False,
    face_from: Path | None = None,
) -> Image.Image:
    """The sample for one prompt at one step in the mode ``SDSTANDIN_SAMPLES`` names (deterministic)."""
    chosen = mode()
    progress = step / total_steps if total_steps > 0 else 1.0
    if nan or not dataset_images:
        return Image.new("RGB", (width, height))
    if chosen == "memorising" and progress >= MEMORISE_FROM:
        # The training photo itself, at its own proportions within the sample's size.
        with Image.open(_photo(dataset_images, prompt_index)) as photo:
            copy = photo.convert("RGB")
        copy.thumbnail((max(width, height), max(width, height)), Image.Resampling.LANCZOS)
        return copy
    if chosen in ("failing", "studio"):
        learned = chosen == "studio" and _learns_face(dataset_images)
        return _converging(
            dataset_images,
            prompt_index=prompt_index,
            progress=progress,
            width=width,
            height=height,
            seed=seed,
            step=step,
            learned_face=learned,
            face_from=face_from,
        )
    return images.learning_sample(
        dataset_images[prompt_index % len(dataset_images)],
        prompt_index=prompt_index,
        weight=identity_weight(step, total_steps),
        width=width,
        height=height,
        rng=images.sample_rng(seed, step),
        face_from=face_from,
    )


__all__ = ["MODES", "face_box", "identity_weight", "make_sample", "mode", "unlearned_face"]
