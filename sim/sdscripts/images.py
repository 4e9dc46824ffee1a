"""Sample images whose resemblance to the dataset's person grows with the training step.

A real LoRA run starts from the base model's idea of "a woman" and ends drawing the dataset's
person. The stand-in imitates that curve, so face scoring sees a realistic trend: early samples are
a noise field (or another face, ``SDSTANDIN_FACE_FROM``) with no trace of the person, then the
dataset photo fades in, and the last quarter of the run shows one of the dataset's own photos
clearly (mirrored for odd prompts, which keeps the identity). The other modes, and the black images of
a NaN run, are in :mod:`sim.sdscripts.sample_modes` (``make_sample``, the one entry point).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def fit(image: Image.Image, width: int, height: int) -> np.ndarray:
    """``image`` cropped and scaled to the sample's size, as float RGB pixels."""
    # Faces sit in the upper part of most portraits: keep that part when cropping to the sample size.
    fitted = ImageOps.fit(
        image.convert("RGB"), (width, height), method=Image.Resampling.BICUBIC, centering=(0.5, 0.3)
    )
    return np.asarray(fitted, dtype=np.float32)


def noise_field(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """What an untrained model draws, as float RGB pixels."""
    # Low-frequency colour blobs (upsampled coarse noise): looks like an untrained diffusion output.
    coarse = rng.uniform(40, 215, size=(max(2, height // 64), max(2, width // 64), 3)).astype(np.uint8)
    return np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
    )


def identity_weight(step: int, total: int) -> float:
    """How much of the dataset photo shows: 0 up to 15 % of the run, 1 from 75 % on."""
    progress = step / total if total > 0 else 1.0
    return float(min(1.0, max(0.0, (progress - 0.15) / 0.6)))


def prompt_photo(photo: Path, prompt_index: int, width: int, height: int) -> np.ndarray:
    """The dataset photo a prompt converges to, fitted to the sample's size; mirrored for odd prompts
    (which keeps the identity while the samples of two prompts differ)."""
    with Image.open(photo) as opened:
        target = fit(opened, width, height)
    return target[:, ::-1, :] if prompt_index % 2 == 1 else target


def blend(source: np.ndarray, target: np.ndarray, weight: float, rng: np.random.Generator) -> Image.Image:
    """``source`` faded into ``target`` by ``weight``, under grain that fades as the picture converges."""
    mixed = (1.0 - weight) * source + weight * target
    grain = rng.normal(0.0, 45.0 * (1.0 - weight) + 2.0, size=mixed.shape)
    return Image.fromarray(np.clip(mixed + grain, 0, 255).astype(np.uint8))


def sample_rng(seed: int, step: int) -> np.random.Generator:
    """The noise and grain of one step's samples: the same seed and step draw the same picture."""
    return np.random.default_rng(seed + 7919 * step)


def learning_sample(
    photo: Path,
    *,
    prompt_index: int,
    weight: float,
    width: int,
    height: int,
    rng: np.random.Generator,
    face_from: Path | None = None,
) -> Image.Image:
    """The default curve at ``weight`` (:func:`identity_weight`): noise, or another face, fading into
    ``photo``."""
    target = prompt_photo(photo, prompt_index, width, height)
    if face_from is not None:
        with Image.open(face_from) as other:
            source = fit(other, width, height)
    else:
        source = noise_field(width, height, rng)
    return blend(source, target, weight, rng)
