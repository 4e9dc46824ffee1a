"""Sample images whose resemblance to the dataset's person grows with the training step.

A real LoRA run starts from the base model's idea of "a woman" and ends drawing the dataset's
person. The stand-in imitates that curve, so face scoring sees a realistic trend: early samples are
a noise field (or another face, ``SDSTANDIN_FACE_FROM``) with no trace of the person, then the
dataset photo fades in, and the last quarter of the run shows one of the dataset's own photos
clearly (mirrored for odd prompts, which keeps the identity). A NaN run draws black images, as the
real one does once the weights are NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def _fit(image: Image.Image, width: int, height: int) -> np.ndarray:
    # Faces sit in the upper part of most portraits: keep that part when cropping to the sample size.
    fitted = ImageOps.fit(
        image.convert("RGB"), (width, height), method=Image.Resampling.BICUBIC, centering=(0.5, 0.3)
    )
    return np.asarray(fitted, dtype=np.float32)


def _noise_field(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    # Low-frequency colour blobs (upsampled coarse noise): looks like an untrained diffusion output.
    coarse = rng.uniform(40, 215, size=(max(2, height // 64), max(2, width // 64), 3)).astype(np.uint8)
    return np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
    )


def identity_weight(step: int, total: int) -> float:
    """How much of the dataset photo shows: 0 up to 15 % of the run, 1 from 75 % on."""
    progress = step / total if total > 0 else 1.0
    return float(min(1.0, max(0.0, (progress - 0.15) / 0.6)))


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
    """The sample image for one prompt at one step (deterministic for a given seed)."""
    if nan or not dataset_images:
        return Image.new("RGB", (width, height))
    rng = np.random.default_rng(seed + 7919 * step)
    with Image.open(dataset_images[prompt_index % len(dataset_images)]) as photo:
        target = _fit(photo, width, height)
    if prompt_index % 2 == 1:
        target = target[:, ::-1, :]
    if face_from is not None:
        with Image.open(face_from) as other:
            source = _fit(other, width, height)
    else:
        source = _noise_field(width, height, rng)
    weight = identity_weight(step, total_steps)
    mixed = (1.0 - weight) * source + weight * target
    grain = rng.normal(0.0, 45.0 * (1.0 - weight) + 2.0, size=mixed.shape)
    return Image.fromarray(np.clip(mixed + grain, 0, 255).astype(np.uint8))
