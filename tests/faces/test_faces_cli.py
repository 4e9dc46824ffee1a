"""``loraops curate | score | faces fetch-models`` through the real command line entry point."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No .env from the developer's tree, no real models directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACE_MODELS_DIR", raising=False)
    monkeypatch.delenv("FACE_ENGINE", raising=False)


def test_curate_json_reports_every_image_with_flags_and_advice(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crops = tmp_path / "crops"
    sheet = tmp_path / "card.jpg"
    code = main(
        [
            "curate",
            str(faces_dir / "obama" / "obama_1.jpg"),
            str(faces_dir / "obama" / "obama_2.jpg"),
            str(faces_dir / "biden" / "biden_2.jpg"),
            str(faces_dir / "partial"),
            "--crops",
            str(crops),
            "--crop-size",
            "512",
            "--sheet",
            str(sheet),
            "--json",
            "--workers",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "engine auto → dlib" in captured.err
    payload = json.loads(captured.out)
    assert payload["engine"] == "dlib-resnet128-v1"
    assert 0.9 < payload["ceiling"] <= 1.0
    images = {Path(item["path"]).name: item for item in payload["images"]}
    assert list(images) == [
        "obama_1.jpg",
        "obama_2.jpg",
        "biden_2.jpg",
        "obama_partial_1.jpg",
        "obama_partial_2.jpg",
    ]
    for item in images.values():
        assert item["faces"] == 1
        assert {"face_ratio", "sharpness", "identity_similarity", "flags"} <= set(item)
    assert images["biden_2.jpg"]["flags"] == ["identity_outlier"]
    assert "face_cut" in images["obama_partial_1.jpg"]["flags"]
    assert images["obama_1.jpg"]["flags"] == []
    assert payload["advice"] and all(isinstance(line, str) for line in payload["advice"])
    crop = images["obama_1.jpg"]["crop"]
    assert Image.open(crop["path"]).size == (512, 512) and crop["upscaled"] is False
    assert len(list(crops.glob("*.jpg"))) == 5
    assert Image.open(sheet).format == "JPEG"


def test_curate_table_and_missing_paths(
    faces_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["curate", str(faces_dir / "obama" / "obama_4.jpg"), "--engine", "dlib"]) == 0
    captured = capsys.readouterr()
    assert "obama_4.jpg" in captured.out and "ceiling" in captured.out and "analysed 1/1" in captured.err

    assert main(["curate", str(tmp_path / "nope.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["curate", str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err


def test_curate_insightface_without_models_fails_cleanly(
    faces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["curate", str(faces_dir / "obama" / "obama_4.jpg"), "--engine", "insightface"]) == 1
    err = capsys.readouterr().err
    assert "no insightface models" in err and "Traceback" not in err


def test_curate_with_insightface_models_dir_from_settings(
    fake_pack: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    make_photo: object,
) -> None:
    monkeypatch.setenv("FACE_MODELS_DIR", str(fake_pack.parent))
    photo = tmp_path / "square.bmp"
    photo.write_bytes(make_photo([(6, 4, 1)]))  # type: ignore[operator]
    assert main(["curate", str(photo), "--json", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "auto → insightface" in captured.err
    payload = json.loads(captured.out)
    assert payload["engine"] == "insightface-buffalo_l" and payload["images"][0]["faces"] == 1


def test_score_json(faces_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "score",
            "--engine",
            "dlib",
            "--json",
            "--workers",
            "1",
            "--reference",
            str(faces_dir / "obama" / "obama_1.jpg"),
            str(faces_dir / "obama" / "obama_2.jpg"),
            "--",
            str(faces_dir / "obama" / "obama_4.jpg"),
            str(faces_dir / "kit_harington" / "kit_2.jpg"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out)
    assert payload["engine"] == "dlib-resnet128-v1" and payload["reference_faces"] == 2
    obama, kit = payload["images"]
    assert obama["face_found"] and obama["same_person"] is True and obama["percent_of_ceiling"] > 95
    assert kit["face_found"] and kit["same_person"] is False
    assert kit["similarity"] < obama["similarity"]


def test_score_without_images_explains_the_separator(
    faces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", "--reference", str(faces_dir / "obama")]) == 2
    assert "--" in capsys.readouterr().err


def test_fetch_models_offline_fails_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(
        [
            "faces",
            "fetch-models",
            "--dir",
            str(tmp_path / "models"),
            "--url",
            f"http://127.0.0.1:{port}/buffalo_l.zip",
            "--timeout",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "NON-COMMERCIAL" in err
    assert "could not download buffalo_l" in err and "offline" in err and "Traceback" not in err
    assert not (tmp_path / "models" / "buffalo_l").exists()
