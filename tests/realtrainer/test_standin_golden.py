"""The stand-in replays the real trainer: its console and files for the golden record's config have the
record's shape (tests/realtrainer/golden.py says what that means; the record is the real sd-scripts
v0.10.1 run of test_real_run.py). Runs the stand-in only: no real sd-scripts needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.training.render import TrainingImage, render

from . import golden
from .test_real_run import OVERRIDES, PHOTOS

REPO_ROOT = Path(__file__).resolve().parents[2]


def work_dir(tmp_path: Path, record: golden.Record) -> Path:
    """The worker's work directory for the record's job: the same photos, configs and prompts."""
    work = tmp_path / "job"
    images = [TrainingImage(source=p, caption="ohwx man, photo") for p in PHOTOS]
    result = render(images, preset="sd15-local", trigger="ohwx", class_word="man", overrides=OVERRIDES)
    for item in result.dataset_files():
        target = work / "dataset" / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.read())
    (work / "config.toml").write_text(record.config_toml)
    (work / "dataset.toml").write_text(record.dataset_toml)
    (work / "prompts.txt").write_text(record.prompts_txt)
    (work / "models").mkdir()
    (work / "models" / result.base_model.local_name).write_bytes(b"stand-in base model")
    return work


def test_the_standin_output_has_the_shape_of_the_real_run(tmp_path: Path) -> None:
    record = golden.load()
    work = work_dir(tmp_path, record)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": "/usr/bin:/bin",  # no NVIDIA driver: the record was made on a CPU
        "SDSTANDIN_STEP_SECONDS": "0.2",  # slower than tqdm's redraw interval, like a real step
        "SDSTANDIN_CPU_SLOWDOWN": "1",
    }
    command = [sys.executable, "-m", "sim.sdscripts", "accelerate", "launch"]
    command += ["--config_file", str(REPO_ROOT / "worker" / "accelerate_config.yaml")]
    command += ["--num_cpu_threads_per_process", "2", "/opt/sd-scripts/train_network.py"]
    command += ["--config_file", "config.toml", "--dataset_config", "dataset.toml", "--console_log_simple"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, timeout=120, check=False)
    run = golden.Console.from_raw(
        done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"), done.returncode
    )
    golden.assert_same_shape(record, run, golden.output_tree(work / "output"))


def test_a_changed_line_shape_is_caught() -> None:
    """The comparison can fail: a stand-in that printed its own progress format would be caught."""
    record = golden.load()
    steps = [line.replace("steps:", "step:") for line in record.console.stderr]
    run = golden.Console(record.console.stdout, steps, record.console.exit_code)
    problems = golden.differences(record, run, record.files)
    assert any("stderr events differ" in p for p in problems)
    assert any("stderr lines the real trainer never prints" in p for p in problems)
    moved = golden.Console(
        [line for line in record.console.stdout if line != "model saved."],
        record.console.stderr,
        1,
    )
    problems = golden.differences(record, moved, record.files[1:])
    assert len(problems) == 3  # events, files, exit code
