"""Running face work: a process pool with one engine per process, an async facade and a sync path.

Face engines are CPU-bound and (dlib) single-threaded, so the work runs in worker processes, each
loading its engine once in the pool's initializer. The bot's wiring code creates a
:class:`FaceService` at start-up and calls :meth:`FaceService.start`; nothing happens at import.
The CLI uses :func:`analyse_sources`, the same pool without an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import os
import queue
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from bot.faces.analysis import DEFAULT_MAX_PIXELS, ImageAnalysis, ImageSource, analyse_image
from bot.faces.engines import EngineChoice, EngineSpec, FaceEngine, build_engine, resolve_engine
from bot.faces.pictures import PictureMatcher, PictureSource
from bot.faces.report import DatasetReport, IdentityReference, SampleScore, build_report

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
AsyncProgress = Callable[[int, int], Awaitable[None] | None]

# The engine of this worker process, loaded once by the pool initializer.
_engine: FaceEngine | None = None
# An engine the CLI process built before forking its pool: forked workers use it as they find it (its
# weights stay shared with the parent, ~80 MB less per worker, and no second load).
_built_before_fork: tuple[EngineSpec, FaceEngine] | None = None


def _opencv_threads(count: int) -> int:
    """Set OpenCV's own thread count; return the one it had. Face work runs one process per core, where
    OpenCV's pool (one thread per core in every process) only adds hand-offs: with one thread, the
    analyses of 100 photos took 8 % less CPU time (10.4 s instead of 11.3) and the same wall time."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    return previous


def _init_worker(spec: EngineSpec, nice: int = 0) -> None:
    global _engine
    if nice and hasattr(os, "nice"):
        # Workers yield the CPU to the process running the event loop (Discord heartbeats, 3 s deadlines).
        os.nice(nice)
    _opencv_threads(1)
    if _built_before_fork is not None and _built_before_fork[0] == spec:
        _engine = _built_before_fork[1]
        return
    _engine = build_engine(spec)


def _analyse_in_worker(
    source: ImageSource, label: str | None, max_pixels: int, scoring: bool = False
) -> ImageAnalysis:
    if _engine is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("face worker has no engine")
    return analyse_image(_engine, source, label=label, max_pixels=max_pixels, scoring=scoring)


def _report_in_worker(
    analyses: list[ImageAnalysis], phash_threshold: int, pictures: dict[str, PictureSource]
) -> DatasetReport:
    """The dataset report, built in a face worker. ``pictures``: the images of analyses that carry no
    keypoints (the near-duplicate check may need their pixels)."""
    report = build_report(analyses, phash_threshold=phash_threshold, pictures=PictureMatcher(pictures.get))
    for item in report.images:
        item.analysis.picture = None  # only the report needed them: a smaller answer to send back
    return report


def _ready() -> str:
    return _engine.engine_id if _engine is not None else ""


def default_workers(jobs: int | None = None) -> int:
    """One worker per usable core (dlib is single-threaded), never more than there are images."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    workers = max(1, min(cores, 8))
    return max(1, min(workers, jobs)) if jobs else workers


def _pool_spec(spec: EngineSpec, workers: int) -> EngineSpec:
    if spec.family != "insightface" or spec.threads is not None:
        return spec
    # onnxruntime uses every core per session by default; N processes × N threads just thrash.
    cores = os.cpu_count() or 1
    return EngineSpec(spec.family, spec.models_dir, spec.providers, max(1, cores // workers))


def _start_method(fork: bool) -> str:
    """``fork`` when asked for, available, and this process runs no other Python thread; else ``spawn``."""
    import threading

    if fork and "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def make_pool(spec: EngineSpec, workers: int, *, nice: int = 0, fork: bool = False) -> ProcessPoolExecutor:
    """A process pool whose workers each load ``spec``'s engine once. Spawned by default: the
    parent may hold threads (event loop, onnxruntime sessions) that must not be copied mid-state.
    ``fork`` (the CLI: no other Python thread) skips the new interpreter and its imports (~0.4 CPU-s
    per worker) and shares the parent's pages. The dlib engine may be built before: its onnxruntime
    session runs on the calling thread (one intra-op thread, no pool); the one idle native thread that
    importing onnxruntime starts is not copied (the forked helper's results are tested against
    in-process ones in tests/faces/test_dlib_photos.py).
    ``nice`` lowers the workers' CPU priority (Unix) so the parent stays responsive."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(_start_method(fork)),
        initializer=_init_worker,
        initargs=(_pool_spec(spec, workers), nice),
    )


def _label(source: ImageSource, label: str | None) -> str | None:
    if label is not None:
        return label
    return None if isinstance(source, bytes) else str(source)


def analyse_sources(
    spec: EngineSpec,
    sources: Sequence[ImageSource],
    *,
    labels: Sequence[str] | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    scoring: bool | Sequence[bool] = False,
) -> list[ImageAnalysis]:
    """Synchronous path (CLI): analyse ``sources`` in order, in a process pool when it pays off.
    ``scoring`` (for all sources, or one flag per source): the image is a sample to score (see
    :func:`~bot.faces.analysis.analyse_image`); one call, so one pool, serves references and samples."""
    if labels is not None and len(labels) != len(sources):
        raise ValueError("one label per source")
    flags = [scoring] * len(sources) if isinstance(scoring, bool) else list(scoring)
    if len(flags) != len(sources):
        raise ValueError("one scoring flag per source")
    total = len(sources)
    names = [_label(s, labels[i] if labels else None) for i, s in enumerate(sources)]
    workers = workers if workers is not None else default_workers(total)
    results: list[ImageAnalysis | None] = [None] * total
    done = 0

    def finished(index: int, analysis: ImageAnalysis) -> None:
        nonlocal done
        results[index] = analysis
        done += 1
        if progress:
            progress(done, total)

    def here(engine: FaceEngine, index: int) -> ImageAnalysis:
        return analyse_image(
            engine, sources[index], label=names[index], max_pixels=max_pixels, scoring=flags[index]
        )

    if workers <= 1 or total <= 1:
        engine = build_engine(spec)
        for index in range(total):
            finished(index, here(engine, index))
    else:
        # This process is one of the workers: it would otherwise sit idle waiting for the pool, and a
        # process less is ~200 MB less for the tree. The dlib engine is single-threaded: it is built
        # here first and the forked helpers inherit it (no second load; its weights stay shared). Other
        # engines may run thread pools, which a fork must not copy: the helpers load their own.
        #
        # Every image is queued for the helpers at once, last image first, and this process works from
        # the front, taking each image back from the queue (a future still waiting can be cancelled)
        # until it reaches one a helper has started. The executor's own thread keeps the helpers fed,
        # so they never wait for this process to finish an image (they had waited 0.5 s in 10 when it
        # fed them between its own images), and neither side runs out of work before the other.
        global _built_before_fork
        helpers = min(workers, total) - 1
        shared: FaceEngine | None = build_engine(spec) if spec.family == "dlib" else None
        _built_before_fork = (spec, shared) if shared is not None else None
        opencv_threads = _opencv_threads(1)  # this process is one of the workers too
        pool = make_pool(spec, helpers, fork=True)
        try:
            done_by_helpers: queue.SimpleQueue[int] = queue.SimpleQueue()
            futures: dict[int, Future[ImageAnalysis]] = {}
            for index in reversed(range(total)):
                future = pool.submit(
                    _analyse_in_worker, sources[index], names[index], max_pixels, flags[index]
                )
                # Runs in the executor's thread (or here, on a cancel): only hands the index over.
                future.add_done_callback(lambda _future, index=index: done_by_helpers.put(index))
                futures[index] = future
            engine = shared if shared is not None else build_engine(spec)

            def collect(block: bool) -> None:
                while True:
                    try:
                        index = done_by_helpers.get(block=block)
                    except queue.Empty:
                        return
                    if not futures[index].cancelled():
                        finished(index, futures[index].result())
                    if block:
                        return

            for index in range(total):
                collect(block=False)
                if not futures[index].cancel():
                    break  # a helper has it, and every image after it
                finished(index, here(engine, index))
            while done < total:
                collect(block=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _built_before_fork = None
            _opencv_threads(opencv_threads)
    return [r for r in results if r is not None]


class FaceService:
    """Async facade over a pool of face workers; no call blocks the event loop.

    Create it in the start-up wiring (``FaceService.from_settings(settings)`` then ``start()``) and
    ``await close()`` at shutdown. Every result carries the engine id (``engine_id``).
    """

    def __init__(
        self,
        spec: EngineSpec,
        *,
        workers: int | None = None,
        note: str = "",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        phash_threshold: int = 4,
        nice: int = 10,
    ) -> None:
        self.spec = spec
        self.nice = nice
        self.note = note
        self.workers = workers or default_workers()
        self.max_pixels = max_pixels
        self.phash_threshold = phash_threshold
        self._pool: Executor | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: EngineChoice | None = None) -> FaceService:
        """Resolve ``settings.face_engine`` (or ``engine``) against the models directory."""
        spec, note = resolve_engine(engine or settings.face_engine, settings.face_models_dir)
        log.info("faces: %s", note)
        return cls(
            spec,
            note=note,
            max_pixels=settings.max_image_pixels,
            phash_threshold=settings.phash_threshold,
        )

    @property
    def engine_id(self) -> str:
        return self.spec.engine_id

    def start(self) -> None:
        """Create the worker pool (engines load in each worker on its first task)."""
        if self._pool is None:
            self._pool = make_pool(self.spec, self.workers, nice=self.nice)

    async def warm_up(self) -> None:
        """Load the engine in every worker now rather than on the first request."""
        pool = self._require_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.workers)))

    def _require_pool(self) -> Executor:
        if self._pool is None:
            raise RuntimeError("FaceService.start() was not called")
        return self._pool

    async def analyse_many(
        self,
        images: Sequence[ImageSource],
        *,
        labels: Sequence[str] | None = None,
        progress: AsyncProgress | None = None,
        scoring: bool = False,
    ) -> list[ImageAnalysis]:
        """Analyse images (bytes or paths) in the pool; results in input order.

        ``progress(done, total)`` is called on the event loop after each image (may be async).
        ``scoring``: the images are samples to score (no picture hash).
        """
        if labels is not None and len(labels) != len(images):
            raise ValueError("one label per image")
        pool = self._require_pool()
        loop = asyncio.get_running_loop()
        total = len(images)
        futures = [
            loop.run_in_executor(
                pool,
                _analyse_in_worker,
                image,
                _label(image, labels[i] if labels else None),
                self.max_pixels,
                scoring,
            )
            for i, image in enumerate(images)
        ]
        if progress is not None:
            done = 0
            try:
                for next_done in asyncio.as_completed(futures):
                    await next_done
                    done += 1
                    outcome = progress(done, total)
                    if inspect.isawaitable(outcome):
                        await outcome
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return list(await asyncio.gather(*futures))

    async def curate(
        self,
        images: Sequence[ImageSource],
        *,
        labels: Sequence[str] | None = None,
        progress: AsyncProgress | None = None,
    ) -> DatasetReport:
        """Analyse a dataset and judge it (centroid, ceiling, flags, advice)."""
        analyses = await self.analyse_many(images, labels=labels, progress=progress)
        # The report runs in a worker too (keypoint matching is seconds of CPU on a large set): the
        # bot's process keeps the interpreter for its event loop. The workers computed each picture's
        # keypoints; only an analysis without them needs its image sent along.
        pictures: dict[str, PictureSource] = {}
        for analysis, image in zip(analyses, images, strict=True):
            source = _picture(image)
            if analysis.picture is None and source is not None:
                pictures[analysis.source] = source
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._require_pool(), _report_in_worker, analyses, self.phash_threshold, pictures
        )

    async def score(self, reference: IdentityReference, images: Sequence[ImageSource]) -> list[SampleScore]:
        """Similarity of each image's best face to ``reference`` (same engine only)."""
        if reference.engine != self.engine_id:
            raise ValueError(f"reference made by {reference.engine}, this service runs {self.engine_id}")
        analyses = await self.analyse_many(images, scoring=True)
        return [reference.score(a) for a in analyses]

    async def render_report_card(
        self, report: DatasetReport, sources: Sequence[ImageSource], **kw: object
    ) -> bytes:
        """The contact sheet as JPEG bytes, rendered off the event loop."""
        from bot.faces.sheet import render_report_card

        return await asyncio.to_thread(render_report_card, report, sources, **kw)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Shut the pool down without blocking the loop."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


__all__ = ["FaceService", "analyse_sources", "default_workers", "make_pool"]


def _picture(image: ImageSource | None) -> PictureSource | None:
    """An image source the picture matcher can open (paths and bytes; anything else is skipped)."""
    return image if isinstance(image, str | Path | bytes) else None


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files given directly plus image files found (recursively, sorted) in given folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            )
        else:
            found.append(path)
    return found


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
