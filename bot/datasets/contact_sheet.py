"""Contact sheets: JPEG pages of numbered thumbnails (the numbers users type to exclude/include).

``render_page`` is a pure function of its tiles (blocking: call it in a thread). Each page is kept
under Discord's 10 MiB attachment limit by lowering JPEG quality, then scale, until it fits.
Badges are short words drawn on a tile (curation adds "no face", "blurry"…); excluded images are
dimmed and get a red EXCLUDED band.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.discord_limits import DISCORD_FILE_LIMIT
from bot.fonts import ui_font

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

PER_PAGE = 48
COLUMNS = 8
TILE = 192


@dataclass(frozen=True)
class SheetTile:
    position: int
    thumbnail: PILImage | None  # None: the picture could not be read (drawn as a placeholder)
    excluded: bool = False
    badges: tuple[str, ...] = field(default_factory=tuple)


def page_count(n_items: int, per_page: int = PER_PAGE) -> int:
    return max(1, -(-n_items // per_page))


def render_page(
    tiles: Sequence[SheetTile],
    *,
    title: str,
    page: int,
    pages: int,
    columns: int = COLUMNS,
    tile: int = TILE,
    max_bytes: int = DISCORD_FILE_LIMIT,
) -> bytes:
    """One contact-sheet page as JPEG bytes, no larger than ``max_bytes``."""
    from PIL import Image, ImageDraw

    gap, label_h, header_h = 6, 26, 40
    rows = max(1, -(-len(tiles) // columns))
    cols = max(1, min(columns, len(tiles)))
    width = cols * (tile + gap) + gap
    height = header_h + rows * (tile + label_h + gap) + gap
    sheet = Image.new("RGB", (width, height), (32, 34, 37))
    draw = ImageDraw.Draw(sheet)
    draw.text((gap * 2, 10), f"{title}  ·  page {page}/{pages}", fill=(235, 235, 235), font=ui_font(20))

    for index, item in enumerate(tiles):
        row, col = divmod(index, columns)
        x0 = gap + col * (tile + gap)
        y0 = header_h + row * (tile + label_h + gap)
        cell = _tile_image(item, tile)
        sheet.paste(cell, (x0, y0))
        _draw_badges(draw, item, x0, y0, tile)
        label = f"#{item.position}"
        colour = (240, 90, 90) if item.excluded else (235, 235, 235)
        draw.text((x0 + 4, y0 + tile + 3), label, fill=colour, font=ui_font(18))
    return _encode_under(sheet, max_bytes)


def _tile_image(item: SheetTile, tile: int) -> PILImage:
    from PIL import Image, ImageDraw, ImageEnhance

    cell = Image.new("RGB", (tile, tile), (54, 57, 63))
    if item.thumbnail is None:
        draw = ImageDraw.Draw(cell)
        draw.text((tile // 2 - 6, tile // 2 - 12), "?", fill=(200, 200, 200), font=ui_font(24))
        return cell
    thumb = item.thumbnail
    if thumb.width > tile or thumb.height > tile:
        thumb = thumb.copy()
        thumb.thumbnail((tile, tile))
    if item.excluded:
        thumb = ImageEnhance.Brightness(thumb.convert("L").convert("RGB")).enhance(0.55)
    cell.paste(thumb, ((tile - thumb.width) // 2, (tile - thumb.height) // 2))
    return cell


def _draw_badges(draw: Any, item: SheetTile, x0: int, y0: int, tile: int) -> None:
    font = ui_font(14)
    if item.excluded:
        draw.rectangle([x0, y0, x0 + tile, y0 + 22], fill=(200, 40, 40))
        draw.text((x0 + 6, y0 + 3), "EXCLUDED", fill=(255, 255, 255), font=font)
    y = y0 + tile - 20
    for badge in reversed(item.badges[:4]):
        text_w = int(draw.textlength(badge, font=font)) + 10
        draw.rectangle([x0 + 2, y, x0 + 2 + text_w, y + 18], fill=(230, 160, 30))
        draw.text((x0 + 7, y + 1), badge, fill=(20, 20, 20), font=font)
        y -= 21


def _encode_under(sheet: PILImage, max_bytes: int) -> bytes:
    from PIL import Image

    image = sheet
    while True:
        for quality in (88, 75, 60, 45):
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=quality, optimize=True)
            if out.tell() <= max_bytes:
                return out.getvalue()
        if image.width < 200:
            raise ValueError(f"cannot fit a contact sheet under {max_bytes} bytes")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)


def render_pages(
    tiles: Sequence[SheetTile],
    *,
    title: str,
    per_page: int = PER_PAGE,
    columns: int = COLUMNS,
    tile: int = TILE,
    max_bytes: int = DISCORD_FILE_LIMIT,
) -> list[bytes]:
    """Every page for ``tiles`` (pure, blocking). Holds all thumbnails: for big sets render by page."""
    pages = page_count(len(tiles), per_page)
    return [
        render_page(
            tiles[i * per_page : (i + 1) * per_page],
            title=title,
            page=i + 1,
            pages=pages,
            columns=columns,
            tile=tile,
            max_bytes=max_bytes,
        )
        for i in range(pages)
    ]
