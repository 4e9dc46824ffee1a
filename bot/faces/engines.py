"""Face engines: one small interface, two real back-ends (insightface and dlib).

An engine turns an RGB image (``numpy`` uint8, H×W×3) into a list of :class:`DetectedFace`: box,
detector score, landmarks and an L2-normalised float32 embedding. Everything above this module
(analysis, dataset report, scoring) is engine-agnostic but keeps the engine id next to every number,
because scores of different engines live on different scales and are never compared.

Nothing here loads a model at import time; heavy imports (dlib, insightface, onnxruntime) happen when
an engine is constructed, which is once per worker process (see :mod:`bot.faces.service`).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from bot.errors import UserError

log = logging.getLogger(__name__)

EngineChoice = Literal["auto", "insightface", "dlib"]
EngineFamily = Literal["insightface", "dlib"]

DEFAULT_PACK = "buffalo_l"
INSIGHTFACE_DET_SIZE = (640, 640)


class FaceEngineUnavailableError(UserError):
    """The requested engine can't run here (missing models or packages); the message says what to do."""


@dataclass(frozen=True)
class EngineProfile:
    """Per-engine thresholds. All similarities are cosine of L2-normalised embeddings.

    ``same_person``: two faces at or above this are the same person.
    ``outlier``: an image whose leave-one-out similarity to the set's centroid is below this is flagged
    ``identity_outlier``. ``near_duplicate``: two faces at or above this are (nearly) the same photo.
    ``det_score_min``: detections below this score are ignored.
    """

    family: EngineFamily
    det_score_min: float
    same_person: float
    outlier: float
    near_duplicate: float
    note: str = ""


# dlib ResNet 128-D, cosine of the L2-normalised descriptor (cos = 1 - L2²/2 on unit vectors).
# Calibrated with benchmarks/faces/calibrate.py on shared/testdata/faces (5 people, 13 photos) +
# insightface t1.jpg (6 more people) + skimage astronaut, each downscaled to 1024 px as curate does,
# HOG upsample 1. Output recorded in benchmarks/faces/README.md:
#   same person, different photos      n=12   cos min 0.9502  mean 0.9636  max 0.9708
#   different persons                  n=178  cos min 0.7448  mean 0.8237  max 0.9049
#   same photo, half size + JPEG 60    n=14   cos min 0.9906  mean 0.9972
#   own photo vs centroid of the rest  n=13   min 0.9615;  other person vs a centroid  n=87  max 0.8924
#   HOG score: real faces min 0.315 (a child in the background of obama_and_biden), false detection
#   on astronaut 0.12, the rest below 0.
# Thresholds sit in the middle of the gaps (dlib's own 0.6 L2 radius is cos 0.82, far too loose here).
DLIB_PROFILE = EngineProfile(
    family="dlib",
    det_score_min=0.2,  # gap 0.12 .. 0.315
    same_person=0.925,  # gap 0.9049 .. 0.9502, midpoint 0.9275
    outlier=0.925,  # gap 0.8924 .. 0.9615 (leave-one-out vs centroid), midpoint 0.927
    near_duplicate=0.985,  # gap 0.9708 .. 0.9906
    note="dlib cosines are compressed: different people still score 0.74-0.90",
)

# insightface buffalo_l (ArcFace w600k_r50, 512-D cosine). The buffalo_l weights can't be fetched on
# the build machine (no network), so these are not calibrated here: they come from the published
# practice collected in /work/shared/reference/faces.md §4 (verification at cos >= 0.4-0.5, curation
# outliers at about 0.3-0.35 against the set mean, re-encoded copies of a photo >= 0.9).
# Run benchmarks/faces/calibrate.py --engine insightface once the models are present to re-check.
INSIGHTFACE_PROFILE = EngineProfile(
    family="insightface",
    det_score_min=0.5,
    same_person=0.40,
    outlier=0.32,
    near_duplicate=0.92,
    note="ArcFace cosine; thresholds from published practice, not calibrated on local photos",
)

PROFILES: dict[EngineFamily, EngineProfile] = {"dlib": DLIB_PROFILE, "insightface": INSIGHTFACE_PROFILE}


def profile_for(engine_id: str) -> EngineProfile:
    """The thresholds of the engine that produced ``engine_id`` (``"dlib-…"`` or ``"insightface-…"``)."""
    family = engine_id.split("-", 1)[0]
    if family not in PROFILES:
        raise ValueError(f"unknown face engine id {engine_id!r}")
    return PROFILES[family]  # type: ignore[index]


@dataclass
class DetectedFace:
    """One face as an engine sees it, in the coordinates of the image it was given."""

    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1; may extend beyond the frame
    score: float
    landmarks: list[tuple[float, float]]  # 5 points; order is engine-specific, see ``eyes_and_nose``
    embedding: np.ndarray  # float32, L2-normalised
    eyes_and_nose: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = field(
        default=((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    )


class FaceEngine(Protocol):
    """What the rest of bot.faces needs from an engine."""

    engine_id: str
    profile: EngineProfile

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces at or above the engine's score threshold, largest first."""
        ...


@dataclass(frozen=True)
class EngineSpec:
    """A picklable description of an engine, so each worker process can build its own."""

    family: EngineFamily
    models_dir: Path | None = None  # insightface: the model pack directory (holds the *.onnx files)
    providers: tuple[str, ...] | None = None  # insightface: onnxruntime providers; None = best available
    threads: int | None = None  # insightface: onnxruntime intra-op threads (1 per pool worker avoids thrash)

    @property
    def engine_id(self) -> str:
        if self.family == "dlib":
            return DlibEngine.ENGINE_ID
        name = self.models_dir.name if self.models_dir else DEFAULT_PACK
        return f"insightface-{name}"


def _normalise(vector: Any) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def _sort_largest_first(faces: list[DetectedFace]) -> list[DetectedFace]:
    return sorted(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]), reverse=True)


# --------------------------------------------------------------------------------------------- dlib


def dlib_models_dir() -> Path:
    """Where face-recognition-models keeps its weights, found without importing the package.

    Its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceEngineUnavailableError(
            "the dlib face engine needs the face-recognition-models package: "
            "pip install face-recognition-models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibEngine:
    """HOG detector (upsample 1, score-thresholded) + 5-point alignment + ResNet 128-D descriptor.

    Public-domain weights from PyPI, works offline, single-threaded (run one per process).

    ``fast`` (the default) gives the same faces, boxes and scores, and descriptors within 3e-7, for far
    less CPU: the HOG scan skips the pyramid levels that only hold faces under ~85 px unless nothing
    larger was found (:mod:`bot.faces.dlib_hog`), and the ResNet runs in onnxruntime from the same
    weights (:mod:`bot.faces.dlib_resnet`). ``fast=False`` is dlib as ``face_recognition`` uses it, the
    reference the tests and the benchmark compare against.
    """

    ENGINE_ID = "dlib-resnet128-v1"

    def __init__(self, upsample: int = 1, *, fast: bool = True) -> None:
        try:
            # dlib-bin ships no type information; treat the module as Any.
            dlib: Any = importlib.import_module("dlib")
        except ImportError as exc:  # pragma: no cover - dlib-bin is a hard dependency
            raise FaceEngineUnavailableError(
                "the dlib face engine needs dlib-bin: pip install dlib-bin"
            ) from exc
        if fast and upsample != 1:
            raise ValueError("the fast dlib path implements upsample 1 only")
        models = dlib_models_dir()
        self.engine_id = self.ENGINE_ID
        self.profile = DLIB_PROFILE
        self.fast = fast
        self._upsample = upsample
        # The 5-point predictor is public domain; the 68-point one is non-commercial and never loaded.
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        resnet = models / "dlib_face_recognition_resnet_model_v1.dat"
        if fast:
            from bot.faces.dlib_hog import HogDetector
            from bot.faces.dlib_resnet import OnnxDescriptor

            self._hog = HogDetector(dlib, min_score=self.profile.det_score_min)
            self._descriptor = OnnxDescriptor(resnet)
        else:
            self._detector = dlib.get_frontal_face_detector()
            self._recogniser = dlib.face_recognition_model_v1(str(resnet))
        self._dlib = dlib

    def _boxes(self, image: np.ndarray) -> list[tuple[Any, float]]:
        dlib = self._dlib
        if self.fast:
            return [(dlib.rectangle(*box), score) for box, score in self._hog.detect(image)]
        # adjust_threshold -0.5 lets us see weak detections and apply our own calibrated cut.
        rects, scores, _ = self._detector.run(image, self._upsample, -0.5)
        return [(r, float(s)) for r, s in zip(rects, scores, strict=True) if s >= self.profile.det_score_min]

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces largest first; boxes and scores those of ``run(rgb, 1)`` for faces of 75 px and more
        (and for smaller ones where no larger face is found: :mod:`bot.faces.dlib_hog`)."""
        image = np.ascontiguousarray(rgb)
        boxes = self._boxes(image)
        shapes = [self._shape(image, rect) for rect, _ in boxes]
        if self.fast and shapes:
            # The aligned 150 px chips compute_face_descriptor makes, then the ResNet in one batch.
            chips = self._dlib.get_face_chips(image, self._dlib.full_object_detections(shapes), 150, 0.25)
            descriptors: list[Any] = list(self._descriptor.compute(list(chips)))
        else:
            descriptors = [self._recogniser.compute_face_descriptor(image, shape, 0) for shape in shapes]
        faces: list[DetectedFace] = []
        for (rect, score), shape, descriptor in zip(boxes, shapes, descriptors, strict=True):
            points = [(float(shape.part(i).x), float(shape.part(i).y)) for i in range(shape.num_parts)]
            # dlib's 5-point model: points 0-1 and 2-3 are the corners of each eye, 4 is below the nose.
            eye_a = ((points[0][0] + points[1][0]) / 2, (points[0][1] + points[1][1]) / 2)
            eye_b = ((points[2][0] + points[3][0]) / 2, (points[2][1] + points[3][1]) / 2)
            left, right = sorted((eye_a, eye_b))
            faces.append(
                DetectedFace(
                    bbox=(float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom())),
                    score=float(score),
                    landmarks=points,
                    embedding=_normalise(descriptor),
                    eyes_and_nose=(left, right, points[4]),
                )
            )
        return _sort_largest_first(faces)


# -------------------------------------------------------------------------------------- insightface


def find_insightface_pack(models_dir: Path | None, pack: str = DEFAULT_PACK) -> Path | None:
    """The directory holding an insightface model pack's ``*.onnx`` files, or None when absent.

    Accepts the pack directory itself, a directory containing ``<pack>/``, or an insightface root
    (``<dir>/models/<pack>/``). Never downloads.
    """
    if models_dir is None:
        return None
    base = Path(models_dir).expanduser()
    for candidate in (base, base / pack, base / "models" / pack):
        if candidate.is_dir() and any(candidate.glob("*.onnx")):
            return candidate
    return None


def best_providers() -> tuple[str, ...]:
    """CUDA when onnxruntime offers it, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


class InsightFaceEngine:
    """insightface ``FaceAnalysis`` (SCRFD detector + ArcFace recogniser) on a local model pack.

    The pack directory is passed as ``name`` so insightface uses it as is and never downloads.
    Detection runs single-scale at 640×640, like IP-Adapter-FaceID and InstantID.
    """

    def __init__(
        self, pack_dir: Path, providers: tuple[str, ...] | None = None, *, threads: int | None = None
    ) -> None:
        pack_dir = Path(pack_dir).expanduser()
        if not pack_dir.is_dir() or not any(pack_dir.glob("*.onnx")):
            raise FaceEngineUnavailableError(
                f"no insightface models in {pack_dir}: "
                "run `loraops faces fetch-models` or set FACE_MODELS_DIR"
            )
        import onnxruntime
        from insightface.app import FaceAnalysis

        providers = providers or best_providers()
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            app = FaceAnalysis(
                name=str(pack_dir),
                allowed_modules=["detection", "recognition"],
                providers=list(providers),
                sess_options=options,
            )
        except AssertionError as exc:  # insightface asserts, without a message, when there's no detector
            raise FaceEngineUnavailableError(
                f"no face detector model among the *.onnx in {pack_dir}"
            ) from exc
        if "recognition" not in app.models:
            raise FaceEngineUnavailableError(f"no face recognition model among the *.onnx in {pack_dir}")
        ctx_id = 0 if "CUDAExecutionProvider" in providers else -1
        app.prepare(
            ctx_id=ctx_id, det_thresh=INSIGHTFACE_PROFILE.det_score_min, det_size=INSIGHTFACE_DET_SIZE
        )
        self._app = app
        self.engine_id = f"insightface-{pack_dir.name}"
        self.profile = INSIGHTFACE_PROFILE
        self.providers = providers

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        import warnings

        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with warnings.catch_warnings():
            # scikit-image 0.26 deprecates a call insightface's face_align makes; harmless, but noisy.
            warnings.simplefilter("ignore", FutureWarning)
            found = self._app.get(bgr)
        faces: list[DetectedFace] = []
        for face in found:
            score = float(face.det_score)
            if score < self.profile.det_score_min or face.embedding is None:
                continue
            kps = [(float(x), float(y)) for x, y in np.asarray(face.kps).reshape(-1, 2)]
            x0, y0, x1, y1 = (float(v) for v in np.asarray(face.bbox).reshape(-1)[:4])
            # insightface kps: left eye, right eye, nose tip, left and right mouth corners.
            left, right = sorted((kps[0], kps[1]))
            faces.append(
                DetectedFace(
                    bbox=(x0, y0, x1, y1),
                    score=score,
                    landmarks=kps,
                    embedding=_normalise(face.embedding),
                    eyes_and_nose=(left, right, kps[2]),
                )
            )
        return _sort_largest_first(faces)


# ---------------------------------------------------------------------------------------- choosing


def resolve_engine(choice: EngineChoice, models_dir: Path | None) -> tuple[EngineSpec, str]:
    """Pick the engine for ``choice`` and say why, in one line for the user.

    ``auto`` is insightface when its models are present in ``models_dir``, else dlib. Asking for
    insightface explicitly without models raises :class:`FaceEngineUnavailableError`.
    """
    pack = find_insightface_pack(models_dir)
    if choice == "insightface":
        if pack is None:
            where = models_dir if models_dir is not None else "FACE_MODELS_DIR (not set)"
            raise FaceEngineUnavailableError(
                f"no insightface models in {where}: run `loraops faces fetch-models` "
                "(buffalo_l, non-commercial research licence) or use --engine dlib"
            )
        return EngineSpec("insightface", pack), f"engine insightface ({pack})"
    if choice == "dlib":
        return EngineSpec("dlib"), "engine dlib (HOG + ResNet 128-D)"
    if pack is not None:
        return EngineSpec("insightface", pack), f"engine auto → insightface: models found in {pack}"
    where = f"in {models_dir}" if models_dir is not None else "(FACE_MODELS_DIR not set)"
    return EngineSpec("dlib"), f"engine auto → dlib: no insightface models {where}"


def build_engine(spec: EngineSpec) -> FaceEngine:
    """Load the engine a spec describes (slow: loads model weights)."""
    if spec.family == "dlib":
        return DlibEngine()
    if spec.models_dir is None:
        raise FaceEngineUnavailableError("insightface needs a models directory")
    return InsightFaceEngine(spec.models_dir, spec.providers, threads=spec.threads)
