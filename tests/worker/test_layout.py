"""The worker's work-dir checks against what the bot renders (no subprocess: fast, every preset)."""

from __future__ import annotations

import io
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from worker_harness import FACES

from bot.training import sdscripts_schema as schema
from bot.training.presets import preset_names
from bot.training.render import RenderResult, TrainingImage, render
from bot.training.snapshots import build_job_spec, freeze
from worker.intake import DatasetRejected, check_dataset, unpack
from worker.job import layout_problems
from worker.protocol import WORK_DATASET_DIR


def _render(preset: str) -> RenderResult:
    photos = sorted((FACES / "kit_harington").glob("*.jpg"))[:2]
    images = [TrainingImage(source=p, caption="ohwx man, photo") for p in photos]
    return render(images, preset=preset, trigger="ohwx", class_word="man")


@pytest.mark.parametrize("preset", preset_names())
def test_rendered_spec_matches_the_layout_and_its_zip_unpacks_where_dataset_toml_looks(
    preset: str, tmp_path: Path
) -> None:
    result = _render(preset)
    frozen = freeze(result)
    spec = build_job_spec(result, dataset_sha256=frozen.archive_sha256, job_id=1, deadline_unix=0)
    config = schema.flatten_config(tomllib.loads(spec.config_toml))[0]
    assert layout_problems(spec, config) == []

    zip_path = tmp_path / "dataset.zip"
    zip_path.write_bytes(frozen.archive)
    assert unpack(zip_path, tmp_path / WORK_DATASET_DIR) == 4  # two images, two captions
    assert check_dataset(spec.dataset_toml, tmp_path) == 2


def test_flux_component_files_must_be_in_fetch_order() -> None:
    result = _render("flux-dev-face")
    spec = build_job_spec(result, dataset_sha256="0" * 64, job_id=1, deadline_unix=0)
    config = schema.flatten_config(tomllib.loads(spec.config_toml))[0]
    clip_l, t5xxl = config["clip_l"], config["t5xxl"]
    swapped = {**config, "clip_l": t5xxl, "t5xxl": clip_l}
    problems = layout_problems(spec, swapped)
    assert problems == [
        f"config.toml's clip_l = {t5xxl!r}, but the worker puts that file at {clip_l!r}",
        f"config.toml's t5xxl = {clip_l!r}, but the worker puts that file at {t5xxl!r}",
    ]
    # Outside models/ (an absolute path on a volume, say) is left to the spec's author.
    assert layout_problems(spec, {**config, "ae": "/workspace/ae.safetensors"}) == []
    clash = replace(spec, base_model=replace(spec.base_model, filename="clip_l.safetensors"))
    assert any("overwrite each other" in p for p in layout_problems(clash, config))


def test_sampling_must_read_the_prompts_the_worker_writes() -> None:
    result = _render("sdxl-face")
    spec = build_job_spec(result, dataset_sha256="0" * 64, job_id=1, deadline_unix=0)
    config = schema.flatten_config(tomllib.loads(spec.config_toml))[0]
    assert layout_problems(spec, {**config, "sample_prompts": "./prompts.txt"}) == []
    [problem] = layout_problems(spec, {**config, "sample_prompts": "dataset/prompts.txt"})
    assert "'prompts.txt'" in problem
    assert layout_problems(spec, {**config, "sample_prompts": None, "sample_every_n_steps": None}) == []


def test_a_work_dir_layout_zip_is_refused_by_the_dataset_check(tmp_path: Path) -> None:
    result = _render("sd15-local")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item in result.files:  # work-dir paths (dataset/full/...): the old, doubled layout
            archive.writestr(item.path, item.read())
    zip_path = tmp_path / "dataset.zip"
    zip_path.write_bytes(buffer.getvalue())
    unpack(zip_path, tmp_path / WORK_DATASET_DIR)
    with pytest.raises(DatasetRejected, match=r"image_dir 'dataset/full' is not in the uploaded dataset"):
        check_dataset(result.dataset_toml, tmp_path)
