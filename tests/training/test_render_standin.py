"""``loraops render-config`` output runs as is under the sd-scripts stand-in, for every preset.

This is the local-training promise of the CLI: render a folder of photos, put the base model where the
command says, run the printed sd-scripts command in the output folder. The stand-in enforces
sd-scripts' own rules (argparse names per script, config flattening, strict dataset.toml, model files
that must exist, sample and checkpoint names), so a path or key the renderer gets wrong fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.cli import main
from bot.training import sdscripts_schema as schema
from bot.training.presets import load_preset, preset_names
from sim.gpu import install_driver
from sim.sdscripts import safetensors_io
from sim.testdata import TESTDATA_FACES
from worker.artifacts import parse_sample_name

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES = TESTDATA_FACES
STEPS = 4
OVERRIDES = [
    f"steps={STEPS}",
    "lr_warmup_steps=0",  # the presets warm up for 100+ steps; 4 steps cannot
    "save_every_n_steps=2",
    f"sample_every_n_steps={STEPS}",  # one round of samples keeps the test quick
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in sorted((FACES / "rose_leslie").glob("*.jpg")):
        shutil.copy(photo, folder / photo.name)
    (folder / "rose_1.txt").write_text("smiling, outdoors\n")  # a user caption, trigger added by render
    return folder


@pytest.mark.parametrize("name", preset_names())
def test_rendered_folder_trains_under_the_standin(
    name: str, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "work"
    argv = ["render-config", "--preset", name, "--images", str(photos), "--trigger", "ohwx"]
    argv += ["--class", "woman", "--out", str(out)]
    for override in OVERRIDES:
        argv += ["--set", override]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out

    preset = load_preset(name)
    script = schema.script_for(preset.family)
    config = schema.flatten_config(tomllib.loads((out / "config.toml").read_text()))[0]
    model_keys = [k for k in ("pretrained_model_name_or_path", "clip_l", "t5xxl", "ae") if k in config]
    assert len(model_keys) == (4 if preset.family == "flux" else 1)
    for key in model_keys:
        # The CLI says where each file goes; put a small stand-in file exactly there.
        target = out / config[key]
        assert f"-> {target}" in printed
        assert target.parent == out / "models"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(b"not a real checkpoint")
    assert f"{script} --config_file config.toml --dataset_config dataset.toml" in printed

    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SDSTANDIN_STEP_SECONDS": "0.001",
        "SDSTANDIN_REPORT": str(report),
        **install_driver(tmp_path / "driver", ["NVIDIA RTX A5000"]),  # the pod's GPU
    }
    command = [sys.executable, "-m", "sim.sdscripts", script, "--config_file", "config.toml"]
    command += ["--dataset_config", "dataset.toml", "--console_log_simple"]
    run = subprocess.run(
        command,
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "found directory dataset/full contains 2 image files" in run.stdout
    assert "No caption file found" not in run.stdout + run.stderr
    # Every key render wrote is an argument of this script (sd-scripts would ignore others silently).
    assert json.loads(report.read_text())["ignored_config_keys"] == []

    output_name = config["output_name"]
    assert output_name == f"ohwx_{name}"
    checkpoints = sorted(p.name for p in (out / "output").glob("*.safetensors"))
    assert checkpoints == [
        f"{output_name}-step00000002.safetensors",
        f"{output_name}-step00000004.safetensors",
        f"{output_name}.safetensors",
    ]
    metadata = safetensors_io.read_metadata(out / "output" / f"{output_name}.safetensors")
    assert metadata["ss_steps"] == str(STEPS)
    assert metadata["ss_network_dim"] == str(preset.train["network_dim"])
    assert metadata["ss_sd_model_name"] == Path(config["pretrained_model_name_or_path"]).name
    assert metadata["modelspec.trigger_phrase"] == "ohwx woman"
    samples = sorted(p.name for p in (out / "output" / "sample").glob("*.png"))
    assert len(samples) == len(preset.prompts)
    # Named so the worker's parser lists them (step, prompt index) for the bot.
    parsed = [parse_sample_name(s, output_name) for s in samples]
    assert parsed == [(STEPS, None, i) for i in range(len(preset.prompts))]
    seeds = [int(s.rsplit("_", 1)[1].removesuffix(".png")) for s in samples]
    assert seeds == [p.seed for p in preset.prompts]
