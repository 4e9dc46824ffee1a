"""The real bot as an OS process against the simulators, for the restart and crash tests.

:class:`BotProcess` runs ``python -m bot run`` (or, with crash points armed, ``python -m sim.crashing run``,
the same ``loraops`` main with :mod:`bot.crashpoints` armed from ``LORAOPS_TEST_CRASH_AT``) in its own
process group. :class:`ProcessRig` starts the Discord, Hugging Face and RunPod simulators (pods run the
real worker with the sd-scripts stand-in) and builds the bot's environment from scratch.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sim.discord import DiscordSimulator, SimMessage, SimUser
from sim.harness import HARNESS_HF_TOKEN, HARNESS_RUNPOD_KEY
from sim.huggingface import HuggingFaceSim
from sim.runpod import RunPodSim, worker_launcher
from sim.testdata import testdata_faces as faces_dir

REPO = Path(__file__).resolve().parents[2]
STEP_OF = re.compile(r"(\d+)/(\d+) \(")


class BotProcess:
    """The bot in a subprocess; its stdout and stderr go to one log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, crash_at: str | None = None) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.crash_at = crash_at
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        env = dict(self.env)
        if self.crash_at is not None:
            module = "sim.crashing"
            env["LORAOPS_TEST_CRASH_AT"] = self.crash_at
        else:
            module = "bot"
        self._log.write(f"\n===== python -m {module} run (crash at {self.crash_at}) =====\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "run"],
            cwd=env["HOME"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own process group: its face workers die with it
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        """SIGKILL the bot process itself (nothing runs its clean-up), then its leftover children."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._kill_group()

    def reap(self) -> None:
        """After the process killed itself: wait for it and kill what it left (face workers)."""
        assert self.proc is not None
        self.proc.wait(timeout=10)
        self._kill_group()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._kill_group()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_group(self) -> None:
        # The face engine's pool workers are in the bot's process group (and nothing else is).
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def bot_env(home: Path, settings: dict[str, str]) -> dict[str, str]:
    """An environment from scratch: nothing of the host's RUNPOD_*/DISCORD_*/HF_* leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        **settings,
    }


def bot_messages(sim: DiscordSimulator, predicate: Callable[[SimMessage], bool]) -> list[SimMessage]:
    return [
        m
        for m in sim.messages_in(sim.channel)
        if m.author.id == sim.bot_user.id and not m.ephemeral and predicate(m)
    ]


def steps_shown(sim: DiscordSimulator, message_id: int) -> list[int]:
    contents = [v.content for v in sim.message(message_id).versions]
    return [int(m[1]) for m in (STEP_OF.search(c) for c in contents) if m is not None]


def query(db: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


def job_row(db: Path, job_id: int) -> sqlite3.Row:
    rows = query(db, "SELECT * FROM jobs WHERE id = ?", job_id)
    assert rows
    return rows[0]


async def poll_until(check: Callable[[], object], timeout: float = 30) -> None:
    """Poll a condition no Discord request signals (the database, RunPod)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def wait_for_new_bot_session(sim: DiscordSimulator, known: set[str], timeout: float) -> None:
    await sim.wait_until(
        lambda: any(s.connected for sid, s in sim.gateway.sessions.items() if sid not in known),
        timeout=timeout,
    )


@dataclass
class ProcessRig:
    """The simulators, the bot's environment and its processes (see the module docstring)."""

    tmp_path: Path
    standin_env: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    sim: DiscordSimulator = field(default_factory=DiscordSimulator)
    bots: list[BotProcess] = field(default_factory=list)
    runpod: RunPodSim | None = None
    hub: HuggingFaceSim | None = None
    env: dict[str, str] = field(default_factory=dict)
    trainer: SimUser | None = None
    reviewer: SimUser | None = None

    @property
    def db(self) -> Path:
        return self.tmp_path / "data" / "loraops.db"

    @property
    def log_path(self) -> Path:
        return self.tmp_path / "bot.log"

    async def start(self) -> None:
        home = self.tmp_path / "home"
        home.mkdir()
        (self.tmp_path / "data").mkdir()
        await self.sim.start()
        self.trainer = self.sim.add_member("alice", roles=["trainer"])
        self.reviewer = self.sim.add_member("rita", roles=["reviewer"])
        self.hub = HuggingFaceSim(token=HARNESS_HF_TOKEN)
        await self.hub.start()
        launcher = worker_launcher(
            trainer_cmd=f"{sys.executable} -m sim.sdscripts accelerate launch",
            extra_env={
                "SDSTANDIN_STEP_SECONDS": "0.3",
                "LORAOPS_SCAN_SECONDS": "0.1",
                "LORAOPS_HF_BASE_URL": self.hub.base_url,
                **self.standin_env,
            },
            stop_grace_s=2.0,
        )
        # The bot is another process on the wall clock: RunPod's clock must not run faster than it
        # (a short pull, no warp), or the meter would bill minutes the ledger never saw.
        self.runpod = RunPodSim(
            api_key=HARNESS_RUNPOD_KEY,
            data_dir=self.tmp_path / "runpod",
            launcher=launcher,
            boot_delay_s=2.0,
            pull_warp=1.0,
        )
        await self.runpod.start()
        self.env = bot_env(
            home,
            {
                "DISCORD_TOKEN": self.sim.bot_token,
                "DISCORD_GUILD_IDS": str(self.sim.guild.id),
                "DISCORD_API_BASE": self.sim.api_url,
                "DISCORD_GATEWAY_URL": self.sim.gateway_url,
                "DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
                "DATA_DIR": str(self.tmp_path / "data"),
                "RUNPOD_API_KEY": HARNESS_RUNPOD_KEY,
                "RUNPOD_API_BASE_URL": self.runpod.base_url,
                "RUNPOD_PROXY_URL_TEMPLATE": self.runpod.proxy_url_template,
                "HF_TOKEN": HARNESS_HF_TOKEN,
                "ALLOW_PRIVATE_URLS": "true",
                "PROGRESS_EDIT_INTERVAL_S": "1.0",
                "POLL_INTERVAL_S": "0.2",
                **self.settings,
            },
        )

    def bot(self, *, crash_at: str | None = None) -> BotProcess:
        """Start a bot process (the previous one must be dead)."""
        bot = BotProcess(self.env, self.log_path, crash_at=crash_at)
        self.bots.append(bot)
        bot.start()
        return bot

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)\n"

    async def close(self, failed: bool) -> None:
        for bot in self.bots:
            bot.stop()
        if failed:
            sys.stderr.write(f"----- {self.log_path} -----\n{self.log_text()}")
        if self.runpod is not None:
            await self.runpod.close()
        if self.hub is not None:
            await self.hub.close()
        await self.sim.close()


def obama_photos(count: int = 3) -> list[Path]:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:count]
    assert len(photos) == count
    return photos
