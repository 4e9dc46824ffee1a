"""The stand-in where it used to differ from sd-scripts v0.10.1, one test per difference.

Each behaviour was read off the real source (the tarball ../shared/vendor/sd-scripts-v0.10.1.tar.gz):
the function named in each test is where. tests/contract/test_sdscripts_contract.py pins the facts it can
read from the running real code (image extensions, the dataset schemas, the caching paths' NaN checks,
where --sample_at_first samples).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import toml
from standin_job import make_job_folder

from sim.sdscripts import config as cfg

REPO_ROOT = Path(__file__).resolve().parents[2]
STANDARD = ("--config_file", "config.toml", "--dataset_config", "dataset.toml", "--console_log_simple")

CONFIG = """\
[model_arguments]
pretrained_model_name_or_path = "models/base.safetensors"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 4
network_alpha = 2.0
[training_arguments]
output_dir = "out"
output_name = "elena"
max_train_steps = 4
seed = 1
{extra}
"""
DATASET = """\
[general]
caption_extension = ".txt"
{general}
[[datasets]]
resolution = 512
batch_size = 1
{dataset}
  [[datasets.subsets]]
  image_dir = "img"
  num_repeats = 1
  {subset}
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    make_job_folder(tmp_path, "ohwx man --w 64 --h 64 --d 5\n")
    write(tmp_path)
    return tmp_path


def write(job: Path, config: str = "", *, general: str = "", dataset: str = "", subset: str = "") -> None:
    (job / "config.toml").write_text(CONFIG.format(extra=config))
    (job / "dataset.toml").write_text(DATASET.format(general=general, dataset=dataset, subset=subset))


def run(
    job: Path, script: str = "train_network.py", *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The stand-in with stderr merged into stdout, so the order of logs and the bar is kept."""
    return subprocess.run(
        [sys.executable, "-m", "sim.sdscripts", script, *STANDARD, *extra],
        cwd=job,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "SDSTANDIN_STEP_SECONDS": "0", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


# ---- config files are read with toml 0.10.2 (train_util.read_config_from_file, load_user_config) ----


def test_config_file_is_read_with_toml_0_10_2(job: Path) -> None:
    mixed = "base_weights_multiplier = [1, 0.5]"
    assert tomllib.loads(mixed)  # Python's own parser takes it...
    with pytest.raises(toml.TomlDecodeError):  # ...the one sd-scripts pins does not
        toml.loads(mixed)
    write(job, mixed)
    result = run(job)
    assert result.returncode == 1
    assert "Loading settings from config.toml..." in result.stdout
    assert "toml.decoder.TomlDecodeError: Not a homogeneous array" in result.stdout
    assert "running training" not in result.stdout


def test_dataset_config_is_read_with_toml_0_10_2(job: Path) -> None:
    write(job, subset="face_crop_aug_range = [1, 0.5]")
    result = run(job)
    assert result.returncode == 1
    assert "Error on parsing TOML config file. Please check the format." in result.stdout
    assert "toml.decoder.TomlDecodeError: Not a homogeneous array" in result.stdout


# ---- every key of ConfigSanitizer.argparse_schema is type-checked on the parsed namespace ----


@pytest.mark.parametrize("key", sorted(cfg.ARGPARSE_SCHEMA))
def test_every_dataset_option_is_type_checked(key: str) -> None:
    wrong = {"str": 1, "bool": "yes", "dict": [1]}.get(cfg.ARGPARSE_SCHEMA[key], "1")
    with pytest.raises(cfg.DatasetConfigInvalid, match=re.escape(f"for object value @ data['{key}']")):
        cfg.check_argparse_namespace(argparse.Namespace(**{key: wrong}))
    cfg.check_argparse_namespace(argparse.Namespace(**{key: None}))  # None is skipped, as voluptuous does


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # keys the stand-in used to let through: the real sanitizer checks them all
        ("validation_split = 0", "expected float for object value @ data['validation_split']"),
        ('token_warmup_min = "1"', "expected int for object value @ data['token_warmup_min']"),
        ("caption_prefix = 5", "expected str for object value @ data['caption_prefix']"),
        ('prior_loss_weight = "1"', "expected float for object value @ data['prior_loss_weight']"),
    ],
)
def test_config_values_with_the_wrong_type_stop_the_run(job: Path, line: str, message: str) -> None:
    write(job, line)
    result = run(job)
    assert result.returncode == 1
    assert "Invalid cmdline parsed arguments. This should be a bug." in result.stdout
    assert f"voluptuous.error.MultipleInvalid: {message}" in result.stdout


# ---- bucket limits: rounded to the step, then asserted, bucket_no_upscale or not ----


def test_bucket_limits_are_rounded_to_the_step_before_the_assert(job: Path) -> None:
    # BaseDataset.adjust_min_max_bucket_reso_by_steps: min down, max up to a multiple of the step.
    write(job, dataset="enable_bucket = true\nmin_bucket_reso = 300\nmax_bucket_reso = 500")
    result = run(job)
    assert result.returncode == 0, result.stdout
    assert "min_bucket_reso is adjusted to be multiple of bucket_reso_steps" in result.stdout
    assert "bucket_reso_stepsの倍数になるように調整されました: 300 -> 256" in result.stdout
    assert "bucket_reso_stepsの倍数になるように調整されました: 500 -> 512" in result.stdout  # fits 512 now


@pytest.mark.parametrize("no_upscale", ["false", "true"])
def test_bucket_limits_are_asserted_even_without_upscaling(job: Path, no_upscale: str) -> None:
    write(job, dataset=f"enable_bucket = true\nbucket_no_upscale = {no_upscale}\nmin_bucket_reso = 640")
    result = run(job)
    assert result.returncode == 1
    assert "AssertionError: min_bucket_reso must be equal or less than resolution" in result.stdout
    assert "prepare images." not in result.stdout  # the dataset's constructor asserts before the scan


def test_bucket_step_is_not_checked_without_buckets(job: Path) -> None:
    # verify_bucket_reso_steps: bucket_reso_steps is None when enable_bucket is off.
    write(job, dataset="bucket_reso_steps = 48")
    assert run(job).returncode == 0
    write(job, dataset="enable_bucket = true\nbucket_reso_steps = 48\nmin_bucket_reso = 96")
    result = run(job)
    assert result.returncode == 1
    assert "bucket_reso_steps is 48. it must be divisible by 64." in result.stdout


# ---- text-encoder caching: SDXL and Flux only; _to_disk alone turns it on ----


def test_text_encoder_cache_asserts_do_not_apply_to_sd15(job: Path) -> None:
    # An unknown key of train_network.py: read_config_from_file keeps it, nothing reads it.
    write(job, "cache_text_encoder_outputs = true", general="shuffle_caption = true")
    result = run(job, "train_network.py")
    assert result.returncode == 0, result.stdout
    write(
        job,
        "cache_text_encoder_outputs = true\nnetwork_train_unet_only = true",
        general="shuffle_caption = true",
    )
    result = run(job, "sdxl_train_network.py")
    assert result.returncode == 1
    assert "AssertionError: when caching Text Encoder output, either caption_dropout_rate" in result.stdout


@pytest.mark.parametrize("script", ["sdxl_train_network.py", "flux_train_network.py"])
def test_cache_to_disk_alone_turns_text_encoder_caching_on(job: Path, script: str) -> None:
    flux_models = '\nclip_l = "models/base.safetensors"\nt5xxl = "models/base.safetensors"\n'
    flux_models += 'ae = "models/base.safetensors"'
    extra = "cache_text_encoder_outputs_to_disk = true\nnetwork_train_unet_only = true"
    extra += flux_models if script.startswith("flux") else ""
    write(job, extra, general="shuffle_caption = true")
    result = run(job, script)
    assert result.returncode == 1
    assert "so cache_text_encoder_outputs is also enabled" in result.stdout or (
        "cache_text_encoder_outputs is enabled because cache_text_encoder_outputs_to_disk is enabled"
        in result.stdout
    )
    assert "AssertionError: when caching Text Encoder output" in result.stdout
    write(job, extra)  # no shuffling: caching is fine
    result = run(job, script)
    assert result.returncode == 0, result.stdout
    assert "caching Text Encoder outputs with caching strategy." in result.stdout


def test_sdxl_cache_to_disk_alone_refuses_training_the_text_encoder(job: Path) -> None:
    write(job, "cache_text_encoder_outputs_to_disk = true")
    result = run(job, "sdxl_train_network.py")
    assert result.returncode == 1
    assert "network for Text Encoder cannot be trained with caching Text Encoder outputs" in result.stdout


# ---- the dataset schema follows --masked_loss (ConfigSanitizer(True, True, args.masked_loss, True)) ----


def test_mask_directory_subsets_need_masked_loss() -> None:
    config = {"datasets": [{"subsets": [{"image_dir": "img", "conditioning_data_dir": "masks"}]}]}
    with pytest.raises(
        cfg.DatasetConfigInvalid,
        match=re.escape(
            "extra keys not allowed @ data['datasets'][0]['subsets'][0]['conditioning_data_dir']"
        ),
    ):
        cfg.validate_dataset_config(config)
    cfg.validate_dataset_config(config, support_controlnet=True)
    # With --masked_loss a subset without the mask directory is a DreamBooth one (alpha_mask allowed).
    cfg.validate_dataset_config(
        {"datasets": [{"subsets": [{"image_dir": "img", "alpha_mask": True}]}]}, support_controlnet=True
    )
    # A controlnet subset has no class_tokens; a DreamBooth one may not carry conditioning_data_dir.
    with pytest.raises(cfg.DatasetConfigInvalid, match="class_tokens"):
        cfg.validate_dataset_config(
            {
                "datasets": [
                    {"subsets": [{"image_dir": "i", "conditioning_data_dir": "m", "class_tokens": "x"}]}
                ]
            },
            support_controlnet=True,
        )


def test_a_dataset_without_subsets_falls_on_the_matching_schema() -> None:
    # all() of nothing is True: the fine-tuning schema (no caption_extension at dataset level) without
    # --masked_loss, the controlnet one with it.
    config = {"datasets": [{"caption_extension": ".txt"}]}
    with pytest.raises(
        cfg.DatasetConfigInvalid, match=re.escape("@ data['datasets'][0]['caption_extension']")
    ):
        cfg.validate_dataset_config(config)
    cfg.validate_dataset_config(config, support_controlnet=True)


def test_masked_loss_run_validates_mask_directories(job: Path) -> None:
    (job / "masks").mkdir()
    write(job, subset='conditioning_data_dir = "masks"')
    result = run(job)
    assert result.returncode == 1
    assert (
        "extra keys not allowed @ data['datasets'][0]['subsets'][0]['conditioning_data_dir']" in result.stdout
    )
    write(job, "masked_loss = true", subset='conditioning_data_dir = "masks"')
    result = run(job)
    assert "extra keys not allowed" not in result.stdout


# ---- images: exact extensions, dotfiles are not images (train_util.glob_images) ----


def test_images_are_found_by_exact_extension_and_dotfiles_are_skipped(tmp_path: Path) -> None:
    for name in ("a.png", "b.Jpg", "c.JPG", "d.jpeg", ".e.png", "._f.jpg", "g.webp", "h.gif", "i.PnG"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "j.png").write_bytes(b"x")
    assert [p.name for p in cfg.images_in(str(tmp_path))] == ["a.png", "c.JPG", "d.jpeg", "g.webp"]


def test_a_run_skips_mixed_case_extensions(job: Path) -> None:
    (job / "img" / "0.jpg").rename(job / "img" / "0.Jpg")
    shutil.copy(job / "img" / "1.jpg", job / "img" / ".hidden.jpg")
    result = run(job)
    assert result.returncode == 0
    assert "found directory img contains 1 image files" in result.stdout


# ---- the training loop: micro-batches, sample_at_first, NaN at caching ----


def _frames(output: str) -> list[str]:
    return [frame for frame in re.split(r"[\r\n]", output) if frame.startswith("steps:")]


def test_progress_is_redrawn_per_micro_batch_under_accumulation(job: Path) -> None:
    # 2 images, batch 1 → 2 micro-batches per epoch; accumulation 2 → 1 step per epoch.
    write(job, "gradient_accumulation_steps = 2")
    result = run(job)
    assert result.returncode == 0, result.stdout
    # The first micro-batch's loss shows before the first optimizer step completes.
    assert any(re.search(r"\| 0/4 .*avr_loss=", frame) for frame in _frames(result.stdout))
    assert "epoch 4/4" in result.stdout and "epoch 5/" not in result.stdout
    write(job)
    result = run(job)
    assert not any(re.search(r"\| 0/4 .*avr_loss=", frame) for frame in _frames(result.stdout))


def test_sample_at_first_comes_before_the_steps_bar(job: Path) -> None:
    write(job, 'sample_at_first = true\nsample_prompts = "prompts.txt"')
    result = run(job)
    assert result.returncode == 0, result.stdout
    first_sample = result.stdout.index("generating sample images at step / サンプル画像生成 ステップ: 0")
    assert first_sample < result.stdout.index("steps:")
    assert sorted(p.name.split("_")[1] for p in (job / "out" / "sample").iterdir()) == ["e000000"]


@pytest.mark.parametrize("where", ["latents", "text_encoder"])
def test_nan_while_caching_trains_on_with_a_nan_loss(job: Path, where: str) -> None:
    # v0.10.1's caching strategies never look for NaN (see test_standin_follows_the_real_source): the run
    # does not exit at caching, the loss is NaN from the first step, and the worker stops it from there.
    write(job, "cache_latents = true\ncache_text_encoder_outputs = true\nnetwork_train_unet_only = true")
    result = run(job, "sdxl_train_network.py", env={"SDSTANDIN_NAN_IN_CACHE": where})
    assert result.returncode == 0
    assert "running training / 学習開始" in result.stdout
    losses = [frame for frame in _frames(result.stdout) if "avr_loss=" in frame]
    assert losses and all("avr_loss=nan" in frame for frame in losses)
