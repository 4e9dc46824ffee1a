"""ExportService: the zip for local training (kohya folder, configs, README), refusals that write
nothing, large exports kept on disk, and freezing a dataset into a snapshot row."""

from __future__ import annotations

import io
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.datasets.captioning import CaptionService
from bot.datasets.export import ExportService, normalise_overrides
from bot.datasets.gather import DatasetGatherService
from bot.errors import InvalidInputError, NotFoundError
from bot.training.overrides import split_overrides
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Caption, DatasetSnapshot, FaceAnalysis, Image

from .images import jpeg, with_exif_orientation

Build = Callable[..., DatasetGatherService]
TEN_MIB = 10 * 1024 * 1024
FOLDER = "elena-sdxl-face"


@pytest.fixture
def captions(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore) -> CaptionService:
    return CaptionService(sessions, blobs)


@pytest.fixture
def exports(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, captions: CaptionService, settings: Settings
) -> ExportService:
    return ExportService(sessions, blobs, captions, settings.data_dir)


@pytest.fixture
async def three_images(
    make_service: Build, dataset_id: int, sessions: async_sessionmaker[AsyncSession]
) -> int:
    """#1 with one face found, #2 rotated by EXIF (stored 320x200, seen 200x320), #3 plain."""
    files = [
        ("face.jpg", jpeg(1, size=(256, 256))),
        ("rotated.jpg", with_exif_orientation(jpeg(2, size=(320, 200)), 6)),
        ("plain.jpg", jpeg(3, size=(256, 192))),
    ]
    report = await make_service().from_attachments(dataset_id, files, added_by=42)
    assert len(report.added) == 3
    async with unit_of_work(sessions) as session:
        first = await session.scalar(select(Image).where(Image.dataset_id == dataset_id, Image.position == 1))
        assert first is not None
        session.add(FaceAnalysis(image_id=first.id, engine="dlib", face_count=1, bbox=[80, 60, 170, 180]))
    return dataset_id


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for section in config.values() for k, v in section.items()}


def _left_behind(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_export_zip_is_a_kohya_folder_with_parsable_configs_and_trigger_first_captions(
    three_images: int, captions: CaptionService, exports: ExportService, settings: Settings
) -> None:
    dataset_id = three_images
    await captions.generate(dataset_id)
    await captions.edit(dataset_id, 3, "smiling, kitchen", user_id=5)

    result = await exports.export(dataset_id, "sdxl-face", "rank=16 steps = 600", max_bytes=TEN_MIB)

    assert result.data is not None and result.path is None
    assert result.size == len(result.data) and result.filename.startswith(f"{FOLDER}-")
    assert (result.preset, result.script, result.image_count) == ("sdxl-face", "sdxl_train_network.py", 3)
    files = _entries(result.data)
    assert all(name.startswith(f"{FOLDER}/") for name in files)
    names = {name.removeprefix(f"{FOLDER}/") for name in files}
    assert {"config.toml", "dataset.toml", "prompts.txt", "README.txt"} <= names
    assert {"dataset/full/0001.png", "dataset/full/0002.png", "dataset/full/0003.jpg"} <= names

    dataset_toml = tomllib.loads(files[f"{FOLDER}/dataset.toml"].decode())
    (subset,) = dataset_toml["datasets"][0]["subsets"]
    assert subset["image_dir"] == "dataset/full" and subset["alpha_mask"] is True
    assert subset["caption_extension"] == ".txt"
    config = _flat(tomllib.loads(files[f"{FOLDER}/config.toml"].decode()))
    assert (config["network_dim"], config["max_train_steps"]) == (16, 600)
    assert config["pretrained_model_name_or_path"].startswith("models/")

    captions_txt = {n: files[n].decode() for n in files if n.endswith(".txt") and "/dataset/" in n}
    assert len(captions_txt) == 3
    assert all(text.startswith("ohwx woman") and text.count("\n") == 1 for text in captions_txt.values())
    assert captions_txt[f"{FOLDER}/dataset/full/0003.txt"] == "ohwx woman, smiling, kitchen\n"

    # #1 has a face box: an RGBA PNG whose alpha weights the face; #2 is written upright.
    with PILImage.open(io.BytesIO(files[f"{FOLDER}/dataset/full/0001.png"])) as masked:
        assert masked.mode == "RGBA" and masked.size == (256, 256)
        alpha = masked.getchannel("A")
        assert alpha.getpixel((125, 120)) == 255
        corner = alpha.getpixel((2, 2))
        assert isinstance(corner, int) and corner < 128
    with PILImage.open(io.BytesIO(files[f"{FOLDER}/dataset/full/0002.png"])) as upright:
        assert upright.size == (200, 320)

    readme = files[f"{FOLDER}/README.txt"].decode()
    assert "accelerate launch" in readme and "sdxl_train_network.py" in readme
    assert "--config_file config.toml --dataset_config dataset.toml" in readme
    assert config["pretrained_model_name_or_path"] in readme
    assert "alpha channel is the face-weighted loss mask" in readme
    assert "ohwx" in files[f"{FOLDER}/prompts.txt"].decode()

    again = await exports.export(dataset_id, "sdxl-face", ["rank=16", "steps=600"], max_bytes=TEN_MIB)
    assert again.data == result.data  # deterministic bytes
    assert _left_behind(settings.data_dir / "tmp") == []
    assert _left_behind(exports.exports_dir) == []


async def test_images_without_captions_get_the_template_and_a_warning(
    three_images: int, exports: ExportService
) -> None:
    result = await exports.export(three_images, "sdxl-v4", None, max_bytes=TEN_MIB)
    assert result.data is not None
    files = _entries(result.data)
    captions = [files[n].decode() for n in files if n.endswith(".txt") and "/dataset/" in n]
    assert captions == ["ohwx woman\n"] * 3
    assert any("had no caption yet" in w for w in result.warnings)


async def test_an_export_over_the_limit_is_kept_on_disk(
    three_images: int, exports: ExportService, settings: Settings
) -> None:
    result = await exports.export(three_images, "sdxl-face", max_bytes=1024)

    assert result.data is None and result.path is not None
    assert result.path.parent == settings.data_dir / "exports"
    assert result.path.name == result.filename and result.path.stat().st_size == result.size > 1024
    assert f"{FOLDER}/config.toml" in _entries(result.path.read_bytes())
    assert [p.name for p in _left_behind(exports.exports_dir)] == [result.filename]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("rnak=16", "unknown key `rnak`"),
        ("rank=0", "network_dim"),
        ("rank", "must look like KEY=VALUE"),
    ],
)
async def test_bad_overrides_are_refused_before_anything_is_written(
    three_images: int, exports: ExportService, settings: Settings, overrides: str, expected: str
) -> None:
    with pytest.raises(InvalidInputError, match="refused") as caught:
        await exports.export(three_images, "sdxl-face", overrides, max_bytes=TEN_MIB)
    assert expected in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert _left_behind(settings.data_dir / "exports") == []
    assert _left_behind(settings.data_dir / "tmp") == []


async def test_a_caption_without_the_trigger_stops_the_export(
    three_images: int,
    captions: CaptionService,
    exports: ExportService,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await captions.generate(three_images)
    async with unit_of_work(sessions) as session:
        caption = await session.scalar(select(Caption).order_by(Caption.id))
        assert caption is not None
        caption.text = "woman, ohwx"  # written around the service, as an old row might be
    with pytest.raises(InvalidInputError, match="captions refused"):
        await exports.export(three_images, "sdxl-face", max_bytes=TEN_MIB)
    with pytest.raises(NotFoundError, match="no preset named `nope`"):
        await exports.export(three_images, "nope", max_bytes=TEN_MIB)


async def test_freeze_records_one_snapshot_per_content(
    three_images: int,
    captions: CaptionService,
    exports: ExportService,
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
) -> None:
    await captions.generate(three_images)
    snapshot = await exports.freeze(three_images, "sdxl-face", {"rank": "8"}, user_id=42)

    assert (snapshot.dataset_id, snapshot.preset, snapshot.image_count) == (three_images, "sdxl-face", 3)
    assert snapshot.archive_sha256 is not None and blobs.exists(snapshot.archive_sha256)
    assert snapshot.manifest["overrides"] == {"network_dim": 8}
    assert all(row["caption"].startswith("ohwx woman") for row in snapshot.manifest["images"])
    again = await exports.freeze(three_images, "sdxl-face", "rank=8", user_id=7)
    assert again.id == snapshot.id

    await captions.edit(three_images, 2, "ohwx woman, hat", user_id=5)
    changed = await exports.freeze(three_images, "sdxl-face", "rank=8", user_id=7)
    assert changed.id != snapshot.id
    async with unit_of_work(sessions) as session:
        assert await session.scalar(select(func.count(DatasetSnapshot.id))) == 2


def test_override_text_is_split_on_spaces_and_commas_outside_quotes_and_brackets() -> None:
    assert split_overrides("rank=16, lr = 1e-4;steps=600") == ["rank=16", "lr=1e-4", "steps=600"]
    assert split_overrides('network_args=["conv_dim=4", "conv_alpha=1"] alpha=8') == [
        'network_args=["conv_dim=4", "conv_alpha=1"]',
        "alpha=8",
    ]
    assert split_overrides("sampling.negative='blurry, ugly' rank=4") == [
        "sampling.negative='blurry, ugly'",
        "rank=4",
    ]
    assert normalise_overrides("rank=16 lr=1e-4") == {"rank": "16", "lr": "1e-4"}
    assert normalise_overrides({"rank": 16}) == {"rank": "16"}  # type: ignore[dict-item]
    assert normalise_overrides(None) == {}
