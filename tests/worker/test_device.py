"""No training on the CPU by mistake: the worker's reading of accelerate's settings, the pod's GPUs and the
trainer's device line (worker/device.py), and the image's launch settings.

The real accelerate is the referee for the reading itself: tests/realtrainer/test_accelerate_contract.py
runs the real ``accelerate launch`` on the same settings and compares.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from worker_harness import ACCELERATE, REPO_ROOT, Stubs, make_spec

from sim.gpu import install_driver
from sim.testdata import snapshot_zip
from worker import device
from worker.settings import ACCELERATE_CONFIG_PATH, DEFAULT_TRAINER_CMD

CPU_BUILT_HF_HOME = REPO_ROOT / "tests" / "fixtures" / "hf_home_built_without_gpu"
LAUNCH = [*shlex.split(DEFAULT_TRAINER_CMD), "/opt/sd-scripts/train_network.py"]


def env_with(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", **extra}


def image_command() -> list[str]:
    """The image's trainer command with its config file taken from the repository."""
    repo_file = str(REPO_ROOT / "worker" / "accelerate_config.yaml")
    return [repo_file if part == ACCELERATE_CONFIG_PATH else part for part in LAUNCH]


def test_the_image_names_its_accelerate_settings_and_they_use_the_gpu(tmp_path: Path) -> None:
    dockerfile = (REPO_ROOT / "worker" / "Dockerfile").read_text()
    # No build-time probe may decide: `accelerate config` run while building sees no GPU.
    assert not re.search(r"^\s*(RUN|&&).*accelerate config", dockerfile, re.MULTILINE)
    assert f"COPY worker/accelerate_config.yaml {ACCELERATE_CONFIG_PATH}" in dockerfile
    plan = device.launch_plan(image_command(), env_with(tmp_path))
    assert plan.accelerate and plan.problem is None
    assert plan.config_file == REPO_ROOT / "worker" / "accelerate_config.yaml"
    assert plan.use_cpu_reason is None and plan.visible_devices is None
    # Even over a CPU default config left in the image: the named file is the one that counts.
    over_bad_default = device.launch_plan(image_command(), env_with(tmp_path, HF_HOME=str(CPU_BUILT_HF_HOME)))
    assert over_bad_default.use_cpu_reason is None


def test_the_build_time_default_config_is_read_as_cpu(tmp_path: Path) -> None:
    plan = device.launch_plan(
        [*shlex.split(ACCELERATE), "t.py"], env_with(tmp_path, HF_HOME=str(CPU_BUILT_HF_HOME))
    )
    assert plan.config_file == CPU_BUILT_HF_HOME / "accelerate" / "default_config.yaml"
    assert plan.use_cpu_reason is not None and "use_cpu: true" in plan.use_cpu_reason
    # The same file found through XDG_CACHE_HOME and through HOME (accelerate's fallbacks for HF_HOME).
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache" / "huggingface").symlink_to(CPU_BUILT_HF_HOME)
    assert device.launch_plan(["accelerate", "launch", "t.py"], env_with(tmp_path)).use_cpu_reason
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / "huggingface").symlink_to(CPU_BUILT_HF_HOME)
    plan = device.launch_plan(["accelerate", "launch", "t.py"], env_with(tmp_path, XDG_CACHE_HOME=str(xdg)))
    assert plan.use_cpu_reason


def test_cpu_flag_gpu_ids_and_inherited_variables(tmp_path: Path) -> None:
    assert device.launch_plan(["accelerate", "launch", "--cpu", "t.py"], env_with(tmp_path)).use_cpu_reason
    # accelerate launch overrides an inherited ACCELERATE_USE_CPU; a plain python launch reads it.
    inherited = env_with(tmp_path, ACCELERATE_USE_CPU="true")
    assert device.launch_plan(["accelerate", "launch", "t.py"], inherited).use_cpu_reason is None
    assert device.launch_plan(["python", "t.py"], inherited).use_cpu_reason
    assert device.launch_plan(["python", "t.py"], env_with(tmp_path, ACCELERATE_USE_CPU="maybe")).problem
    config = tmp_path / "acc.json"
    config.write_text('{"distributed_type": "NO", "use_cpu": false, "gpu_ids": "3"}')
    plan = device.launch_plan(
        ["accelerate", "launch", "--config_file", str(config), "t.py"], env_with(tmp_path)
    )
    assert plan.use_cpu_reason is None and plan.visible_devices == "3"
    plan = device.launch_plan(
        ["accelerate", "launch", f"--config_file={config}", "--gpu_ids", "all", "t.py"],
        env_with(tmp_path, CUDA_VISIBLE_DEVICES="1"),
    )
    assert plan.visible_devices == "1"
    missing = device.launch_plan(
        ["accelerate", "launch", "--config_file", "/nope.yaml", "t.py"], env_with(tmp_path)
    )
    assert missing.problem is not None and "does not exist" in missing.problem
    config.write_text('{"use_cpu": false}')
    incomplete = device.launch_plan(
        ["accelerate", "launch", "--config_file", str(config), "t.py"], env_with(tmp_path)
    )
    assert incomplete.problem is not None and "has no distributed_type" in incomplete.problem


def test_visible_devices_select_like_cuda() -> None:
    gpus = [device.Gpu(0, "A", "GPU-aaaa-1111"), device.Gpu(1, "B", "GPU-bbbb-2222")]
    assert device.selected_gpus(gpus, None) == gpus
    assert device.selected_gpus(gpus, "1") == [gpus[1]]
    assert device.selected_gpus(gpus, "GPU-bbbb,0") == [gpus[1], gpus[0]]
    assert device.selected_gpus(gpus, "") == []
    assert device.selected_gpus(gpus, "-1") == []
    assert device.selected_gpus(gpus, "0,7,1") == [gpus[0]]  # CUDA stops at the first bad entry


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("accelerator device: cuda", "cuda"),
        ("accelerator device: cuda:0", "cuda"),
        ("accelerator device: cpu", "cpu"),
    ],
)
def test_device_line(line: str, kind: str) -> None:
    assert device.parse_device_line(line) == kind
    assert device.parse_device_line("prepare accelerator") is None


async def test_gpu_inventory_from_the_driver(tmp_path: Path) -> None:
    gpu_env = install_driver(tmp_path / "bin", ["NVIDIA RTX A5000", "NVIDIA RTX A5000"], path="/usr/bin:/bin")
    check = await device.check_before_launch([*LAUNCH[:-1], "--cpu", "t.py"], env_with(tmp_path, **gpu_env))
    assert check.problem is not None and "--cpu" in check.problem
    check = await device.check_before_launch(image_command(), env_with(tmp_path, **gpu_env))
    assert check.problem is None and [g.index for g in check.gpus] == [0, 1]
    check = await device.check_before_launch(
        image_command(), env_with(tmp_path, **gpu_env, CUDA_VISIBLE_DEVICES="")
    )
    assert check.problem is not None and "hides every GPU" in check.problem
    check = await device.check_before_launch(image_command(), env_with(tmp_path))
    assert check.problem is not None and "no CUDA GPU is visible" in check.problem


# ---- the worker: refusals before the launch and at the device line ----


async def run_to_end(start_worker, env: dict[str, str]) -> dict:
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(zip_bytes=zipped), env)
    # A refused job may be over before the upload arrives: then the worker answers 409.
    assert (await worker.upload(zipped)).status in (201, 409)
    return await worker.wait_state("finished", "failed")


async def test_a_cpu_default_config_is_refused_before_the_download(start_worker, stubs: Stubs) -> None:
    status = await run_to_end(start_worker, {"HF_HOME": str(CPU_BUILT_HF_HOME)})
    assert status["state"] == "failed" and status["step"] == 0
    assert status["error"].startswith("refusing to train on the CPU: accelerate's config file ")
    assert "use_cpu: true" in status["error"]
    assert stubs.hf_requests == []  # the base model (gigabytes) was never fetched
    assert not any("launching:" in line for line in status["log_tail"])


async def test_a_pod_without_gpu_is_refused(start_worker, stubs: Stubs) -> None:
    status = await run_to_end(start_worker, {"PATH": "/usr/bin:/bin", "NVIDIA_VISIBLE_DEVICES": ""})
    assert status["state"] == "failed"
    assert "no CUDA GPU is visible in the pod (nvidia-smi is not in the pod" in status["error"]
    assert stubs.hf_requests == []


async def test_a_trainer_that_reports_cpu_is_stopped_before_its_first_step(start_worker) -> None:
    # The driver lists a GPU, the settings say GPU, but torch cannot use it: only the device line tells.
    status = await run_to_end(start_worker, {"SDSTANDIN_CUDA_BROKEN": "1"})
    assert status["state"] == "failed" and status["step"] == 0 and status["checkpoints"] == []
    assert "sd-scripts reported 'accelerator device: cpu'" in status["error"]
    assert "accelerator device: cpu" in status["log_tail"] and status["samples"] == []


async def test_the_test_only_switch_allows_cpu_training(
    start_worker, capfd: pytest.CaptureFixture[str]
) -> None:
    status = await run_to_end(
        start_worker,
        {
            "SDSTANDIN_CUDA_BROKEN": "1",
            "SDSTANDIN_CPU_SLOWDOWN": "1",
            "PATH": "/usr/bin:/bin",
            device.ALLOW_CPU_ENV: "1",
        },
    )
    assert status["state"] == "finished", status["error"]
    log = capfd.readouterr().err  # the worker's own log (its stderr is this test's)
    assert f"so training would run on the CPU; allowed by {device.ALLOW_CPU_ENV} (tests only)" in log
    assert f"the trainer runs on cpu; allowed by {device.ALLOW_CPU_ENV} (tests only)" in log
