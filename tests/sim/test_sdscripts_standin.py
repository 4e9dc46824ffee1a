"""The sd-scripts stand-in accepts and refuses what the pinned sd-scripts (v0.10.1) does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from standin_job import make_job_folder

from sim.gpu import install_driver
from sim.sdscripts import safetensors_io
from sim.sdscripts.images import identity_weight
from sim.testdata import TESTDATA_FACES

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES = TESTDATA_FACES

CONFIG = """\
[model_arguments]
pretrained_model_name_or_path = "models/base.safetensors"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 16
network_alpha = 8.0
[training_arguments]
output_dir = "out"
output_name = "elena"
max_train_steps = 8
save_every_n_steps = 4
sample_every_n_steps = 4
sample_prompts = "prompts.txt"
mixed_precision = "bf16"
save_precision = "fp16"
seed = 42
not_an_option = 1
{extra}
"""
DATASET = """\
[general]
caption_extension = ".txt"
[[datasets]]
resolution = [512, 512]
batch_size = 1
  [[datasets.subsets]]
  image_dir = "img"
  num_repeats = 1
  {extra}
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    make_job_folder(tmp_path, "# comment\nohwx man --w 128 --h 128 --d 5\nohwx man smiling --w 128 --h 128\n")
    write(tmp_path)
    return tmp_path


def write(job: Path, config_extra: str = "", dataset_extra: str = "") -> None:
    (job / "config.toml").write_text(CONFIG.format(extra=config_extra))
    (job / "dataset.toml").write_text(DATASET.format(extra=dataset_extra))


def run(job: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    gpu = install_driver(job.parent / "driver", ["NVIDIA RTX A5000"])  # a pod's GPU, as the RunPod sim gives
    return subprocess.run(
        [sys.executable, "-m", "sim.sdscripts", *args],
        cwd=job,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "SDSTANDIN_STEP_SECONDS": "0", **gpu, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


STANDARD = ("--config_file", "config.toml", "--dataset_config", "dataset.toml", "--console_log_simple")


def test_valid_run_writes_real_names_and_safetensors_metadata(job: Path) -> None:
    report = job / "report.json"
    result = run(
        job, "/opt/sd-scripts/sdxl_train_network.py", *STANDARD, env={"SDSTANDIN_REPORT": str(report)}
    )
    assert result.returncode == 0, result.stderr
    assert "running training / 学習開始" in result.stdout
    assert "  total optimization steps / 学習ステップ数: 8" in result.stdout
    assert "\nepoch 1/4\n" in result.stdout and result.stdout.rstrip().endswith("model saved.")
    progress = [p for p in re.split(r"[\r\n]", result.stderr) if p.startswith("steps:")]
    assert re.match(
        r"^steps: 100%\|██████████\| 8/8 \[\d\d:\d\d<00:00, +[\d.]+(it/s|s/it), avr_loss=[\d.e-]+\]",
        progress[-1],
    )
    # The config's unknown key is ignored silently (the report notes it).
    assert "not_an_option" not in result.stdout + result.stderr
    assert json.loads(report.read_text())["ignored_config_keys"] == ["not_an_option"]

    assert sorted(p.name for p in (job / "out").glob("*.safetensors")) == [
        "elena-step00000004.safetensors",
        "elena-step00000008.safetensors",
        "elena.safetensors",
    ]
    samples = sorted(p.name for p in (job / "out" / "sample").iterdir())
    assert len(samples) == 4
    assert re.fullmatch(r"elena_000004_00_\d{14}_5\.png", samples[0])
    assert re.fullmatch(r"elena_000004_01_\d{14}\.png", samples[1])
    meta = safetensors_io.read_metadata(job / "out" / "elena.safetensors")
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_network_dim"] == "16" and meta["ss_network_alpha"] == "8.0"
    assert meta["ss_steps"] == "8" and meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_num_train_images"] == "2" and meta["ss_output_name"] == "elena"
    assert float(meta["ss_training_started_at"]) <= float(meta["ss_training_finished_at"])
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    header = safetensors_io.read_header(job / "out" / "elena.safetensors")
    assert header["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"]["dtype"] == "F16"
    assert header["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"]["shape"] == [16, 64]


def test_alpha_default_is_the_int_one(job: Path) -> None:
    (job / "config.toml").write_text((job / "config.toml").read_text().replace("network_alpha = 8.0\n", ""))
    assert run(job, "train_network.py", *STANDARD).returncode == 0
    assert safetensors_io.read_metadata(job / "out" / "elena.safetensors")["ss_network_alpha"] == "1"


def test_unknown_cli_flag_is_an_argparse_error(job: Path) -> None:
    result = run(job, "train_network.py", *STANDARD, "--text_encoder_lr1", "1e-5")
    assert result.returncode == 2
    assert "usage: train_network.py" in result.stderr
    assert "train_network.py: error: unrecognized arguments: --text_encoder_lr1 1e-5" in result.stderr
    # SD1.5 has no text-encoder caching; SDXL has.
    assert run(job, "train_network.py", *STANDARD, "--cache_text_encoder_outputs").returncode == 2
    assert run(job, "sdxl_train_network.py", "--help").returncode == 0
    bad_choice = run(job, "train_network.py", "--sample_sampler", "dpm++_2m_karras")
    assert bad_choice.returncode == 2 and "invalid choice" in bad_choice.stderr


def test_accelerate_wrapper_turns_failures_into_called_process_error(job: Path) -> None:
    result = run(
        job, "accelerate", "launch", "--num_cpu_threads_per_process", "1", "train_network.py", "--bogus"
    )
    assert result.returncode == 1
    assert "returned non-zero exit status 2" in result.stderr


def test_missing_dataset_config_and_missing_config_file(job: Path) -> None:
    result = run(job, "train_network.py", "--config_file", "config.toml", "--dataset_config", "nope.toml")
    assert result.returncode == 1
    assert "ValueError: file not found / ファイルが見つかりません: nope.toml" in result.stderr
    result = run(job, "train_network.py", "--config_file", "absent")
    assert result.returncode == 1 and "absent.toml not found." in result.stderr


def test_dataset_config_is_strict(job: Path) -> None:
    write(job, dataset_extra="keep_tokens_separatorr = '|||'")
    result = run(job, "train_network.py", *STANDARD)
    assert result.returncode == 1
    assert (
        "voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]"
        "['keep_tokens_separatorr']" in result.stderr
    )
    assert "running training" not in result.stdout
    write(job, dataset_extra="num_repeats = 1.5")
    (job / "dataset.toml").write_text((job / "dataset.toml").read_text().replace("num_repeats = 1\n", ""))
    result = run(job, "train_network.py", *STANDARD)
    assert (
        "expected int for dictionary value @ data['datasets'][0]['subsets'][0]['num_repeats']"
        in result.stderr
    )


def test_config_values_are_not_type_converted(job: Path) -> None:
    write(job, config_extra="resolution = 512")
    result = run(job, "train_network.py", *STANDARD)
    assert result.returncode == 1
    assert "AttributeError: 'int' object has no attribute 'split'" in result.stderr


def test_no_images_exits_zero_without_files(job: Path) -> None:
    for image in (job / "img").glob("*.jpg"):
        image.unlink()
    result = run(job, "train_network.py", *STANDARD)
    assert result.returncode == 0
    assert "No data found. Please verify arguments" in result.stdout
    assert not (job / "out").exists()


def test_failure_modes(job: Path) -> None:
    oom = run(job, "accelerate", "launch", "train_network.py", *STANDARD, env={"SDSTANDIN_OOM_AT_STEP": "2"})
    assert oom.returncode == 1
    assert "torch.OutOfMemoryError: CUDA out of memory." in oom.stderr
    assert "subprocess.CalledProcessError" in oom.stderr

    nan = run(job, "train_network.py", *STANDARD, env={"SDSTANDIN_NAN_AT_STEP": "3"})
    assert nan.returncode == 0  # sd-scripts does not stop on NaN
    assert "avr_loss=nan" in nan.stderr
    assert safetensors_io.read_metadata(job / "out" / "elena.safetensors")["ss_steps"] == "8"

    killed = run(job, "train_network.py", *STANDARD, env={"SDSTANDIN_KILL_AT_STEP": "2"})
    assert killed.returncode == -9
    under_accelerate = run(
        job, "accelerate", "launch", "train_network.py", *STANDARD, env={"SDSTANDIN_KILL_AT_STEP": "2"}
    )
    assert under_accelerate.returncode == 1 and "died with <Signals.SIGKILL: 9>" in under_accelerate.stderr


def test_missing_base_model_fails_before_training(job: Path) -> None:
    (job / "models" / "base.safetensors").unlink()
    result = run(job, "train_network.py", *STANDARD)
    assert result.returncode == 1
    assert "No such file or directory: 'models/base.safetensors'" in result.stderr
    assert "running training" not in result.stdout


def test_sample_resemblance_grows_with_the_step() -> None:
    assert identity_weight(0, 100) == 0.0
    assert identity_weight(10, 100) == 0.0
    assert 0 < identity_weight(40, 100) < identity_weight(60, 100) < 1
    assert identity_weight(80, 100) == 1.0


def test_late_samples_show_the_dataset_face_and_early_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import dlib
    import numpy as np

    from sim.sdscripts.sample_modes import make_sample

    monkeypatch.delenv("SDSTANDIN_SAMPLES", raising=False)  # the default mode: learning

    photos = sorted((FACES / "obama").glob("*.jpg"))
    detector = dlib.get_frontal_face_detector()

    def faces(step: int) -> list[int]:
        counts = []
        for index in range(len(photos)):
            image = make_sample(
                photos, prompt_index=index, step=step, total_steps=100, width=384, height=384, seed=1
            )
            counts.append(len(detector(np.asarray(image), 0)))  # HOG, no upsampling: fast and strict
        return counts

    assert faces(0) == [0] * len(photos)
    assert faces(100) == [1] * len(photos)


def device_line(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("accelerator device:")]
    return line


def test_the_device_is_chosen_as_accelerate_chooses_it(job: Path) -> None:
    """accelerate's config file and environment decide CPU or GPU (sim/sdscripts/accelerate.py)."""
    cpu_built = REPO_ROOT / "tests" / "fixtures" / "hf_home_built_without_gpu"
    image_config = str(REPO_ROOT / "worker" / "accelerate_config.yaml")
    launch = ("accelerate", "launch", "train_network.py", *STANDARD)
    assert device_line(run(job, *launch)) == "accelerator device: cuda"
    built = run(job, *launch, env={"HF_HOME": str(cpu_built)})
    assert device_line(built) == "accelerator device: cpu"
    assert "`--num_cpu_threads_per_process` was set to" in built.stderr  # accelerate's CPU warning
    named = run(
        job,
        "accelerate",
        "launch",
        "--config_file",
        image_config,
        "train_network.py",
        *STANDARD,
        env={"HF_HOME": str(cpu_built)},
    )
    assert device_line(named) == "accelerator device: cuda" and "were not passed" not in named.stderr
    assert device_line(run(job, "accelerate", "launch", "--cpu", "train_network.py", *STANDARD)).endswith(
        "cpu"
    )
    # accelerate launch sets ACCELERATE_USE_CPU for its child: an inherited value does not count...
    assert device_line(run(job, *launch, env={"ACCELERATE_USE_CPU": "1"})).endswith("cuda")
    # ...but the script started alone reads it, and a word accelerate does not know is an error.
    assert device_line(run(job, "train_network.py", *STANDARD, env={"ACCELERATE_USE_CPU": "yes"})).endswith(
        "cpu"
    )
    bad = run(job, "train_network.py", *STANDARD, env={"ACCELERATE_USE_CPU": "maybe"})
    assert bad.returncode == 1 and "ValueError: invalid truth value maybe" in bad.stderr
    # No driver, or a torch that cannot use it: the CPU, silently, as accelerate does.
    assert device_line(run(job, *launch, env={"PATH": "/usr/bin:/bin"})).endswith("cpu")
    assert device_line(run(job, *launch, env={"SDSTANDIN_CUDA_BROKEN": "1"})).endswith("cpu")
    assert device_line(run(job, *launch, env={"CUDA_VISIBLE_DEVICES": ""})).endswith("cpu")
    missing = run(job, "accelerate", "launch", "--config_file", "/nope.yaml", "train_network.py", *STANDARD)
    assert missing.returncode == 1 and "FileNotFoundError: The passed configuration file" in missing.stderr
