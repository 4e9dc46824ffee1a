"""dlib on real photos: identity threshold, group photos, outliers, cut and tiny faces, crops, sheet."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.faces.analysis import ImageAnalysis
from bot.faces.crops import crop_box, make_face_crop
from bot.faces.engines import DLIB_PROFILE
from bot.faces.report import build_report
from bot.faces.sheet import render_report_card

Analysed = Callable[[str], ImageAnalysis]

OBAMA = ["obama/obama_1.jpg", "obama/obama_2.jpg", "obama/obama_3.jpg", "obama/obama_4.jpg"]
KIT = ["kit_harington/kit_1.jpg", "kit_harington/kit_2.jpg", "kit_harington/kit_3.jpg"]
OTHERS = [
    "biden/biden_2.jpg",
    "rose_leslie/rose_2.jpg",
    "alex_lacamoire/alex_2.jpg",
    "kit_harington/kit_2.jpg",
]


def _embedding(analysed: Analysed, path: str) -> np.ndarray:
    analysis = analysed(path)
    assert analysis.face_count == 1, f"{path}: {analysis.face_count} faces"
    return analysis.faces[0].embedding


def test_one_persons_photos_match_and_other_people_do_not(analysed: Analysed) -> None:
    for person in (OBAMA, KIT):
        for a, b in itertools.combinations(person, 2):
            similarity = float(_embedding(analysed, a) @ _embedding(analysed, b))
            assert similarity >= DLIB_PROFILE.same_person, (a, b, similarity)
    for a, b in itertools.product(OBAMA, ["biden/biden_2.jpg", "rose_leslie/rose_2.jpg", *KIT]):
        similarity = float(_embedding(analysed, a) @ _embedding(analysed, b))
        assert similarity < DLIB_PROFILE.same_person, (a, b, similarity)


def test_reference_score_and_percent_of_ceiling(analysed: Analysed) -> None:
    reference = build_report([analysed(p) for p in OBAMA[:3]]).reference()
    assert reference is not None and reference.ceiling is not None
    assert reference.engine == "dlib-resnet128-v1" and reference.count == 3
    same = reference.score(analysed("obama/obama_4.jpg"))
    assert same.same_person is True and same.percent_of_ceiling is not None and same.percent_of_ceiling > 97
    for other in OTHERS:
        scored = reference.score(analysed(other))
        assert scored.face_found and scored.same_person is False, other


@pytest.mark.parametrize("intruder", ["biden/biden_2.jpg", "rose_leslie/rose_2.jpg"])
def test_another_persons_photo_is_the_only_identity_outlier(analysed: Analysed, intruder: str) -> None:
    paths = [*OBAMA[:2], intruder, *OBAMA[2:]]
    report = build_report([analysed(p) for p in paths])
    outliers = [item.analysis.source for item in report.flagged("identity_outlier")]
    assert outliers == [str(analysed(intruder).source)]
    assert report.ceiling is not None and report.ceiling > DLIB_PROFILE.outlier
    assert report.reference_count == 4
    assert any("different person" in line for line in report.advice)


def test_group_photos_are_flagged_multiple_faces(analysed: Analysed, faces_dir: Path) -> None:
    groups = sorted(f"multi/{p.name}" for p in (faces_dir / "multi").glob("*.jpg"))
    assert len(groups) == 3
    report = build_report([analysed(p) for p in [*OBAMA, *groups]])
    flagged = {item.analysis.source for item in report.flagged("multiple_faces")}
    assert flagged == {str(faces_dir / p) for p in groups}
    # In obama_and_biden the subject chosen is the face that matches the set, not just the largest.
    obama_and_biden = next(i for i in report.images if i.analysis.source.endswith("obama_and_biden.jpg"))
    assert obama_and_biden.identity_similarity is not None
    assert obama_and_biden.identity_similarity >= DLIB_PROFILE.outlier


def test_cut_face_and_tiny_face_are_flagged(analysed: Analysed) -> None:
    paths = [
        "obama/obama_1.jpg",
        "partial/obama_partial_1.jpg",
        "partial/obama_partial_2.jpg",
        "obama/obama_3.jpg",
        "obama/obama_4.jpg",
    ]
    report = build_report([analysed(p) for p in paths])
    flags = {Path(i.analysis.source).name: i.flags for i in report.images}
    assert "face_cut" in flags["obama_partial_1.jpg"] and "face_cut" in flags["obama_partial_2.jpg"]
    assert "small_face" in flags["obama_3.jpg"]  # full body: the face is ~2.6 % of the frame
    assert flags["obama_1.jpg"] == [] and flags["obama_4.jpg"] == []
    # The crops of obama_1 are the same person, so not outliers.
    assert not report.flagged("identity_outlier")


def test_small_image_copy_is_a_near_duplicate(analysed: Analysed) -> None:
    report = build_report(
        [analysed("obama/obama_1.jpg"), analysed("obama/obama_2.jpg"), analysed("obama/obama_small.jpg")]
    )
    duplicates = report.flagged("near_duplicate")
    assert [Path(d.analysis.source).name for d in duplicates] == ["obama_small.jpg"]
    assert duplicates[0].duplicate_of is not None and duplicates[0].duplicate_of.endswith("obama_1.jpg")


def test_measures_are_sane(analysed: Analysed) -> None:
    close = analysed("obama/obama_1.jpg")
    far = analysed("obama/obama_3.jpg")
    assert (close.width, close.height) == (910, 1137)  # original pixels, not the analysis copy
    assert close.faces[0].face_ratio > 2 * far.faces[0].face_ratio
    assert 0.2 < close.faces[0].brightness < 0.9
    assert close.faces[0].sharpness > 60
    assert abs(close.faces[0].yaw) < 15  # a frontal portrait
    x0, y0, x1, y1 = close.faces[0].bbox
    assert 0 <= x0 < x1 <= close.width and 0 <= y0 < y1 <= close.height
    assert analysed("biden/biden_1.jpg").face_count == 1


def test_blurred_face_is_flagged_blurry(dlib_engine: object, faces_dir: Path) -> None:
    from PIL import ImageFilter

    from bot.faces.analysis import analyse_image

    image = Image.open(faces_dir / "obama/obama_1.jpg").convert("RGB").filter(ImageFilter.GaussianBlur(5))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    blurred = analyse_image(dlib_engine, buffer.getvalue(), label="blurred")  # type: ignore[arg-type]
    assert blurred.face_count == 1
    assert "blurry" in build_report([blurred]).images[0].flags


def test_face_crops_are_square_centred_and_flag_upscaling(analysed: Analysed, faces_dir: Path) -> None:
    portrait = analysed("obama/obama_1.jpg")
    crop = make_face_crop(faces_dir / "obama/obama_1.jpg", portrait.faces[0], margin=0.5, size=448)
    image = Image.open(io.BytesIO(crop.jpeg))
    assert image.size == (448, 448) and not crop.upscaled  # the 495 px square is reduced
    x0, y0, x1, y1 = crop.box
    fx0, fy0, fx1, fy1 = portrait.faces[0].bbox
    assert x1 - x0 == y1 - y0 == round(2 * max(fx1 - fx0, fy1 - fy0))
    assert x0 <= fx0 and y0 <= fy0 and x1 >= fx1 and y1 >= fy1

    small = analysed("obama/obama_small.jpg")
    crop = make_face_crop(faces_dir / "obama/obama_small.jpg", small.faces[0], size=1024)
    assert crop.upscaled and crop.box[2] - crop.box[0] == 240  # limited by the 320×240 frame
    assert Image.open(io.BytesIO(crop.jpeg)).size == (1024, 1024)


def test_crop_box_shifts_inside_the_frame() -> None:
    assert crop_box((0, 0, 100, 100), 1000, 800, margin=1.0) == (0, 0, 300, 300)
    assert crop_box((900, 700, 1000, 800), 1000, 800, margin=1.0) == (700, 500, 1000, 800)
    assert crop_box((-50, 100, 150, 300), 400, 1000, margin=1.0) == (0, 0, 400, 400)


def test_report_card_is_a_small_jpeg(analysed: Analysed, faces_dir: Path) -> None:
    paths = [*OBAMA, "biden/biden_2.jpg", "multi/two_people.jpg"]
    report = build_report([analysed(p) for p in paths])
    data = render_report_card(report, [faces_dir / p for p in paths], title="elena")
    assert data[:2] == b"\xff\xd8" and len(data) < 10 * 1024 * 1024
    image = Image.open(io.BytesIO(data))
    assert image.width > 3 * 224 and image.height > 224
    with pytest.raises(ValueError):
        render_report_card(report, [faces_dir / OBAMA[0]])


def test_storage_row_matches_face_analysis_columns(analysed: Analysed) -> None:
    from storage.models import FaceAnalysis

    row = build_report([analysed(p) for p in OBAMA]).images[0].to_row()
    columns = {c.name for c in FaceAnalysis.__table__.columns}
    assert set(row) <= columns
    assert np.frombuffer(row["embedding"], dtype=np.float32).shape == (128,)
    FaceAnalysis(image_id=1, **row)  # constructs without complaint


def test_sync_pool_path_matches_in_process_results(analysed: Analysed, faces_dir: Path) -> None:
    from bot.faces.engines import EngineSpec
    from bot.faces.service import analyse_sources

    paths = ["obama/obama_small.jpg", "kit_harington/kit_2.jpg", "multi/kit_with_rose.jpg"]
    seen: list[tuple[int, int]] = []
    results = analyse_sources(
        EngineSpec("dlib"),
        [faces_dir / p for p in paths],
        workers=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert [Path(r.source).name for r in results] == [Path(p).name for p in paths]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    for result, path in zip(results, paths, strict=True):
        expected = analysed(path)
        assert result.face_count == expected.face_count
        assert float(result.faces[0].embedding @ expected.faces[0].embedding) == pytest.approx(1.0, abs=1e-5)


_FORKED_HELPER_CHECK = """
import threading
from bot.faces import service
from bot.faces.engines import EngineSpec, build_engine

def engine_address():
    return id(service._engine)


assert threading.active_count() == 1, "a fresh interpreter runs one Python thread"
assert service._start_method(True) == "fork"
spec = EngineSpec("dlib")
engine = build_engine(spec)
service._built_before_fork = (spec, engine)
with service.make_pool(spec, 1, fork=True) as pool:
    seen = pool.submit(engine_address).result()
print("same engine" if seen == id(engine) else f"other engine {seen} != {id(engine)}")
"""


def test_the_cli_pool_is_forked_and_its_helper_inherits_the_engine() -> None:
    """The CLI's helper process is forked after the dlib engine is built and uses that very engine (no
    second load, shared weights); the bot's pool (fork=False) always spawns. Checked in a fresh
    interpreter, as the CLI runs: the suite's own threads would make the pool spawn, as designed."""
    import subprocess
    import sys

    from bot.faces import service

    assert service._start_method(False) == "spawn"
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_HELPER_CHECK], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "same engine", done.stdout
