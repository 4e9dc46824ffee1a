"""The job inside the pod: base model, dataset, sd-scripts, outcome, shutdown.

Flow: ``starting`` (config files written, base model fetched; the dataset may already arrive) →
``waiting_dataset`` → ``training`` (sd-scripts runs in its own process group; its output is parsed
line by line) → ``finished`` / ``failed`` / ``cancelled``, and ``acknowledged`` once the bot has
collected everything. A NaN loss kills the trainer at once (sd-scripts itself never stops on NaN);
exit 0 without the final checkpoint is a failure (sd-scripts returns 0 when it finds no images).
Past ``deadline_unix`` or ``budget_stop_unix`` everything stops and the pod terminates itself; so it
does once training has ended and the bot has not called for ``unattended_stop_s`` (the bot is down).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import math
import os
import re
import signal
import time
import tomllib
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp

from . import device, terminate
from .artifacts import ArtifactIndex
from .fetch import FetchError, fetch_model
from .progress import (
    MODEL_SAVED,
    NO_DATA_MARKER,
    OOM_MARKER,
    LineSplitter,
    loss_is_bad,
    parse_epoch,
    parse_progress,
    parse_signal,
)
from .protocol import (
    MODEL_PATH_KEYS,
    WORK_CONFIG_FILE,
    WORK_DATASET_CONFIG_FILE,
    WORK_DATASET_DIR,
    WORK_MODELS_DIR,
    WORK_PROMPTS_FILE,
    JobSpec,
    WorkerState,
    WorkerStatus,
)
from .redact import redact
from .settings import WorkerSettings

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
TERMINAL_STATES: frozenset[WorkerState] = frozenset({"finished", "failed", "cancelled", "acknowledged"})
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Invalid|Interrupt)\b[^:]*:")
_CHILD_ENV_DROP = ("LORAOPS_WORKER_TOKEN", "LORAOPS_JOB_SPEC", "RUNPOD_API_KEY")


class Job:
    """State and behaviour of the one job this pod runs."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.spec = settings.spec
        self.state: WorkerState = "starting"
        self.step = 0
        self.total_steps = self.spec.total_steps
        self.loss: float | None = None
        self.rate: float | None = None
        self.eta_s: float | None = None
        self.epoch: int | None = None
        self.error: str | None = None
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.dataset_received = False
        # A dataset sent in parts (Content-Range): bytes received so far and the announced total.
        self.dataset_offset = 0
        self.dataset_total: int | None = None
        self.dataset_lock = asyncio.Lock()
        self.dataset_ready = asyncio.Event()
        self.stopped = asyncio.Event()  # set when the worker should exit
        self.exit_code = 0
        self.artifacts = self._artifact_index()
        self._process: asyncio.subprocess.Process | None = None
        self._main: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scan_lock = asyncio.Lock()
        self._stop_reason: tuple[WorkerState, str | None] | None = None  # why we killed the trainer
        self._oom = False
        self._signal: str | None = None
        self._no_data: str | None = None
        self._last_exception: str | None = None
        self._shutting_down = False
        self.last_contact = time.monotonic()  # the bot's last authenticated request
        self.ended_at: float | None = None  # monotonic time training reached a terminal state

    # ---- status ----

    def status(self) -> WorkerStatus:
        loss = None if self.loss is None or math.isnan(self.loss) or math.isinf(self.loss) else self.loss
        return WorkerStatus(
            state=self.state,
            step=self.step,
            total_steps=self.total_steps,
            loss=loss,
            rate=self.rate,
            eta_s=self.eta_s,
            epoch=self.epoch,
            samples=sorted(
                self.artifacts.samples.values(), key=lambda f: (f.step, f.prompt_index or 0, f.name)
            ),
            checkpoints=sorted(self.artifacts.checkpoints.values(), key=lambda f: (f.step, f.name)),
            log_tail=list(self.log_tail),
            error=self.error,
        )

    def redact(self, text: str) -> str:
        return redact(text, self.settings.secrets)  # by value and by shape (worker.redact)

    def note(self, line: str) -> None:
        """One line for the status log tail and the pod log (secrets removed)."""
        clean = self.redact(line.rstrip())
        if clean:
            self.log_tail.append(clean)
            log.info("%s", clean)

    def heard_from_bot(self) -> None:
        self.last_contact = time.monotonic()

    def _set_state(self, state: WorkerState, error: str | None = None) -> None:
        if self.state in TERMINAL_STATES and state != "acknowledged":
            return
        self.state = state
        if state in TERMINAL_STATES and self.ended_at is None:
            self.ended_at = time.monotonic()
        if error is not None:
            self.error = self.redact(error)
            self.note(f"[worker] {state}: {self.error}")
        else:
            self.note(f"[worker] state: {state}")

    # ---- the work directory ----

    def _config(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in tomllib.loads(self.spec.config_toml).items():
            if isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        return flat

    def _artifact_index(self) -> ArtifactIndex:
        try:
            config = self._config()
        except tomllib.TOMLDecodeError:
            config = {}
        output_dir = Path(str(config.get("output_dir") or "output"))
        if not output_dir.is_absolute():
            output_dir = self.settings.work_dir / output_dir
        output_name = config.get("output_name")
        extension = "." + str(config.get("save_model_as") or "safetensors")
        return ArtifactIndex(output_dir, str(output_name) if output_name else None, extension)

    def _write_inputs(self) -> None:
        work = self.settings.work_dir
        work.mkdir(parents=True, exist_ok=True)
        try:
            config = self._config()
        except tomllib.TOMLDecodeError as exc:
            raise JobFailed(f"config.toml in the job spec is not valid TOML: {exc}") from None
        if not config.get("output_dir"):
            raise JobFailed("config.toml has no output_dir: sd-scripts would crash at its first save")
        try:
            tomllib.loads(self.spec.dataset_toml)
        except tomllib.TOMLDecodeError as exc:
            raise JobFailed(f"dataset.toml in the job spec is not valid TOML: {exc}") from None
        problems = layout_problems(self.spec, config)
        if problems:
            # Before any download: a config that names files the worker will not put there would
            # only fail after the base model (gigabytes) has been fetched.
            raise JobFailed("the job spec does not match the work directory: " + "; ".join(problems))
        (work / WORK_CONFIG_FILE).write_text(self.spec.config_toml, encoding="utf-8")
        (work / WORK_DATASET_CONFIG_FILE).write_text(self.spec.dataset_toml, encoding="utf-8")
        (work / WORK_PROMPTS_FILE).write_text(self.spec.prompts_txt, encoding="utf-8")
        (work / WORK_MODELS_DIR).mkdir(exist_ok=True)

    @property
    def dataset_dir(self) -> Path:
        return self.settings.work_dir / WORK_DATASET_DIR

    # ---- main flow ----

    def start(self) -> None:
        self._main = self._spawn(self._run(), "job")
        if self.spec.deadline_unix > 0:
            self._spawn(self._deadline(), "deadline")
        if self.spec.budget_stop_unix > 0:
            self._spawn(self._budget(), "budget")
        if self.spec.unattended_stop_s > 0:
            self._spawn(self._unattended(), "unattended")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"worker:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _run(self) -> None:
        try:
            await asyncio.to_thread(self._write_inputs)
            # Before the base model (gigabytes) is fetched: a pod that would train on its CPU fails now.
            await self._check_device()
            await self._fetch_models()
            if not self.dataset_ready.is_set():
                self._set_state("waiting_dataset")
                await self.dataset_ready.wait()
            await self._train()
        except JobFailed as exc:
            self._set_state("failed", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an I/O error: report it rather than hang in "starting"
            log.exception("job failed")
            self._set_state("failed", f"worker error: {type(exc).__name__}: {exc}")

    def _trainer_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
        env["PYTHONUNBUFFERED"] = "1"  # prints reach us as they happen, not at exit
        return env

    async def _check_device(self) -> None:
        env = self._trainer_env()
        check = await device.check_before_launch(self.settings.trainer_cmd, env)
        if check.problem is None:
            gpus = ", ".join(f"{g.index}: {g.name}" for g in check.gpus)
            self.note(f"[worker] training on GPU ({gpus})")
            return
        if device.cpu_training_allowed(env):
            self.note(f"[worker] {check.problem}; allowed by {device.ALLOW_CPU_ENV} (tests only)")
            return
        raise JobFailed(f"refusing to train on the CPU: {check.problem}")

    async def _fetch_models(self) -> None:
        sources = [self.spec.base_model, *self.spec.base_model.extra]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for source in sources:
                self.note(f"[worker] fetching base model file {source.local_name}")
                try:
                    path = await fetch_model(
                        session,
                        source,
                        self.settings.cache_dir,
                        hf_base_url=self.settings.hf_base_url,
                        hf_token=self.settings.hf_token,
                        part_tag=self.settings.pod_id or f"pid{os.getpid()}",
                    )
                except FetchError as exc:
                    raise JobFailed(str(exc)) from None
                await asyncio.to_thread(self._link_model, path)
        self.note("[worker] base model ready")

    def _link_model(self, path: Path) -> None:
        link = self.settings.work_dir / WORK_MODELS_DIR / path.name
        if link.resolve() == path.resolve():
            return
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve())

    def _command(self) -> list[str]:
        script = f"{self.settings.sd_scripts_dir.rstrip('/')}/{self.spec.train_script}"
        return [
            *self.settings.trainer_cmd,
            script,
            "--config_file",
            WORK_CONFIG_FILE,
            "--dataset_config",
            WORK_DATASET_CONFIG_FILE,
            "--console_log_simple",
        ]

    async def _train(self) -> None:
        env = self._trainer_env()
        self._set_state("training")
        command = self._command()
        self.note(f"[worker] launching: {' '.join(command)}")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.settings.work_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise JobFailed(f"could not start sd-scripts: {exc}") from None
        process = self._process
        assert process.stdout is not None and process.stderr is not None
        readers = [
            self._spawn(self._read(process.stdout), "stdout"),
            self._spawn(self._read(process.stderr), "stderr"),
        ]
        scanner = self._spawn(self._scan_loop(), "scan")
        returncode = await process.wait()
        await asyncio.gather(*readers, return_exceptions=True)
        scanner.cancel()
        await asyncio.gather(scanner, return_exceptions=True)
        await self._scan(finished=True)
        self._outcome(returncode)

    def _outcome(self, returncode: int) -> None:
        if self._stop_reason is not None:
            state, error = self._stop_reason
            self._set_state(state, error)
            return
        final = self.artifacts.final_name
        if returncode == 0:
            if final in self.artifacts.checkpoints:
                self._set_state("finished")
                return
            why = f" ({self._no_data})" if self._no_data else ""
            self._set_state("failed", f"sd-scripts exited 0 without output: no {final} was written{why}")
            return
        if self._oom:
            self._set_state(
                "failed",
                "out of GPU memory (CUDA out of memory); try a smaller batch, "
                "gradient checkpointing or a bigger GPU",
            )
            return
        signal_name = self._signal
        if returncode < 0:
            with contextlib.suppress(ValueError):
                signal_name = signal.Signals(-returncode).name
        if signal_name:
            hint = " (likely the host ran out of RAM)" if signal_name == "SIGKILL" else ""
            self._set_state("failed", f"sd-scripts was killed by {signal_name}{hint}")
            return
        detail = f": {self._last_exception}" if self._last_exception else ""
        self._set_state("failed", f"sd-scripts exited with code {returncode}{detail}")

    async def _read(self, stream: asyncio.StreamReader) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        splitter = LineSplitter()
        while chunk := await stream.read(65536):
            for line in splitter.feed(decoder.decode(chunk)):
                self._line(line)
            # tqdm's latest redraw sits unterminated until the next one: read it now.
            tail = splitter.tail
            if tail.endswith("]") and (progress := parse_progress(tail)) is not None:
                self._progress(progress)
        for line in splitter.feed(decoder.decode(b"", final=True)) + splitter.flush():
            self._line(line)

    def _line(self, line: str) -> None:
        progress = parse_progress(line)
        if progress is not None:
            self._progress(progress)
            return
        text = line.strip()
        if not text:
            return
        if (epoch := parse_epoch(text)) is not None:
            self.epoch = epoch[0]
        if (kind := device.parse_device_line(text)) is not None:
            self._device_line(kind)
        if OOM_MARKER in text:
            self._oom = True
        if NO_DATA_MARKER in text:
            self._no_data = text.split(" / ")[0]
        if (name := parse_signal(text)) is not None:
            self._signal = name
        if text == MODEL_SAVED:
            self._spawn(self._scan(), "scan-final")
        if _EXCEPTION_LINE.match(text) and "CalledProcessError" not in text:
            self._last_exception = self.redact(text)[:500]
        self.note(text)

    def _device_line(self, kind: str) -> None:
        """sd-scripts' ``accelerator device:`` line: the device torch really got, before any step."""
        if kind == "cuda" or self._stop_reason is not None:
            return
        if device.cpu_training_allowed(os.environ):
            self.note(f"[worker] the trainer runs on {kind}; allowed by {device.ALLOW_CPU_ENV} (tests only)")
            return
        self._kill(
            (
                "failed",
                f"refusing to train on the CPU: sd-scripts reported 'accelerator device: {kind}' "
                "(torch sees no usable CUDA GPU); stopped before the first training step",
            ),
            grace=0,
        )

    def _progress(self, progress: Any) -> None:
        self.step, self.total_steps = progress.step, progress.total
        self.rate, self.eta_s = progress.rate, progress.eta_s
        if progress.loss is not None:
            self.loss = progress.loss
            if loss_is_bad(progress.loss) and self._stop_reason is None:
                # sd-scripts would train on to the end and save NaN weights: stop now, save the GPU time.
                self._kill(
                    (
                        "failed",
                        f"loss became NaN at step {progress.step} (avr_loss={progress.loss}); "
                        "training stopped",
                    ),
                    grace=0,
                )

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.scan_seconds)
            await self._scan()

    async def _scan(self, *, finished: bool = False) -> None:
        async with self._scan_lock:
            await asyncio.to_thread(self.artifacts.scan, self.step, finished=finished)

    # ---- stopping ----

    def _kill(self, reason: tuple[WorkerState, str | None], grace: float) -> None:
        """Stops the trainer's whole process group (accelerate and its child); SIGKILL after ``grace``."""
        self._stop_reason = reason
        process = self._process
        if process is None or process.returncode is not None:
            return
        self._signal_group(process.pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
        if grace > 0:
            self._spawn(self._kill_later(process, grace), "kill")

    async def _kill_later(self, process: asyncio.subprocess.Process, grace: float) -> None:
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            self._signal_group(process.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    async def stop_everything(self, state: WorkerState, error: str | None) -> None:
        """Stops whatever runs (fetch, wait or training) and settles in ``state``."""
        if self.state in TERMINAL_STATES:
            return
        if self._process is not None and self._process.returncode is None:
            self._kill((state, error), grace=self.settings.cancel_grace_seconds)
            main = self._main
            if main is not None:
                await asyncio.wait({main}, timeout=self.settings.cancel_grace_seconds + 5)
        else:
            if self._main is not None and not self._main.done():
                self._main.cancel()
                await asyncio.gather(self._main, return_exceptions=True)
        self._set_state(state, error)

    async def cancel(self) -> bool:
        """POST /cancel: False when the job is already over."""
        if self.state in TERMINAL_STATES:
            return False
        await self.stop_everything("cancelled", None)
        return True

    async def acknowledge(self) -> None:
        """POST /ack: the bot has what it needs; stop anything left, then exit and terminate the pod."""
        await self.stop_everything("cancelled", "acknowledged before the run ended")
        self._set_state("acknowledged")
        self._spawn(self.shutdown(delay=0.2), "shutdown")

    async def _deadline(self) -> None:
        await asyncio.sleep(max(0.0, self.spec.deadline_unix - time.time()))
        self.note("[worker] hard deadline reached: stopping and terminating the pod")
        await self.stop_everything("failed", "hard deadline reached; training stopped")
        await self.shutdown()

    async def _budget(self) -> None:
        await asyncio.sleep(max(0.0, self.spec.budget_stop_unix - time.time()))
        self.note("[worker] the job's budget is spent: stopping and terminating the pod")
        await self.stop_everything("failed", "job budget reached; training stopped by the pod itself")
        await self.shutdown()

    async def _unattended(self) -> None:
        """After training ended, terminate the pod once the bot has been silent for the set time."""
        limit = self.spec.unattended_stop_s
        while True:
            await asyncio.sleep(min(limit / 4, 30.0))
            if self.ended_at is None or self.state == "acknowledged":
                continue
            silent = time.monotonic() - max(self.last_contact, self.ended_at)
            if silent >= limit:
                self.note(
                    f"[worker] training ended and the bot has not called for {silent:.0f} s: "
                    "terminating the pod"
                )
                await self.shutdown()
                return

    async def shutdown(self, delay: float = 0.0) -> None:
        """Terminates the pod (RunPod SDK) and lets the process exit, whether or not that worked."""
        if self._shutting_down:
            return
        self._shutting_down = True
        await asyncio.sleep(delay)  # let the /ack response reach the bot first
        await terminate.terminate_self(self.settings.pod_id, self.settings.runpod_api_key)
        self.stopped.set()

    async def close(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._signal_group(self._process.pid, signal.SIGKILL)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class JobFailed(Exception):
    """A failure with a message for users."""


def _in_work_dir(value: str) -> str | None:
    """``value`` as a normalised work-dir-relative POSIX path, or None when it is absolute/escapes."""
    value = value.replace("\\", "/")
    if value.startswith("/"):
        return None
    parts: list[str] = []
    for part in value.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def layout_problems(spec: JobSpec, config: dict[str, Any]) -> list[str]:
    """Where config.toml disagrees with the work-dir layout (``worker.protocol``), as user messages.

    A base-model path under ``models/`` must be the file this worker fetches for that key
    (``models/<local_name>`` of the base model, then of each ``extra`` in ``MODEL_PATH_KEYS`` order),
    and sampling must read the prompts file the worker writes from the spec. Paths elsewhere
    (absolute, or not under ``models/``) are the spec author's business and are left alone.
    """
    problems: list[str] = []
    sources = spec.base_model.files()
    names = [source.local_name for source in sources]
    if len(set(names)) != len(names):
        problems.append(f"base-model files share a name and would overwrite each other: {', '.join(names)}")
    fetched = [source.work_path for source in sources]
    keys = MODEL_PATH_KEYS.get(spec.model_family, ("pretrained_model_name_or_path",))
    for index, key in enumerate(keys):
        value = config.get(key)
        if not isinstance(value, str) or not value:
            continue
        relative = _in_work_dir(value)
        if relative is None or relative.split("/", 1)[0] != WORK_MODELS_DIR:
            continue
        if index < len(fetched) and relative != fetched[index]:
            problems.append(
                f"config.toml's {key} = {value!r}, but the worker puts that file at {fetched[index]!r}"
            )
        elif index >= len(fetched) and relative not in fetched:
            problems.append(
                f"config.toml's {key} = {value!r} is not a file the worker fetches "
                f"(it fetches {', '.join(fetched)})"
            )
    sampling = any(
        isinstance(config.get(key), int) and config[key] > 0
        for key in ("sample_every_n_steps", "sample_every_n_epochs")
    )
    prompts = config.get("sample_prompts")
    if (sampling or config.get("sample_at_first") is True) and (
        not isinstance(prompts, str) or _in_work_dir(prompts) != WORK_PROMPTS_FILE
    ):
        problems.append(
            f"config.toml's sample_prompts = {prompts!r}: the worker writes the spec's prompts to "
            f"{WORK_PROMPTS_FILE!r}, so sampling would find no prompts"
        )
    return problems
