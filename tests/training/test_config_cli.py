"""``loraops render-config`` and ``loraops presets`` end to end (in process)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from bot.cli import main
from sim.testdata import TESTDATA_FACES

FACES = TESTDATA_FACES


def test_presets_lists_each_with_family_and_vram(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, family in [
        ("sd15-local", "sd15"),
        ("sdxl-v4", "sdxl"),
        ("sdxl-face", "sdxl"),
        ("flux-dev-face", "flux"),
    ]:
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert family in line and " GB" in line


def test_render_config_on_a_faces_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "imgs"
    shutil.copytree(FACES / "obama", images)
    (images / "obama_1.txt").write_text("at a podium, suit\n")  # user caption without the trigger
    out = tmp_path / "out"
    code = main(
        [
            "render-config",
            "--preset",
            "sd15-local",
            "--images",
            str(images),
            "--trigger",
            "ohwx",
            "--class",
            "man",
            "--out",
            str(out),
            "--set",
            "steps=80",
        ]
    )
    assert code == 0, capsys.readouterr().err
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["training_arguments"]["max_train_steps"] == 80
    assert (out / "dataset/full/obama_1.txt").read_text().strip() == "ohwx man, at a podium, suit"
    assert (out / "dataset/full/obama_2.txt").read_text().strip() == "ohwx man"
    assert len(list((out / "dataset/full").glob("*.jpg"))) == 5
    assert (out / "prompts.txt").is_file() and (out / "dataset.toml").is_file()
    printed = capsys.readouterr().out
    assert "train_network.py" in printed
    # Where to put the base model: the path config.toml names, from the file the preset names.
    model = config["model_arguments"]["pretrained_model_name_or_path"]
    assert model == "models/v1-5-pruned-emaonly.safetensors"
    assert (
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
        f"v1-5-pruned-emaonly.safetensors -> {out / model}"
    ) in printed


def test_render_config_refuses_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "render-config",
            "--preset",
            "sdxl-face",
            "--images",
            str(FACES / "obama"),
            "--trigger",
            "emma",
            "--class",
            "woman",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "rank=0",
            "--set",
            "resolution=1600",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "network_dim = 0" in err and "bucket limit" in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_render_config_warns_about_weak_trigger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "render-config",
            "--preset",
            "sdxl-v4",
            "--images",
            str(FACES / "biden"),
            "--trigger",
            "emma",
            "--class",
            "woman",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "first name" in err and "ohwx" in err
