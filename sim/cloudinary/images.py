"""Generated test pictures: distinct to the eye *and* to a perceptual hash, deterministic by seed."""

from __future__ import annotations

import io
import random


def generated_image(seed: int, size: tuple[int, int] = (256, 256), fmt: str = "JPEG") -> bytes:
    """A blocky random picture: a 6×6 grid of random colours with a random diagonal stripe.

    Large low-frequency structure makes pHashes of different seeds far apart (≈ 32 bits), so a set
    of a few hundred never trips a duplicate threshold of a handful of bits.
    """
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    grid = 6
    small = Image.new("RGB", (grid, grid))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(grid * grid)])
    image = small.resize(size, Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    width, height = size
    x = rng.randrange(width)
    draw.line([(x, 0), (width - x, height)], fill=(rng.randrange(256),) * 3, width=max(2, width // 20))
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()
