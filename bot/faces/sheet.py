"""The report card: a contact sheet of the dataset with a badge per problem and the scores."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from bot.faces.analysis import ImageSource, load_image
from bot.faces.report import DatasetReport
from bot.fonts import ui_font

MAX_SHEET_BYTES = 10 * 1024 * 1024  # Discord's per-file limit

# Short badge text and colour per flag, most serious first.
BADGES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "unreadable": ("unreadable", (120, 120, 120)),
    "no_face": ("no face", (200, 40, 40)),
    "identity_outlier": ("other person?", (200, 40, 40)),
    "multiple_faces": ("several faces", (220, 110, 20)),
    "small_face": ("face too small", (220, 110, 20)),
    "face_cut": ("face cut", (220, 110, 20)),
    "blurry": ("blurry", (220, 110, 20)),
    "near_duplicate": ("duplicate", (110, 110, 200)),
}




def render_report_card(
    report: DatasetReport,
    sources: Sequence[ImageSource],
    *,
    title: str = "",
    tile: int = 224,
    columns: int | None = None,
    quality: int = 85,
) -> bytes:
    """Render the contact sheet as JPEG bytes (always under 10 MiB).

    ``sources`` are the images in the order of ``report.images``. Each tile shows the thumbnail with
    the main face outlined (green when clean, orange/red when flagged), badges for its flags, and the
    identity similarity (raw and % of the ceiling) under it.
    """
    from PIL import Image, ImageDraw

    if len(sources) != len(report.images):
        raise ValueError("one source per analysed image is needed")
    count = max(1, len(report.images))
    columns = columns or max(1, min(8, math.ceil(math.sqrt(count * 1.5))))
    rows = math.ceil(count / columns)
    caption_h = max(34, tile // 6)
    header_h = 70
    pad = 6
    width = columns * (tile + pad) + pad
    height = header_h + rows * (tile + caption_h + pad) + pad
    sheet = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font_big, font, font_small = ui_font(20), ui_font(max(11, tile // 16)), ui_font(max(10, tile // 19))

    ceiling = report.ceiling
    headline = title or "Dataset report card"
    draw.text((pad + 4, 8), headline, fill=(240, 240, 240), font=font_big)
    summary = (
        f"engine {report.engine} · {len(report.images)} images · ceiling {ceiling:.3f}"
        if ceiling is not None
        else f"engine {report.engine} · {len(report.images)} images"
    )
    flagged = sum(1 for item in report.images if item.flags)
    draw.text((pad + 4, 38), f"{summary} · {flagged} flagged", fill=(190, 190, 190), font=font)

    for index, (item, source) in enumerate(zip(report.images, sources, strict=True)):
        col, row = index % columns, index // columns
        x = pad + col * (tile + pad)
        y = header_h + row * (tile + caption_h + pad)
        draw.rectangle((x, y, x + tile - 1, y + tile + caption_h - 1), fill=(40, 40, 46))
        try:
            image = load_image(source)
        except Exception:
            image = None
        if image is not None:
            scale = min(tile / image.width, tile / image.height)
            thumb = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                Image.Resampling.LANCZOS,
            )
            ox, oy = x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2
            sheet.paste(thumb, (ox, oy))
            face = item.face
            if face is not None:
                serious = bool(set(item.flags) & {"identity_outlier", "no_face"})
                colour = (230, 60, 60) if serious else (240, 150, 40) if item.flags else (70, 200, 90)
                x0, y0, x1, y1 = (v * scale for v in face.bbox)
                draw.rectangle(
                    (
                        ox + max(0, x0),
                        oy + max(0, y0),
                        ox + min(thumb.width - 1, x1),
                        oy + min(thumb.height - 1, y1),
                    ),
                    outline=colour,
                    width=2,
                )
        by = y + 4
        for flag in item.flags:
            text, colour = BADGES.get(flag, (flag, (120, 120, 120)))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font_small)
            draw.rectangle((x + 4, by, x + 10 + right - left, by + bottom - top + 6), fill=colour)
            draw.text((x + 7, by + 3 - top), text, fill=(255, 255, 255), font=font_small)
            by += bottom - top + 9
        name = item.analysis.source.replace("\\", "/").rsplit("/", 1)[-1]
        if len(name) > 28:
            name = name[:12] + "…" + name[-14:]
        draw.text((x + 4, y + tile + 2), name, fill=(210, 210, 210), font=font_small)
        sim = item.identity_similarity
        if sim is not None:
            score = f"id {sim:.3f}" + (f" · {100 * sim / ceiling:.0f}% of ceiling" if ceiling else "")
        elif item.face is not None:
            score = f"{item.analysis.face_count} face(s)"
        else:
            score = "no face"
        draw.text((x + 4, y + tile + 2 + caption_h // 2), score, fill=(160, 200, 160), font=font_small)

    # Keep under Discord's limit: lower the quality, then the size, until it fits.
    image_out = sheet
    while True:
        buffer = io.BytesIO()
        image_out.save(buffer, format="JPEG", quality=quality, optimize=True)
        data = buffer.getvalue()
        if len(data) < MAX_SHEET_BYTES:
            return data
        if quality > 50:
            quality -= 15
        else:
            image_out = image_out.resize(
                (max(1, image_out.width * 3 // 4), max(1, image_out.height * 3 // 4)),
                Image.Resampling.LANCZOS,
            )
