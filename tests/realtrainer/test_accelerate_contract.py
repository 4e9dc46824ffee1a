"""The real accelerate 1.6.0 (sd-scripts v0.10.1's pin) referees the two readings of its launch settings:
the worker's (worker/device.py, which refuses CPU training) and the stand-in's launcher
(sim/sdscripts/accelerate.py, which decides the stand-in's device).

For each case the real ``accelerate launch`` starts a tiny script that prints what accelerate put in its
environment (``ACCELERATE_USE_CPU``, ``CUDA_VISIBLE_DEVICES``, ``ACCELERATE_MIXED_PRECISION``); both
readings must conclude the same, and the stand-in must warn as accelerate does.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from sim.sdscripts import accelerate as standin
from worker import device

from .conftest import REPO_ROOT, RealSdScripts

pytestmark = [pytest.mark.realtrainer, pytest.mark.timeout(900)]

CPU_BUILT_HF_HOME = REPO_ROOT / "tests" / "fixtures" / "hf_home_built_without_gpu"
IMAGE_CONFIG = REPO_ROOT / "worker" / "accelerate_config.yaml"
SHOW_ENV = """\
import json, os
print("ENV " + json.dumps({k: os.environ.get(k) for k in
      ("ACCELERATE_USE_CPU", "CUDA_VISIBLE_DEVICES", "ACCELERATE_MIXED_PRECISION", "OMP_NUM_THREADS")}))
"""


def cases(tmp_path: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    gpu3 = tmp_path / "gpu3.json"
    gpu3.write_text(
        json.dumps(
            {
                "compute_environment": "LOCAL_MACHINE",
                "distributed_type": "NO",
                "use_cpu": False,
                "gpu_ids": "3",
            }
        )
    )
    cpu_yaml = tmp_path / "cpu.yaml"
    cpu_yaml.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nuse_cpu: true\nmixed_precision: fp16\n"
    )
    return [
        ("default config written at build time", [], {"HF_HOME": str(CPU_BUILT_HF_HOME)}),
        (
            "the image's config over that default",
            ["--config_file", str(IMAGE_CONFIG)],
            {"HF_HOME": str(CPU_BUILT_HF_HOME)},
        ),
        ("--cpu", ["--cpu"], {}),
        ("no config at all", [], {}),
        ("inherited ACCELERATE_USE_CPU", [], {"ACCELERATE_USE_CPU": "true"}),
        ("gpu_ids in a JSON config", ["--config_file", str(gpu3)], {}),
        (
            "--gpu_ids over the config",
            ["--config_file", str(gpu3), "--gpu_ids", "all"],
            {"CUDA_VISIBLE_DEVICES": "1"},
        ),
        ("use_cpu in a YAML config", [f"--config_file={cpu_yaml}"], {}),
    ]


@pytest.mark.parametrize("index", range(8))
def test_worker_and_standin_read_launch_settings_as_accelerate_does(
    index: int, real_sdscripts: RealSdScripts, tmp_path: Path
) -> None:
    name, options, extra = cases(tmp_path)[index]
    script = tmp_path / "show_env.py"
    script.write_text(SHOW_ENV)
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    real = subprocess.run(
        [str(real_sdscripts.accelerate), "launch", *options, str(script)],
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert real.returncode == 0, f"{name}: {real.stderr[-3000:]}"
    (line,) = [x for x in real.stdout.splitlines() if x.startswith("ENV ")]
    child = json.loads(line.removeprefix("ENV "))
    real_cpu = standin.str_to_bool(child["ACCELERATE_USE_CPU"])

    plan = device.launch_plan(["accelerate", "launch", *options, "train_network.py"], base)
    assert plan.problem is None, name
    assert (plan.use_cpu_reason is not None) == real_cpu, f"{name}: worker says {plan}, accelerate {child}"
    assert plan.visible_devices == child["CUDA_VISIBLE_DEVICES"], name

    launch_options, rest = standin.split_launch_args([*options, "train_network.py"])
    assert rest == ["train_network.py"]
    warnings = io.StringIO()
    with redirect_stderr(warnings):
        env = standin.child_environment(launch_options, base)
    for key in (
        "ACCELERATE_USE_CPU",
        "CUDA_VISIBLE_DEVICES",
        "ACCELERATE_MIXED_PRECISION",
        "OMP_NUM_THREADS",
    ):
        assert env.get(key) == child[key], (
            f"{name}: stand-in {key}={env.get(key)!r}, accelerate {child[key]!r}"
        )
    real_warning = [x for x in real.stderr.splitlines() if "`--" in x or "not passed" in x or "To avoid" in x]
    standin_warning = [x for x in warnings.getvalue().splitlines() if x]
    assert [w.strip() for w in standin_warning] == [w.strip() for w in real_warning], name


def test_a_missing_or_incomplete_config_file_is_refused_by_all_three(
    real_sdscripts: RealSdScripts, tmp_path: Path
) -> None:
    script = tmp_path / "show_env.py"
    script.write_text(SHOW_ENV)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    real = subprocess.run(
        [str(real_sdscripts.accelerate), "launch", "--config_file", "/nope.yaml", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (
        real.returncode != 0
        and "FileNotFoundError: The passed configuration file `/nope.yaml`" in real.stderr
    )
    plan = device.launch_plan(["accelerate", "launch", "--config_file", "/nope.yaml", "t.py"], env)
    assert plan.problem is not None and "does not exist" in plan.problem
    with pytest.raises(FileNotFoundError, match=r"configuration file `/nope\.yaml` does not exist"):
        standin.child_environment({"--config_file": "/nope.yaml"}, env)
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text("compute_environment: LOCAL_MACHINE\nuse_cpu: false\n")
    real = subprocess.run(
        [str(real_sdscripts.accelerate), "launch", "--config_file", str(incomplete), str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (
        real.returncode != 0 and "A `distributed_type` must be specified in the config file." in real.stderr
    )
    plan = device.launch_plan(["accelerate", "launch", "--config_file", str(incomplete), "t.py"], env)
    assert plan.problem is not None and "has no distributed_type" in plan.problem
    with pytest.raises(ValueError, match="distributed_type` must be specified"):
        standin.child_environment({"--config_file": str(incomplete)}, env)
