"""The one font every picture the bot draws uses (contact sheets, report cards, grids, charts)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import ImageFont


@lru_cache(maxsize=16)
def ui_font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font at ``px``; the fixed bitmap font where Pillow lacks FreeType."""
    # Imported here: modules that draw are imported by `loraops --help`, which must stay fast.
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):
        return ImageFont.load_default()
