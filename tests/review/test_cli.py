"""``loraops grid IMAGE… --out FILE [--reference PATH…]``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main


def test_grid_without_reference_writes_a_jpeg(
    tmp_path: Path, faces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "grid.jpg"
    code = main(
        [
            "grid",
            str(faces_dir / "biden"),
            str(faces_dir / "obama" / "obama_small.jpg"),
            "--out",
            str(out),
            "--cell",
            "128",
        ]
    )
    assert code == 0
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "JPEG" and image.width == 2 * 128  # 3 images: 2 columns
    assert "wrote" in capsys.readouterr().out


def test_grid_with_reference_scores_each_image(
    tmp_path: Path, faces_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACE_ENGINE", "dlib")
    out = tmp_path / "scored.jpg"
    code = main(
        [
            "grid",
            str(faces_dir / "obama" / "obama_small.jpg"),
            str(faces_dir / "kit_harington" / "kit_1.jpg"),
            "--out",
            str(out),
            "--workers",
            "1",
            "--columns",
            "2",
            "--cell",
            "160",
            "--reference",
            str(faces_dir / "obama" / "obama_1.jpg"),
            str(faces_dir / "obama" / "obama_2.jpg"),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    scores = {line.split(":")[0]: float(line.split(":")[1].split()[0]) for line in lines if "ceiling" in line}
    assert scores["obama_small.jpg"] > scores["kit_1.jpg"]
    assert Image.open(out).size[0] == 2 * 160


def test_grid_usage_errors(tmp_path: Path) -> None:
    assert main(["grid", "--out", str(tmp_path / "x.jpg")]) == 2
    assert main(["grid", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.jpg")]) == 2
    assert not (tmp_path / "x.jpg").exists()
