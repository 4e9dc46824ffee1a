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


def _variants(tmp_path: Path) -> list[str]:
    """The shared photos, plus crops, turns, mirrors and re-encodes of some of them (as a studio's
    bursts and re-exports are)."""
    import random

    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(7)
    paths = [str(p) for p in sorted(FACES.rglob("*.jpg"))][::2]
    for index, source in enumerate(paths[:3]):
        for variant in range(3):
            with Image.open(source) as opened:
                image = opened.convert("RGB")
            w, h = image.size
            keep = rng.uniform(0.7, 0.95)
            x, y = rng.randint(0, int(w * (1 - keep))), rng.randint(0, int(h * (1 - keep)))
            image = image.crop((x, y, x + int(w * keep), y + int(h * keep)))
            image = image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)
            if variant == 2:
                image = ImageOps.mirror(image)
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
            target = tmp_path / f"v{index}_{variant}.jpg"
            image.save(target, quality=rng.randint(70, 95))
            paths.append(str(target))
    return paths


def test_the_first_look_never_changes_the_answer(tmp_path: Path) -> None:
    """``same`` first matches only the strongest keypoints of the first picture and answers "same" when
    enough of them agree; that must be the answer matching every keypoint gives, on every pair."""
    paths = _variants(tmp_path)
    matcher = PictureMatcher()
    quick_answers = 0
    for a in paths:
        for b in paths:
            if a == b:
                continue
            full = matcher.agreeing_keypoints(a, b)
            assert full is not None
            quick = matcher.agreeing_keypoints(a, b, first_look=True)
            assert quick is not None
            quick_answers += quick >= SAME_PICTURE_INLIERS
            assert matcher.same(a, b) is (full >= SAME_PICTURE_INLIERS), (a, b, quick, full)
    assert quick_answers >= 12  # the first look decides the copies (pairs among each photo's variants)


def test_a_copy_is_recognised_from_the_first_look_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    matcher = PictureMatcher()
    looks: list[bool] = []
    original = PictureMatcher.agreeing_keypoints

    def counting(self: PictureMatcher, a: str, b: str, *, first_look: bool = False) -> int | None:
        looks.append(first_look)
        return original(self, a, b, first_look=first_look)

    monkeypatch.setattr(PictureMatcher, "agreeing_keypoints", counting)
    assert matcher.same(str(FACES / "obama/obama_1.jpg"), str(FACES / "partial/obama_partial_2.jpg"))
    assert looks == [True]
    looks.clear()
    assert matcher.same(str(FACES / "obama/obama_1.jpg"), str(FACES / "obama/obama_2.jpg")) is False
    assert looks == [True, False]
