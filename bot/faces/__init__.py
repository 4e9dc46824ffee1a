"""Faces: engines (insightface, dlib), per-image analysis, dataset report card, crops, scoring.

Importing this package loads no model and no heavy library; engines load in
:func:`bot.faces.engines.build_engine`, normally once per worker process of :class:`FaceService`.
"""

from bot.faces.analysis import FaceInfo, ImageAnalysis, analyse_image
from bot.faces.crops import FaceCrop, crop_box, make_face_crop
from bot.faces.engines import (
    DLIB_PROFILE,
    INSIGHTFACE_PROFILE,
    EngineProfile,
    EngineSpec,
    FaceEngineUnavailableError,
    build_engine,
    profile_for,
    resolve_engine,
)
from bot.faces.report import DatasetReport, IdentityReference, ImageReport, SampleScore, build_report
from bot.faces.service import FaceService, analyse_sources
from bot.faces.sheet import render_report_card

__all__ = [
    "DLIB_PROFILE",
    "INSIGHTFACE_PROFILE",
    "DatasetReport",
    "EngineProfile",
    "EngineSpec",
    "FaceCrop",
    "FaceEngineUnavailableError",
    "FaceInfo",
    "FaceService",
    "IdentityReference",
    "ImageAnalysis",
    "ImageReport",
    "SampleScore",
    "analyse_image",
    "analyse_sources",
    "build_engine",
    "build_report",
    "crop_box",
    "make_face_crop",
    "profile_for",
    "render_report_card",
    "resolve_engine",
]
