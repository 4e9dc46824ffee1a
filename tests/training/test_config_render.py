"""Rendering every preset into the files sd-scripts reads, and parsing them back."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from PIL import Image

from bot.training import sdscripts_schema as schema
from bot.training.presets import Preset, load_preset, preset_names
from bot.training.render import (
    FLUX_COMPONENT_ROLES,
    RenderError,
    TrainingImage,
    base_model_source,
    model_paths,
    render,
)
from sim.testdata import TESTDATA_FACES
from worker.protocol import BaseModelSource

TRIGGER, CLASS = "ohwx", "man"
# In CI a copy of shared/ sits beside the clone.
FACES = TESTDATA_FACES


@pytest.fixture
def images(tmp_path: Path) -> list[TrainingImage]:
    """Full photos of one person (real test photos) plus face crops made from them."""
    out: list[TrainingImage] = []
    for path in sorted((FACES / "obama").glob("*.jp*g")):
        with Image.open(path) as img:
            w, h = img.size
        bbox = (w * 0.35, h * 0.15, w * 0.65, h * 0.5)
        out.append(TrainingImage(source=path, caption=f"{TRIGGER} {CLASS}, photo", face_bbox=bbox))
        crop_path = tmp_path / f"crop_{path.stem}.jpg"
        with Image.open(path) as img:
            img.convert("RGB").crop((int(bbox[0]), int(bbox[1]), int(bbox[2]), int(bbox[3]))).save(crop_path)
        out.append(
            TrainingImage(
                source=crop_path, caption=f"{TRIGGER} {CLASS}, close-up", subset="face_crops", name=path.stem
            )
        )
    return out


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_renders_and_parses_back(name: str, images: list[TrainingImage], tmp_path: Path) -> None:
    preset = load_preset(name)
    result = render(images, preset=name, trigger=TRIGGER, class_word=CLASS)
    out = tmp_path / "work"
    result.write(out)

    config = tomllib.loads((out / "config.toml").read_text())
    flat, duplicates = schema.flatten_config(config)
    assert duplicates == []
    known = schema.arguments(preset.family)
    assert set(flat) <= set(known), set(flat) - set(known)
    schema.validate_training_config(config, preset.family)  # no exception: known keys, valid values
    assert flat["network_alpha"] == float(preset.train["network_alpha"])  # always explicit
    assert isinstance(flat["network_alpha"], float)
    assert flat["mixed_precision"] in ("fp16", "bf16")  # the script's own flag, never left at "no"
    # Each base-model file where the worker puts it: models/<local_name>, in fetch order.
    source = base_model_source(preset)
    assert result.base_model == source
    assert flat["pretrained_model_name_or_path"] == f"models/{preset.base_model['filename']}"
    assert flat["pretrained_model_name_or_path"] == f"models/{source.local_name}"
    assert flat["sample_prompts"] == "prompts.txt" and flat["output_dir"] == "output"
    assert flat["logging_dir"] == "logs"
    if preset.family == "flux":
        extras = {item["role"]: item["filename"] for item in preset.base_model["extra"]}
        assert {k: flat[k] for k in FLUX_COMPONENT_ROLES} == {
            role: f"models/{extras[role]}" for role in FLUX_COMPONENT_ROLES
        }
        assert [flat[k] for k in FLUX_COMPONENT_ROLES] == [f"models/{e.local_name}" for e in source.extra]
        assert flat["guidance_scale"] == 1.0
    assert result.model_paths == {k: flat[k] for k in result.model_paths}

    dataset = tomllib.loads((out / "dataset.toml").read_text())
    schema.validate_dataset_config(dataset, preset.family, training=flat)
    assert dataset["general"]["caption_extension"] == ".txt"
    subsets = dataset["datasets"][0]["subsets"]
    dirs = [s["image_dir"] for s in subsets]
    assert dirs == (
        ["dataset/full", "dataset/face_crops"] if preset.face["crops_subset"] else ["dataset/full"]
    )
    for subset in subsets:
        folder = out / subset["image_dir"]
        pictures = [p for p in folder.iterdir() if p.suffix in (".png", ".jpg", ".jpeg")]
        assert pictures
        for picture in pictures:  # one caption per image, trigger first
            caption = picture.with_suffix(".txt").read_text().strip()
            assert caption.split(",")[0].split()[0] == TRIGGER
        assert subset["class_tokens"] == f"{TRIGGER} {CLASS}"
    if not preset.face.get("crops_subset"):
        assert not (out / "dataset" / "face_crops").exists()

    masked = bool(preset.face.get("alpha_mask"))
    assert bool(subsets[0].get("alpha_mask")) == masked
    if masked:
        with Image.open(next((out / "dataset/full").glob("*.png"))) as png:
            assert png.mode == "RGBA"
            alpha = png.getchannel("A")
            low, high = alpha.getextrema()
            assert high == 255 and low == round(preset.face["background"] * 255)
            w, h = png.size
            assert alpha.getpixel((w // 2, int(h * 0.32))) == 255  # face centre weighted fully

    prompts = [ln for ln in (out / "prompts.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(prompts) == 4
    seeds = [int(ln.split(" --d ")[1].split()[0]) for ln in prompts]
    assert seeds == [p.seed for p in preset.prompts]
    assert all(ln.startswith(f"{TRIGGER} {CLASS},") for ln in prompts)
    assert all(" --w " in ln and " --h " in ln for ln in prompts)
    assert result.total_steps == preset.max_train_steps


def test_preset_metadata_for_the_estimator_and_worker() -> None:
    for name in preset_names():
        preset = load_preset(name)
        assert preset.family in schema.FAMILIES
        assert preset.min_vram_gb >= 4 and preset.early_stop_patience >= 1
        assert preset.checkpoint_every_n_steps and preset.sample_every_n_steps
        assert preset.speed_for("NVIDIA GeForce RTX 4090") is not None
        assert all(0 < s < 60 for s in preset.speed_s_per_it.values())
        kinds = [p.kind for p in preset.prompts]
        assert kinds == ["face close-up", "half body", "another outfit", "another scene"]
        source = base_model_source(preset)
        assert source.kind == "hf" and source.repo and source.filename.endswith(".safetensors")
        assert len(source.extra) == (3 if preset.family == "flux" else 0)
    v4 = load_preset("sdxl-v4").train
    assert (v4["network_dim"], v4["network_alpha"], v4["max_train_steps"], v4["learning_rate"]) == (
        32,
        32.0,
        1500,
        5e-5,
    )
    assert (v4["gradient_accumulation_steps"], v4["lr_warmup_steps"], v4["lr_scheduler"]) == (
        2,
        200,
        "cosine_with_restarts",
    )
    local = load_preset("sd15-local")
    assert (local.train["network_dim"], local.train["network_alpha"], local.max_train_steps) == (8, 4.0, 100)
    assert local.train["cache_latents_to_disk"] and local.train["gradient_checkpointing"]
    assert load_preset("sdxl-face").train["network_dim"] == 64


def test_exif_rotated_images_are_written_upright(tmp_path: Path) -> None:
    src = tmp_path / "rot.jpg"
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    img.save(src, exif=exif)
    result = render(
        [TrainingImage(source=src, caption="ohwx man")], preset="sdxl-v4", trigger="ohwx", class_word="man"
    )
    out = tmp_path / "w"
    result.write(out)
    with Image.open(out / "dataset/full/rot.png") as png:
        assert png.size == (20, 40)


def test_write_refuses_stale_images(images: list[TrainingImage], tmp_path: Path) -> None:
    result = render(images[:2], preset="sdxl-v4", trigger=TRIGGER, class_word=CLASS)
    result.write(tmp_path)
    (tmp_path / "dataset/full/stale.jpg").write_bytes(b"x")
    with pytest.raises(Exception, match="--force"):
        result.write(tmp_path)
    result.write(tmp_path, overwrite=True)
    assert not (tmp_path / "dataset/full/stale.jpg").exists()


def test_captions_without_trigger_are_refused(images: list[TrainingImage]) -> None:
    bad = [TrainingImage(source=images[0].source, caption="a man at a podium")]
    with pytest.raises(Exception, match="does not start with the trigger"):
        render(bad, preset="sdxl-face", trigger=TRIGGER, class_word=CLASS)


def test_unused_crops_are_reported(images: list[TrainingImage]) -> None:
    result = render(images, preset="sdxl-v4", trigger=TRIGGER, class_word=CLASS)
    assert any("face crops not used" in w for w in result.warnings)


def test_model_paths_follow_the_workers_local_names() -> None:
    source = BaseModelSource(
        kind="url",
        url="https://example.test/files/my-sdxl.safetensors?download=true",
    )
    assert model_paths(source, "sdxl") == {"pretrained_model_name_or_path": "models/my-sdxl.safetensors"}
    nested = BaseModelSource(kind="hf", repo="org/repo", filename="split_files/unet/model.safetensors")
    assert model_paths(nested, "sd15") == {"pretrained_model_name_or_path": "models/model.safetensors"}
    with pytest.raises(RenderError, match="flux needs 4"):
        model_paths(source, "flux")


def test_base_model_files_with_one_name_are_refused() -> None:
    data = load_preset("flux-dev-face").data  # a fresh copy
    for item in data["base_model"]["extra"]:
        item["filename"] = "same.safetensors"  # three files, one models/ name
    with pytest.raises(RenderError, match="overwrite each other"):
        base_model_source(Preset(data))
