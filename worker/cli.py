"""``loraops worker``: the pod-side program (the worker image's CMD).

Reads the job spec and token from the environment (see ``worker.settings`` for every variable),
serves the protocol API, runs the job, and exits after ``/ack`` or the hard deadline, having asked
RunPod to terminate the pod.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run the in-pod training worker (inside the RunPod pod)")
    parser.add_argument(
        "--host", default=None, help="bind address (env LORAOPS_WORKER_HOST, default 0.0.0.0)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port; 0 = any free port (env LORAOPS_WORKER_PORT, 8000)"
    )
    parser.add_argument(
        "--port-file", default=None, help="write the bound port here (env LORAOPS_WORKER_PORT_FILE)"
    )
    parser.add_argument(
        "--work-dir", default=None, help="job directory (env LORAOPS_WORK_DIR, default /loraops/job)"
    )
    parser.add_argument("--cache-dir", default=None, help="base-model cache (env LORAOPS_MODEL_CACHE_DIR)")
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(handler=run)


class _Redact(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        from .redact import redact  # by value and by shape (bearer tokens, api_key=..., worker tokens)

        message = record.getMessage()
        clean = redact(message, self._secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def run(args: argparse.Namespace) -> int:
    import asyncio

    from .settings import SettingsError, WorkerSettings

    try:
        settings = WorkerSettings.from_env(
            host=args.host,
            port=args.port,
            work_dir=args.work_dir,
            cache_dir=args.cache_dir,
            port_file=args.port_file,
        )
    except SettingsError as exc:
        print(f"loraops worker: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    from .redact import RedactingFormatter  # tracebacks too, by value and by shape

    handler.setFormatter(RedactingFormatter(settings.secrets))
    handler.addFilter(_Redact(settings.secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(args.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return asyncio.run(serve(settings))


async def serve(settings: Any) -> int:
    """Runs the API and the job until the job asks to stop; returns the exit code."""
    import asyncio
    import signal

    from aiohttp import web

    from .app import build_app
    from .job import Job

    log = logging.getLogger("worker")
    job = Job(settings)
    app = build_app(job)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    log.info(
        "listening on http://%s:%d (job %s, %s)",
        settings.host,
        port,
        settings.spec.job_id,
        settings.spec.model_family,
    )
    if settings.port_file is not None:
        tmp = settings.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(settings.port_file)
    job.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The container is being stopped: kill the trainer's process group and leave cleanly.
        loop.add_signal_handler(sig, job.stopped.set)
    try:
        await job.stopped.wait()
    finally:
        await job.close()
        await runner.cleanup()
    log.info("worker exiting (state %s)", job.state)
    return job.exit_code
