"""Running a pod's container as a local process: the real worker, or any stand-in a test plugs in.

A pod's "container" is one process group started with the pod's environment on a free 127.0.0.1 port.
Like a RunPod container, it is restarted when its main process exits while the pod should be running
(runpod/runpodctl#149), and it is stopped with SIGTERM, then SIGKILL after a grace period, when the pod
is stopped or terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Variables a fresh container would not have: never leak the host's RunPod or loraops settings into a pod.
_HOST_PREFIXES_DROPPED = ("RUNPOD_", "LORAOPS_")


def repo_root() -> Path:
    """The directory holding the ``bot``, ``worker`` and ``sim`` packages."""
    return Path(__file__).resolve().parents[2]


def worker_command() -> list[str]:
    """The real pod-side program: ``python -m bot worker`` (the ``loraops worker`` console script)."""
    return [sys.executable, "-m", "bot", "worker"]


@dataclass
class PodLauncher:
    """How the simulator starts a pod's container.

    Items of ``command`` and values of ``extra_env`` may contain ``{port}`` (the local port standing in
    for the pod's first ``/http`` port), ``{host}`` (127.0.0.1), ``{pod_id}`` and ``{workdir}`` (the
    pod's own directory, its cwd, standing in for ``/workspace``). ``extra_env`` is applied last, over the
    pod's own and RunPod's variables. The container also gets ``PORT`` and ``HOST``.
    """

    command: Sequence[str] = field(default_factory=worker_command)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float = 5.0
    restart_on_exit: bool = True
    restart_delay_s: float = 1.0


def worker_launcher(
    *, trainer_cmd: str | None = None, extra_env: Mapping[str, str] | None = None, stop_grace_s: float = 5.0
) -> PodLauncher:
    """A launcher for the real worker (``worker/settings.py`` names its variables).

    In a real pod the worker listens on 0.0.0.0:8000 and works in /loraops/job; here it gets a free
    127.0.0.1 port and directories inside the pod's own. ``trainer_cmd`` replaces
    ``accelerate launch ...``, e.g. ``f"{sys.executable} -m sim.sdscripts accelerate launch"``.
    """
    env = {
        "LORAOPS_WORKER_HOST": "{host}",
        "LORAOPS_WORKER_PORT": "{port}",
        "LORAOPS_WORK_DIR": "{workdir}/job",
        "LORAOPS_MODEL_CACHE_DIR": "{workdir}/loraops-models",
    }
    if trainer_cmd is not None:
        env["LORAOPS_TRAINER_CMD"] = trainer_cmd
    env.update(extra_env or {})
    return PodLauncher(command=worker_command(), extra_env=env, stop_grace_s=stop_grace_s)


def free_port() -> int:
    """An ephemeral port that was free a moment ago (the child binds it right away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment() -> dict[str, str]:
    """The host environment minus anything RunPod- or loraops-specific, plus the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_PREFIXES_DROPPED)}
    root = str(repo_root())
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ContainerProcess:
    """One start of a pod's container: a process group writing to the pod's log file."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls, command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path, port: int
    ) -> ContainerProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=dict(env),
                cwd=str(cwd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a stop reaches the trainer too
            )
        return cls(proc, port)

    async def wait(self) -> int:
        return await self.proc.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill_leftovers(self) -> None:
        """After the main process exited: kill what it left in its group (a container dies whole).

        Call it right after the exit, while the group id cannot have been handed to anyone else.
        """
        self._signal_group(signal.SIGKILL)

    async def stop(self, grace_s: float) -> int:
        """SIGTERM the group, SIGKILL what is left after ``grace_s``; returns the main exit code."""
        if self.proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                pass
            # Children may outlive the main process (a trainer it spawned): the group goes either way.
            self._signal_group(signal.SIGKILL)
        return await self.proc.wait()
