"""Contact sheets (paging, badges, size limit) and exclude/include by position number."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.contact_sheet import SheetTile, render_page
from bot.datasets.gather import DatasetGatherService, parse_positions
from bot.datasets.imaging import ImageRejectedError, analyse
from bot.datasets.ingest import NamedBytes
from bot.errors import InvalidInputError
from storage.models import Image

from .images import jpeg

Build = Callable[..., DatasetGatherService]


def _decode(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


async def test_contact_sheets_page_beyond_48_and_stay_under_10_mib(
    make_service: Build, dataset_id: int
) -> None:
    service = make_service()
    files = [NamedBytes(f"{i}.jpg", jpeg(400 + i, size=(160, 120))) for i in range(100)]
    report = await service.from_attachments(dataset_id, files, added_by=1)
    assert len(report.added) == 100

    pages = await service.render_contact_sheets(dataset_id)
    assert len(pages) == 3
    sizes = [_decode(p).size for p in pages]
    assert all(_decode(p).format == "JPEG" for p in pages)
    assert all(len(p) < 10 * 1024 * 1024 for p in pages)
    # 48 tiles = 8 columns × 6 rows; the last page holds 4 tiles in one row.
    assert sizes[0] == sizes[1]
    assert sizes[2][1] < sizes[0][1] / 3
    assert await service.render_contact_sheets(dataset_id, per_page=60) != pages


def _top_band_red(sheet: PILImage.Image, column: int) -> bool:
    # Tile origin: gap 6, header 40 (see render_page); sample inside the EXCLUDED band.
    x = 6 + column * (192 + 6) + 150
    r, g, b = sheet.convert("RGB").getpixel((x, 40 + 11))  # type: ignore[misc]
    return r > 150 and g < 90 and b < 90


def test_render_page_badges_excluded_tiles() -> None:
    thumb = PILImage.new("RGB", (192, 192), (40, 200, 40))
    tiles = [SheetTile(1, thumb), SheetTile(2, thumb, excluded=True), SheetTile(3, None, badges=("no face",))]
    sheet = _decode(render_page(tiles, title="elena", page=1, pages=1))
    assert sheet.size == (3 * (192 + 6) + 6, 40 + 192 + 26 + 6 + 6)
    assert not _top_band_red(sheet, 0)
    assert _top_band_red(sheet, 1)


def test_render_page_shrinks_to_fit_the_byte_limit() -> None:
    noisy = PILImage.effect_noise((192, 192), 120).convert("RGB")
    tiles = [SheetTile(i, noisy) for i in range(1, 49)]
    unlimited = render_page(tiles, title="t", page=1, pages=1)
    limited = render_page(tiles, title="t", page=1, pages=1, max_bytes=len(unlimited) // 4)
    assert len(limited) <= len(unlimited) // 4
    assert _decode(limited).format == "JPEG"


async def test_exclude_and_include_by_position_with_reason(
    make_service: Build, dataset_id: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    service = make_service()
    await service.from_attachments(
        dataset_id, [NamedBytes(f"{i}.jpg", jpeg(500 + i)) for i in range(5)], added_by=1
    )
    result = await service.exclude(dataset_id, parse_positions("2, 4-5, 9"), "  sunglasses   cover the eyes ")
    assert (result.changed, result.unchanged, result.missing) == ([2, 4, 5], [], [9])
    assert result.summary("excluded") == "excluded #2, #4, #5; no such image: #9."
    again = await service.exclude(dataset_id, [2], "sunglasses cover the eyes")
    assert again.unchanged == [2]

    async with sessions() as session:
        rows = (
            await session.execute(
                select(Image.position, Image.excluded, Image.exclusion_reason).order_by(Image.position)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, False, None),
        (2, True, "sunglasses cover the eyes"),
        (3, False, None),
        (4, True, "sunglasses cover the eyes"),
        (5, True, "sunglasses cover the eyes"),
    ]
    # Excluded images are badged on the sheet (and can be left out).
    assert len(await service.render_contact_sheets(dataset_id, include_excluded=False)) == 1

    back = await service.include(dataset_id, [4, 1])
    assert (back.changed, back.unchanged) == ([4], [1])
    with pytest.raises(InvalidInputError):
        await service.exclude(dataset_id, [1], "   ")


async def test_empty_dataset_has_no_sheets(make_service: Build, dataset_id: int) -> None:
    assert await make_service().render_contact_sheets(dataset_id) == []


def test_parse_positions() -> None:
    assert parse_positions("#3, 1-2 7–8") == [1, 2, 3, 7, 8]
    assert parse_positions("5-3") == [3, 4, 5]
    with pytest.raises(InvalidInputError, match="“x1” is not an image number"):
        parse_positions("1, x1")
    with pytest.raises(InvalidInputError):
        parse_positions(" , ")
    with pytest.raises(InvalidInputError, match="at most"):
        parse_positions("1-100000")


def test_pixel_limit_is_our_setting_not_only_pillows() -> None:
    with pytest.raises(
        ImageRejectedError, match=r"too many pixels: 1000×800 is 0\.8 MP; the limit is 0\.5 MP"
    ):
        analyse(jpeg(1, size=(1000, 800)), max_pixels=500_000)
