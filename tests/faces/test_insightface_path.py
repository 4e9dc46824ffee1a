"""The insightface engine end to end (FaceAnalysis → SCRFD → norm_crop → ArcFaceONNX) with generated
models, offline: counts, boxes, flags, identity, engine choice and the async service."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bot.faces.analysis import analyse_image
from bot.faces.engines import (
    INSIGHTFACE_PROFILE,
    EngineSpec,
    FaceEngine,
    FaceEngineUnavailableError,
    InsightFaceEngine,
    resolve_engine,
)
from bot.faces.report import build_report
from bot.faces.service import FaceService


def test_detects_each_face_with_box_score_and_unit_embedding(
    fake_engine: FaceEngine, make_photo: Callable[..., bytes]
) -> None:
    assert fake_engine.engine_id == "insightface-buffalo_l"
    none = analyse_image(fake_engine, make_photo([]), label="none")
    one = analyse_image(fake_engine, make_photo([(6, 4, 1)]), label="one")
    two = analyse_image(fake_engine, make_photo([(2, 2, 1), (12, 8, 2)]), label="two")

    assert (none.face_count, one.face_count, two.face_count) == (0, 1, 2)
    face = one.faces[0]
    # The square spans x 307..512, y 205..410 in the 1024×768 image.
    assert face.bbox == pytest.approx((307.2, 204.8, 512.0, 409.6), abs=2)
    assert face.det_score > INSIGHTFACE_PROFILE.det_score_min
    assert face.embedding.dtype == np.float32 and face.embedding.shape == (512,)
    assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert face.face_ratio == pytest.approx(205 * 205 / (1024 * 768), rel=0.05)
    assert abs(face.yaw) < 5  # the key points are the frontal template
    assert not face.cut
    assert one.engine == "insightface-buffalo_l" and one.phash


def test_dataset_flags_other_identity_group_and_duplicate(
    fake_engine: FaceEngine, make_photo: Callable[..., bytes]
) -> None:
    sources = {
        "p0": make_photo([(2, 2, 1)], variant=0, noise_seed=0),
        "p1": make_photo([(6, 4, 1)], variant=1, noise_seed=1),
        "p2": make_photo([(10, 6, 1)], variant=2, noise_seed=2),
        "p3": make_photo([(4, 8, 1)], variant=3, noise_seed=3),
        "intruder": make_photo([(8, 2, 7)], variant=4, noise_seed=4),
        "group": make_photo([(2, 2, 1), (12, 8, 9)], variant=5, noise_seed=5),
        "empty": make_photo([], noise_seed=6),
        "copy_of_p1": make_photo([(6, 4, 1)], variant=1, noise_seed=1),
    }
    analyses = [analyse_image(fake_engine, data, label=name) for name, data in sources.items()]
    report = build_report(analyses)
    by_name = {item.analysis.source: item for item in report.images}

    assert report.engine == "insightface-buffalo_l"
    assert [i.analysis.source for i in report.flagged("identity_outlier")] == ["intruder"]
    assert [i.analysis.source for i in report.flagged("multiple_faces")] == ["group"]
    assert [i.analysis.source for i in report.flagged("no_face")] == ["empty"]
    assert [i.analysis.source for i in report.flagged("near_duplicate")] == ["copy_of_p1"]
    assert by_name["copy_of_p1"].duplicate_of == "p1"
    # In the group photo the subject is the face that matches the identity, not a stranger.
    group = by_name["group"]
    assert group.face is not None and group.face.bbox[0] == pytest.approx(102.4, abs=2)
    assert report.ceiling is not None and report.ceiling > INSIGHTFACE_PROFILE.outlier
    assert by_name["intruder"].identity_similarity is not None
    assert by_name["intruder"].identity_similarity < INSIGHTFACE_PROFILE.outlier
    row = by_name["p0"].to_row()
    assert row["engine"] == "insightface-buffalo_l" and row["face_count"] == 1
    assert np.frombuffer(row["embedding"], dtype=np.float32).shape == (512,)


def test_reference_scores_same_identity_above_threshold(
    fake_engine: FaceEngine, make_photo: Callable[..., bytes]
) -> None:
    refs = [
        analyse_image(fake_engine, make_photo([(2 + 2 * k, 2, 3)], variant=k, noise_seed=k)) for k in range(4)
    ]
    reference = build_report(refs).reference()
    assert reference is not None and reference.engine == "insightface-buffalo_l"
    same = reference.score(analyse_image(fake_engine, make_photo([(6, 8, 3)], variant=9, noise_seed=9)))
    other = reference.score(analyse_image(fake_engine, make_photo([(6, 8, 4)], variant=9, noise_seed=9)))
    nothing = reference.score(analyse_image(fake_engine, make_photo([], noise_seed=9)))
    assert same.same_person is True and same.percent_of_ceiling is not None and same.percent_of_ceiling > 70
    assert other.same_person is False
    assert nothing.face_found is False and nothing.similarity is None


def test_auto_picks_insightface_when_models_present_else_dlib(fake_pack: Path, tmp_path: Path) -> None:
    spec, note = resolve_engine("auto", fake_pack.parent)  # a directory holding buffalo_l/
    assert spec.family == "insightface" and spec.models_dir == fake_pack and "insightface" in note
    spec, note = resolve_engine("auto", tmp_path)
    assert spec.family == "dlib" and "no insightface models" in note
    spec, note = resolve_engine("auto", None)
    assert spec.family == "dlib" and "FACE_MODELS_DIR" in note
    with pytest.raises(FaceEngineUnavailableError, match="fetch-models"):
        resolve_engine("insightface", tmp_path)


def test_missing_models_fail_clearly_without_downloading(tmp_path: Path) -> None:
    empty = tmp_path / "buffalo_l"
    empty.mkdir()
    with pytest.raises(FaceEngineUnavailableError, match="no insightface models"):
        InsightFaceEngine(empty)
    assert list(tmp_path.iterdir()) == [empty]  # nothing created, nothing fetched


def test_pack_without_recogniser_is_refused(fake_pack: Path, tmp_path: Path) -> None:
    only_detector = tmp_path / "det_only"
    only_detector.mkdir()
    (only_detector / "det_10g.onnx").write_bytes((fake_pack / "det_10g.onnx").read_bytes())
    with pytest.raises(FaceEngineUnavailableError, match="recognition"):
        InsightFaceEngine(only_detector, ("CPUExecutionProvider",))


async def test_service_analyses_in_worker_processes_without_blocking_the_loop(
    fake_pack: Path, make_photo: Callable[..., bytes]
) -> None:
    service = FaceService(EngineSpec("insightface", fake_pack, ("CPUExecutionProvider",)), workers=2)
    images = [make_photo([(2 + k, 2, 1)], variant=k, noise_seed=k) for k in range(6)] + [make_photo([])]
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    progress: list[tuple[int, int, int]] = []

    async def on_progress(done: int, total: int) -> None:
        progress.append((done, total, threading.get_ident()))

    service.start()
    try:
        ticking = asyncio.create_task(ticker())
        ticks_before = ticks
        report = await service.curate(images, labels=[f"img{k}" for k in range(7)], progress=on_progress)
        stop.set()
        await ticking
        card = await service.render_report_card(report, images)
    finally:
        await service.close()

    assert [a.analysis.source for a in report.images] == [f"img{k}" for k in range(7)]
    assert [a.analysis.face_count for a in report.images] == [1, 1, 1, 1, 1, 1, 0]
    assert report.engine == "insightface-buffalo_l"
    assert [p[:2] for p in progress] == [(k, 7) for k in range(1, 8)]
    assert {p[2] for p in progress} == {threading.get_ident()}  # called on the loop's thread
    assert ticks > ticks_before  # other tasks ran while the workers were busy
    assert card[:2] == b"\xff\xd8"


async def test_service_refuses_work_before_start(fake_pack: Path) -> None:
    service = FaceService(EngineSpec("insightface", fake_pack))
    with pytest.raises(RuntimeError, match="start"):
        await service.analyse_many([b""])
