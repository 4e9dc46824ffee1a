"""The real loraops bot connected to the Discord simulator (and, on request, the other simulators).

Used by the end-to-end tests and by ``loraops sandbox``. It builds the application through the same
``build_application`` the production start-up uses; only base URLs differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.app import Application, build_application
from bot.config import Settings
from sim.cloudinary import CloudinarySim
from sim.discord import BOT_KWARGS, DiscordSimulator, SimMessage, SimUser
from sim.discord.state import Perm

if TYPE_CHECKING:
    from sim.huggingface import HuggingFaceSim
    from sim.runpod import RunPodSim

HARNESS_RUNPOD_KEY = "rpa_HARNESSRUNPODKEY0123456789"
HARNESS_HF_TOKEN = "hf_harnessToken0123456789"
# Quick stand-in steps and output scans; a test may override any of them with ``standin_env``.
STANDIN_DEFAULTS = {"SDSTANDIN_STEP_SECONDS": "0.05", "LORAOPS_SCAN_SECONDS": "0.1"}


@dataclass
class BotHarness:
    """Start with ``async with BotHarness(tmp_path) as h:``; ``h.sim`` drives Discord.

    ``with_cloudinary=True`` (or passing an unstarted ``cloudinary``) also starts a Cloudinary
    simulator, points ``cloudinary_url`` at it (unless ``settings_overrides`` names one) and closes it
    with the harness; seed it through ``h.cloudinary``.

    ``with_training=True`` also starts the RunPod simulator (``h.runpod``: pods run the real worker with
    the sd-scripts stand-in, tuned by ``standin_env``) and a Hugging Face file server (``h.hub``) the
    worker fetches base models from with ``HF_TOKEN``; the bot's settings point at both.
    ``await h.restart_bot()`` kills only the bot (jobs go on in RunPod) and starts a new one over the
    same data directory and simulators.
    """

    data_dir: Path
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    sim: DiscordSimulator = field(default_factory=DiscordSimulator)
    with_cloudinary: bool = False
    cloudinary: CloudinarySim | None = None
    with_training: bool = False
    standin_env: dict[str, str] = field(default_factory=dict)
    runpod: RunPodSim | None = None
    hub: HuggingFaceSim | None = None
    settings: Settings | None = None
    app: Application | None = None
    # The four people of every journey; they exist from construction, before the simulator starts.
    trainer: SimUser = field(init=False)
    reviewer: SimUser = field(init=False)
    admin: SimUser = field(init=False)
    visitor: SimUser = field(init=False)
    _task: asyncio.Task[None] | None = None
    _restore: Callable[[], None] | None = None

    @property
    def bot_app(self) -> Application:
        assert self.app is not None, "start the harness first"
        return self.app

    def __post_init__(self) -> None:
        self.trainer = self.sim.add_member("alice", roles=["trainer"])
        self.reviewer = self.sim.add_member("bob", roles=["reviewer"])
        # A studio's admin role carries Manage Server, which the admin-only commands ask for by default.
        admin_role = self.sim.add_role("admin", permissions=Perm.MANAGE_GUILD)
        self.admin = self.sim.add_member("erin", roles=[admin_role])
        self.visitor = self.sim.add_member("carol")
        # As the README's set-up asks: reviewers are pinged by the summary, so their role is mentionable.
        self.sim.role("reviewer").mentionable = True

    async def __aenter__(self) -> BotHarness:
        await self.sim.start()
        self._restore = self.sim.patch_discord()
        overrides: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{self.data_dir / 'loraops.db'}",
            "data_dir": self.data_dir,
            "discord_token": self.sim.bot_token,
            "discord_guild_ids": [self.sim.guild.id],
            "discord_api_base": self.sim.api_url,
            "discord_gateway_url": self.sim.gateway_url,
            "allow_private_urls": True,
            "progress_edit_interval_s": 1.0,
            "poll_interval_s": 0.2,
        }
        if self.with_cloudinary or self.cloudinary is not None:
            if self.cloudinary is None:
                self.cloudinary = CloudinarySim()
            await self.cloudinary.start()
            overrides["cloudinary_url"] = self.cloudinary.cloudinary_url
        if self.with_training:
            overrides.update(await self._start_training_sims())
        overrides.update(self.settings_overrides)
        self.settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
        await self._start_bot()
        # setup_hook synced the commands before the gateway connected.
        await self.sim.wait_until(lambda: self.sim.commands(self.sim.guild))
        return self

    async def _start_bot(self) -> None:
        assert self.settings is not None
        # The bot reads the RunPod simulator's clock: minutes of image pull pass fast for both, and
        # the ledger stays comparable with the meter.
        clock = self.runpod.clock.now if self.runpod is not None else None
        self.app = await build_application(self.settings, clock=clock, **BOT_KWARGS)
        token = self.sim.bot_token
        self._task = asyncio.create_task(self.app.bot.start(token), name="harness-bot")
        ready = asyncio.create_task(self.app.bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if self._task in done:
                self._task.result()  # raises the bot's start-up error
            raise TimeoutError("the bot did not become ready against the simulator")

    async def _start_training_sims(self) -> dict[str, Any]:
        from pydantic import SecretStr

        from sim.huggingface import HuggingFaceSim
        from sim.runpod import RunPodSim, worker_launcher

        self.hub = HuggingFaceSim(token=HARNESS_HF_TOKEN)
        await self.hub.start()
        env = {**STANDIN_DEFAULTS, "LORAOPS_HF_BASE_URL": self.hub.base_url, **self.standin_env}
        launcher = worker_launcher(
            trainer_cmd=f"{sys.executable} -m sim.sdscripts accelerate launch",
            extra_env=env,
            stop_grace_s=2.0,
        )
        self.runpod = RunPodSim(
            api_key=HARNESS_RUNPOD_KEY, data_dir=self.data_dir / "runpod", launcher=launcher
        )
        await self.runpod.start()
        return {
            "runpod_api_key": SecretStr(HARNESS_RUNPOD_KEY),
            "runpod_api_base_url": self.runpod.base_url,
            "runpod_proxy_url_template": self.runpod.proxy_url_template,
            "hf_token": SecretStr(HARNESS_HF_TOKEN),
        }

    async def assert_ledger_matches_meter(self, within: float = 15.0) -> None:
        """Once every pod is gone (waiting up to ``within`` s): the bot's ledger equals the RunPod
        simulator's meter, compute and storage, to the cent (``sim.meter``)."""
        from sim.meter import assert_ledger_matches_meter

        assert self.runpod is not None, "start the harness with with_training=True"
        runpod = self.runpod
        await runpod.wait_for(lambda: not runpod.live_pods(), within=within)
        await assert_ledger_matches_meter(self.bot_app.services.sessions, runpod)

    async def restart_bot(self) -> None:
        """The bot process dies and starts again: same data directory, same simulators.

        Its driving tasks are cancelled without touching the jobs (pods go on training in RunPod), then
        the whole application is closed and a new one is built, as a restarted process would.
        """
        app = self.bot_app
        if app.services.training is not None:
            await app.services.training.close()  # stop polling first: nothing is cancelled in RunPod
        await app.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        await self._start_bot()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        await self.sim.close()
        if self.cloudinary is not None:
            await self.cloudinary.close()
        if self.runpod is not None:
            await self.runpod.close()
        if self.hub is not None:
            await self.hub.close()
        if self._restore is not None:
            self._restore()
            self._restore = None


# -- ``/train start`` and Confirm, as a person does them (for the journeys and tests) ----------------------

_QUOTED = re.compile(r"Job #(\d+) is waiting for confirmation")


def quoted_job_id(quote: SimMessage) -> int | None:
    """The job a quote (``/train start``, a retry) asks to confirm; None when the answer is no quote."""
    match = _QUOTED.search(quote.content)
    return int(match[1]) if match else None


def confirm_button(job_id: int) -> str:
    """The custom id of a quote's Confirm button."""
    return f"loraops:train:confirm:{job_id}"


async def quote_job(
    sim: DiscordSimulator, options: dict[str, Any], user: SimUser, *, within: float = 30
) -> tuple[int, SimMessage]:
    """``/train start`` with ``options`` by ``user``: the pending job's id and its (public) quote."""
    handle = await sim.invoke_slash("train start", options, user=user)
    quote = await handle.response(timeout=within)
    assert quote is not None and not handle.ephemeral, quote and quote.content
    job_id = quoted_job_id(quote)
    assert job_id is not None, quote.content
    return job_id, quote


async def confirm_job(sim: DiscordSimulator, job_id: int, quote: SimMessage, user: SimUser) -> None:
    """``user`` clicks Confirm on the quote (the click is acknowledged; what follows is the bot's)."""
    click = await sim.invoke_component(quote.id, confirm_button(job_id), user)
    await click.ack()


async def start_job(
    sim: DiscordSimulator, options: dict[str, Any], user: SimUser, *, within: float = 30
) -> tuple[int, SimMessage]:
    """:func:`quote_job` then :func:`confirm_job` by the same person."""
    job_id, quote = await quote_job(sim, options, user, within=within)
    await confirm_job(sim, job_id, quote, user)
    return job_id, quote
