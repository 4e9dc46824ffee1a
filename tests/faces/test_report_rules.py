"""Dataset rules on hand-made analyses (no engine): centroid robustness, ceiling, advice wording."""

from __future__ import annotations

import numpy as np
import pytest

from bot.faces.analysis import FaceInfo, ImageAnalysis, estimate_yaw
from bot.faces.engines import DLIB_PROFILE, profile_for
from bot.faces.report import IdentityReference, build_report, robust_centroid

ENGINE = "dlib-resnet128-v1"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _person(seed: int, n: int, spread: float = 0.25) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = _unit(rng.standard_normal(128))
    return [_unit(centre + spread * _unit(rng.standard_normal(128))) for _ in range(n)]


def _phash(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:16]  # unrelated pictures: ~32 bits apart


def _analysis(
    name: str, embedding: np.ndarray | None, *, ratio: float = 0.15, yaw: float = 0.0
) -> ImageAnalysis:
    faces = []
    if embedding is not None:
        side = (ratio * 1000 * 1000) ** 0.5
        faces.append(
            FaceInfo(
                bbox=(100.0, 100.0, 100.0 + side, 100.0 + side),
                det_score=1.0,
                embedding=embedding,
                landmarks=[],
                face_ratio=ratio,
                sharpness=500.0,
                brightness=0.5,
                yaw=yaw,
                cut=False,
            )
        )
    return ImageAnalysis(source=name, engine=ENGINE, width=1000, height=1000, faces=faces, phash=_phash(name))


def test_centroid_ignores_a_few_wrong_photos() -> None:
    own = _person(1, 8)
    strangers = _person(2, 1) + _person(3, 1) + _person(4, 1)
    centroid, mask = robust_centroid(np.stack(own + strangers), DLIB_PROFILE.outlier)
    assert mask.tolist() == [True] * 8 + [False] * 3
    clean = _unit(np.stack(own).mean(axis=0))
    assert float(centroid @ clean) > 0.999


def test_ceiling_is_mean_leave_one_out_and_matches_stored_reference() -> None:
    own = _person(5, 6)
    report = build_report([_analysis(f"p{k}", e) for k, e in enumerate(own)])
    stack = np.stack(own)
    expected = np.mean(
        [float(stack[k] @ _unit(np.delete(stack, k, axis=0).sum(axis=0))) for k in range(len(own))]
    )
    assert report.ceiling == pytest.approx(expected, abs=1e-5)
    stored = [row.to_row()["embedding"] for row in report.images]
    rebuilt = IdentityReference.from_embeddings(ENGINE, stored)
    assert rebuilt.ceiling == pytest.approx(report.ceiling, abs=1e-5) and rebuilt.count == 6


def test_advice_names_what_the_set_lacks() -> None:
    own = _person(6, 12)
    analyses = [_analysis(f"far{k}", e, ratio=0.04) for k, e in enumerate(own[:10])]
    analyses += [_analysis("close0", own[10], ratio=0.2), _analysis("close1", own[11], ratio=0.2)]
    analyses.append(_analysis("empty", None))
    report = build_report(analyses)
    advice = "\n".join(report.advice)
    assert (
        "only 2 of 13 photos show the face larger than 10% of the frame: add close-ups or use face crops"
        in advice
    )
    assert "1 photo shows no face: remove them" in advice
    assert "straight at the camera" in advice
    assert report.flagged("no_face")[0].analysis.source == "empty"


def test_good_set_gets_no_complaints_about_size_or_angles() -> None:
    own = _person(7, 24)
    analyses = [
        _analysis(f"p{k}", e, ratio=0.15, yaw=(-30 + 60 * (k % 2)) * (k % 3 == 0)) for k, e in enumerate(own)
    ]
    for k, analysis in enumerate(analyses):
        analysis.faces[0].brightness = 0.3 + 0.02 * k
    report = build_report(analyses)
    assert not any(item.flags for item in report.images)
    assert report.advice == ["the set looks good for an identity LoRA."]


def test_engines_never_mix() -> None:
    a = _analysis("a", _person(8, 1)[0])
    b = _analysis("b", _person(9, 1)[0])
    b.engine = "insightface-buffalo_l"
    with pytest.raises(ValueError, match="several engines"):
        build_report([a, b])
    reference = IdentityReference.from_embeddings(ENGINE, _person(8, 3))
    with pytest.raises(ValueError, match="can't be compared"):
        reference.score(b)
    assert profile_for("insightface-antelopev2").family == "insightface"


def test_yaw_sign_and_scale() -> None:
    assert estimate_yaw(((40, 50), (60, 50), (50, 60))) == pytest.approx(0.0)
    assert estimate_yaw(((40, 50), (60, 50), (60, 60))) == pytest.approx(45.0, abs=0.1)
    assert estimate_yaw(((40, 50), (60, 50), (45, 60))) < 0


def _with_face_at(base: np.ndarray, cos: float, seed: int) -> np.ndarray:
    """A unit vector at exactly cosine ``cos`` from ``base``."""
    rng = np.random.default_rng(seed)
    other = rng.standard_normal(base.shape[0]).astype(np.float32)
    other = _unit(other - float(other @ base) * base)
    return _unit(cos * base + (1 - cos**2) ** 0.5 * other)


def _flip_bits(phash: str, bits: int) -> str:
    value = int(phash, 16)
    for bit in range(bits):
        value ^= 1 << bit
    return f"{value:016x}"


@pytest.mark.parametrize(
    ("face_cos", "bits", "duplicate"),
    [
        (0.9856, 22, False),  # the studio's case: one person at two events, different pictures
        (0.9856, 8, True),  # the same face in nearly the same picture: a burst shot
        (0.90, 2, True),  # the same picture (a re-encode) whatever the face reads
        (0.9984, 28, True),  # the same face pixels, re-framed: one photo cropped differently
        (0.97, 9, False),  # a similar picture of a different look: not the same face
    ],
)
def test_duplicates_need_the_picture_and_the_face_to_agree(
    face_cos: float, bits: int, duplicate: bool
) -> None:
    own = _person(7, 6)
    first = _analysis("a.jpg", own[0])
    second = _analysis("b.jpg", _with_face_at(own[0], face_cos, 3))
    second = ImageAnalysis(
        source="b.jpg",
        engine=ENGINE,
        width=1000,
        height=1000,
        faces=second.faces,
        phash=_flip_bits(first.phash or "", bits),
    )
    others = [_analysis(f"o{i}.jpg", e) for i, e in enumerate(own[1:])]
    report = build_report([first, second, *others])
    flagged = [item.analysis.source for item in report.flagged("near_duplicate")]
    assert flagged == (["b.jpg"] if duplicate else []), flagged
