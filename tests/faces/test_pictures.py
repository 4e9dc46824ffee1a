"""Same picture or not, on real photos: crops and re-framings of one photo agree, different photos don't."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.faces.pictures import SAME_PICTURE_INLIERS, PictureMatcher
from sim.testdata import testdata_faces as _testdata_faces

FACES = _testdata_faces()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("obama/obama_1.jpg", "partial/obama_partial_1.jpg", True),  # a crop, 28 hash bits apart
        ("obama/obama_1.jpg", "obama/obama_small.jpg", True),  # re-framed and scaled down
        ("obama/obama_1.jpg", "obama/obama_2.jpg", False),  # the same man, another photo
        ("obama/obama_3.jpg", "obama/obama_4.jpg", False),
        ("kit_harington/kit_1.jpg", "multi/kit_with_rose.jpg", False),  # face cosine 0.97, 24 bits
    ],
)
def test_same_picture_survives_crops_and_scaling_not_a_new_photo(a: str, b: str, same: bool) -> None:
    matcher = PictureMatcher()
    inliers = matcher.agreeing_keypoints(str(FACES / a), str(FACES / b))
    assert inliers is not None
    assert (inliers >= SAME_PICTURE_INLIERS) is same, inliers


def test_unknown_pixels_say_nothing(tmp_path: Path) -> None:
    matcher = PictureMatcher({"a": FACES / "obama/obama_1.jpg"}.get)
    assert matcher.same("a", "missing") is None
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert PictureMatcher().same(str(FACES / "obama/obama_1.jpg"), str(broken)) is None


def test_keypoints_from_the_analysis_match_those_read_from_the_file() -> None:
    """The face workers compute each picture's keypoints from the pixels they decoded; the report then
    matches pictures without reading them again, and must count the same agreeing keypoints."""
    from bot.faces.analysis import load_image
    from bot.faces.pictures import picture_features

    pairs = [("obama/obama_1.jpg", "partial/obama_partial_1.jpg"), ("obama/obama_1.jpg", "obama/obama_2.jpg")]
    from_files = PictureMatcher()
    known = PictureMatcher(lambda _label: None)  # would answer None if it had to read a file
    for a, b in pairs:
        for rel in (a, b):
            features = picture_features(load_image(FACES / rel).convert("L"))
            assert features is not None
            known.know(rel, features)
        expected = from_files.agreeing_keypoints(str(FACES / a), str(FACES / b))
        assert expected is not None
        assert known.agreeing_keypoints(a, b) == expected
