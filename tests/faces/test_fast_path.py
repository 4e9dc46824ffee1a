"""The fast dlib path against dlib as ``face_recognition`` runs it (HOG upsample 1 + dlib's own ResNet).

Curation must find the same faces and raise the same flags on the shared photos; scoring must give the
same scores; the ONNX ResNet must compute dlib's descriptors; the scipy-free phash must be imagehash's.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.faces.analysis import ImageAnalysis, analyse_image, load_image, phash_hex
from bot.faces.dlib_hog import HogDetector, map_to_upsample1
from bot.faces.dlib_resnet import DlibModelFormatError, OnnxDescriptor, parse_dlib_resnet
from bot.faces.engines import DlibEngine, dlib_models_dir
from bot.faces.report import build_report

from .conftest import FACES

PHOTOS = sorted(str(p.relative_to(FACES)) for p in FACES.rglob("*.jpg"))
Pair = tuple[ImageAnalysis, ImageAnalysis]


@pytest.fixture(scope="session")
def reference_engine() -> DlibEngine:
    return DlibEngine(fast=False)


@pytest.fixture(scope="session")
def curated(reference_engine: DlibEngine, dlib_engine: DlibEngine, faces_dir: Path) -> dict[str, Pair]:
    """Each shared photo analysed by the reference engine and by the fast curation path."""
    assert dlib_engine.fast and len(PHOTOS) >= 19
    return {
        rel: (analyse_image(reference_engine, faces_dir / rel), analyse_image(dlib_engine, faces_dir / rel))
        for rel in PHOTOS
    }


def _dlib() -> Any:
    # dlib-bin ships no type information.
    import importlib

    return importlib.import_module("dlib")


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_fast_curation_finds_every_face_hog_upsample_1_finds(curated: dict[str, Pair]) -> None:
    total = 0
    for rel, (reference, fast) in curated.items():
        assert fast.face_count == reference.face_count, (rel, reference.faces, fast.faces)
        for face in reference.faces:
            match = max(fast.faces, key=lambda f: _iou(f.bbox, face.bbox))
            # The very box and score of HOG at upsample 1 (its level-4 image is rebuilt to the bit).
            assert match.bbox == face.bbox, (rel, face.bbox, match.bbox)
            assert abs(match.det_score - face.det_score) < 1e-9, rel
            assert float(match.embedding @ face.embedding) >= 0.99999, rel
            total += 1
    # 23 faces, including the child in the background of obama_and_biden (HOG score 0.32).
    assert total >= 23


def test_fast_curation_raises_the_same_flags(curated: dict[str, Pair]) -> None:
    reference = build_report([pair[0] for pair in curated.values()])
    fast = build_report([pair[1] for pair in curated.values()])
    for ref_item, fast_item in zip(reference.images, fast.images, strict=True):
        assert fast_item.flags == ref_item.flags, ref_item.analysis.source
        assert (fast_item.identity_similarity is None) == (ref_item.identity_similarity is None)
        if ref_item.identity_similarity is not None and fast_item.identity_similarity is not None:
            assert abs(fast_item.identity_similarity - ref_item.identity_similarity) < 0.01
    assert fast.advice == reference.advice
    flagged = {flag for item in reference.images for flag in item.flags}
    assert {"multiple_faces", "identity_outlier", "small_face", "face_cut"} <= flagged  # a real check


def test_scoring_gives_the_same_scores(
    curated: dict[str, Pair], dlib_engine: DlibEngine, faces_dir: Path
) -> None:
    reference_set = [curated[rel][0] for rel in PHOTOS if rel.startswith("obama/")]
    identity = build_report(reference_set).reference()
    assert identity is not None
    for rel in PHOTOS:
        before = curated[rel][0]
        after = analyse_image(dlib_engine, faces_dir / rel, scoring=True)
        assert [f.bbox for f in after.faces] == [f.bbox for f in before.faces], rel
        for old, new in zip(before.faces, after.faces, strict=True):
            assert abs(old.det_score - new.det_score) < 0.1, rel
        old_score, new_score = identity.score(before), identity.score(after)
        assert old_score.face_found == new_score.face_found
        if old_score.similarity is not None and new_score.similarity is not None:
            # Equal to float precision (3e-7 in practice), so equal to 3 decimals.
            assert abs(new_score.similarity - old_score.similarity) < 1e-5, rel
            assert new_score.same_person == old_score.same_person
        assert after.phash is None  # scoring skips the picture hash


def test_onnx_resnet_computes_dlibs_descriptors(reference_engine: DlibEngine, faces_dir: Path) -> None:
    dlib = _dlib()

    models = dlib_models_dir()
    onnx_net = OnnxDescriptor(models / "dlib_face_recognition_resnet_model_v1.dat")
    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    recogniser = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    compared = 0
    for rel in ("multi/kit_with_rose.jpg", "obama/obama_1.jpg", "rose_leslie/rose_2.jpg"):
        image = np.asarray(load_image(faces_dir / rel).reduce(2))
        for rect in detector(image, 1):
            shape = shapes(image, rect)
            theirs = np.asarray(recogniser.compute_face_descriptor(image, shape, 0))
            ours = onnx_net.compute([dlib.get_face_chip(image, shape, 150, 0.25)])[0]
            assert np.abs(theirs - ours).max() < 1e-4, rel
            compared += 1
    assert compared >= 4


def test_the_converter_refuses_a_file_that_is_not_the_resnet(tmp_path: Path) -> None:
    models = dlib_models_dir()
    with pytest.raises(DlibModelFormatError):
        parse_dlib_resnet(models / "shape_predictor_5_face_landmarks.dat")
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes((models / "dlib_face_recognition_resnet_model_v1.dat").read_bytes()[:-10])
    with pytest.raises(DlibModelFormatError):
        parse_dlib_resnet(truncated)


def test_phash_is_imagehashs(faces_dir: Path) -> None:
    import imagehash

    for rel in PHOTOS:
        image = load_image(faces_dir / rel)
        assert phash_hex(image.convert("L")) == str(imagehash.phash(image)), rel


def _canvas(*faces: tuple[str, float, tuple[int, int]], faces_dir: Path) -> np.ndarray:
    canvas = Image.new("RGB", (1024, 768), (128, 128, 128))
    for rel, scale, where in faces:
        photo = load_image(faces_dir / rel)
        canvas.paste(photo.resize((round(photo.width * scale), round(photo.height * scale))), where)
    return np.asarray(canvas)


def test_a_small_face_alone_is_found_by_the_full_scan(faces_dir: Path) -> None:
    dlib = _dlib()

    hog = HogDetector(dlib, min_score=0.2)
    # obama_1 at 0.16: a ~36 px face box, which only the upsampled levels see.
    image = _canvas(("obama/obama_1.jpg", 0.16, (700, 450)), faces_dir=faces_dir)
    reference = [(box, s) for box, s in hog.full(image) if s >= 0.2]
    assert reference and all(box[2] - box[0] < 70 for box, _ in reference)
    found = hog.detect(image)
    assert [box for box, _ in found] == [box for box, _ in reference]
    assert hog.stats["full"] == 1


def test_small_faces_are_only_searched_where_no_larger_face_was_found(faces_dir: Path) -> None:
    """The documented trade-off: beside a face of 75 px or more, one under ~70 px is not searched."""
    dlib = _dlib()

    hog = HogDetector(dlib, min_score=0.2)
    image = _canvas(
        ("obama/obama_1.jpg", 0.16, (700, 450)), ("rose_leslie/rose_2.jpg", 0.6, (0, 0)), faces_dir=faces_dir
    )
    every = [(box, s) for box, s in hog.full(image) if s >= 0.2]
    found = hog.detect(image)
    large = [box for box, _ in every if box[2] - box[0] >= 75]
    assert len(every) == len(large) + 1  # the small face, found by upsample 1 only
    assert [box for box, _ in found] == large
    assert hog.stats == {"coarse": 1, "full": 0}


def test_boxes_map_back_exactly(faces_dir: Path) -> None:
    dlib = _dlib()

    hog = HogDetector(dlib, min_score=0.2)
    for rel in ("multi/obama_and_biden.jpg", "partial/obama_partial_1.jpg", "kit_harington/kit_3.jpg"):
        image = np.ascontiguousarray(np.asarray(load_image(faces_dir / rel).reduce(2)))
        exact = sorted(hog.detect(image))
        reference = sorted((box, s) for box, s in hog.full(image) if s >= 0.2 and box[2] - box[0] >= 75)
        assert [box for box, _ in exact] == [box for box, _ in reference], rel
        assert all(abs(a - b) < 1e-9 for (_, a), (_, b) in zip(exact, reference, strict=True))
    # A box the scanner reports for level 0 of the level-4 image: 72 px there, 75 px in the photo.
    assert map_to_upsample1((100, 100, 172, 172))[2] - map_to_upsample1((100, 100, 172, 172))[0] == 75


def test_box_mapping_searches_only_the_levels_that_can_match() -> None:
    """``map_to_upsample1`` looks at the two levels either side of the one its box's side suggests;
    every box the scanner can report on levels 0-11 maps as a search of all sixteen levels maps it."""
    from bot.faces import dlib_hog

    def every_level(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        found = []
        for level in range(16):
            feature = tuple(dlib_hog._round(dlib_hog._down6(v, level)) for v in box)
            if tuple(dlib_hog._round(dlib_hog._up6(v, level)) for v in feature) == box:
                error = abs(feature[2] - feature[0] - 72) + abs(feature[3] - feature[1] - 72)
                found.append((error, level, feature))
        _, level, feature = min(found)
        doubled = [dlib_hog._round(dlib_hog._up6(v, 4 + level)) for v in feature]
        return (
            dlib_hog._round(doubled[0] / 2.0 - 1.25),
            dlib_hog._round(doubled[1] / 2.0 - 0.75),
            dlib_hog._round(doubled[2] / 2.0 - 1.25),
            dlib_hog._round(doubled[3] / 2.0 - 0.75),
        )

    rng = np.random.default_rng(5)
    for level in range(12):
        for _ in range(40):
            x, y = (int(v) for v in rng.integers(-40, 400, 2))
            side = 72 + int(rng.integers(-1, 2))
            reported = tuple(dlib_hog._round(dlib_hog._up6(v, level)) for v in (x, y, x + side, y + side))
            assert map_to_upsample1(reported) == every_level(reported), (level, reported)  # type: ignore[arg-type]


def test_scoring_bytes_and_paths_alike(dlib_engine: DlibEngine, faces_dir: Path) -> None:
    path = faces_dir / "obama" / "obama_2.jpg"
    buffer = io.BytesIO()
    load_image(path).save(buffer, format="PNG")
    from_bytes: Any = analyse_image(dlib_engine, buffer.getvalue(), scoring=True)
    from_path = analyse_image(dlib_engine, path, scoring=True)
    assert [f.bbox for f in from_bytes.faces] == [f.bbox for f in from_path.faces]


def test_a_small_face_the_fast_path_skips_changes_no_flag(
    reference_engine: DlibEngine, dlib_engine: DlibEngine, faces_dir: Path
) -> None:
    """Why the trade-off above is safe for curation: a face under ~75 px beside one at least three times
    its side is under 1/9 of the main face's area, so it is not "another person" (``multiple_faces``),
    and it is far too small to be the subject. The report's flags are the reference's; only the face
    count differs."""
    image = _canvas(
        ("obama/obama_1.jpg", 0.16, (700, 450)), ("rose_leslie/rose_2.jpg", 0.6, (0, 0)), faces_dir=faces_dir
    )
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    reference = analyse_image(reference_engine, buffer.getvalue(), label="canvas")
    fast = analyse_image(dlib_engine, buffer.getvalue(), label="canvas")
    assert reference.face_count == 2 and fast.face_count == 1
    small, large = reference.faces[1], reference.faces[0]
    assert small.side < 75 and small.side * 3 < large.side
    assert fast.faces[0].bbox == large.bbox
    assert build_report([fast]).images[0].flags == build_report([reference]).images[0].flags


def test_scoring_samples_on_a_canvas_get_upsample_1s_boxes_and_scores(
    reference_engine: DlibEngine, dlib_engine: DlibEngine, faces_dir: Path
) -> None:
    """Samples as a trainer makes them (1024² PNG). On obama_partial_1 centred on a grey canvas, an
    approximate level-4 image (an earlier OpenCV copy of dlib's chain) put the face on the next pyramid
    level (a 268 px box instead of 186 px, the score 7.8e-4 off); boxes and scores are upsample 1's."""
    photos = [
        "partial/obama_partial_1.jpg",
        "obama/obama_2.jpg",
        "multi/two_people.jpg",
        "kit_harington/kit_1.jpg",
    ]
    references = [analyse_image(reference_engine, faces_dir / r) for r in PHOTOS if r.startswith("obama/")]
    identity = build_report(references).reference()
    assert identity is not None
    for rel in photos:
        # As benchmarks/faces/bench.py makes them: 1024 px (LANCZOS), JPEG 92, centred on grey.
        photo = load_image(faces_dir / rel)
        scale = 1024 / max(photo.size)
        photo = photo.resize(
            (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS
        )
        jpeg = io.BytesIO()
        photo.save(jpeg, format="JPEG", quality=92)
        photo = load_image(jpeg.getvalue())
        canvas = Image.new("RGB", (1024, 1024), (118, 118, 118))
        canvas.paste(photo, ((1024 - photo.width) // 2, (1024 - photo.height) // 2))
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG")
        before = analyse_image(reference_engine, buffer.getvalue())
        after = analyse_image(dlib_engine, buffer.getvalue(), scoring=True)
        assert before.faces, rel
        assert [f.bbox for f in after.faces] == [f.bbox for f in before.faces], rel
        old, new = identity.score(before), identity.score(after)
        assert old.similarity is not None and new.similarity is not None
        assert abs(new.similarity - old.similarity) < 1e-5, rel
