"""One live progress message per training job, edited in place until the job ends.

:class:`ProgressBoard` is a :class:`~bot.training.context.JobListener` the train cog registers on
``services.training.listeners``. It posts the progress message when a job is confirmed (and records its
id on the job, so a restarted bot edits the same message), edits it with
:meth:`~bot.training.progress.ProgressView.render` as the orchestrator reports progress, and when the job
ends makes a final edit. The end-of-job summary that mentions the requester and the reviewers is the
review cog's message (``cogs/review.py``), so the channel gets one announcement, not two.

Edits are coalesced per job: the orchestrator already throttles progress to
``progress_edit_interval_s``; on top of that at most one edit per job is in flight, and whatever arrives
meanwhile collapses into the next edit (only the newest text is ever sent). Edits run in background
tasks so a slow Discord never holds up the job's poller.

The message is posted through the outbox (``cogs/_outbox.py``): a bot killed between posting it and
recording its id finds it again instead of posting a second one. The final edit is recorded as
``progress:final``, so a bot killed before making it makes it after the restart (``bot/training/owed.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.background import TaskGroup
from bot.outbox import PROGRESS, Outbox
from bot.training.context import JobListener
from bot.training.jobs import JobService
from bot.training.owed import PROGRESS_FINAL
from bot.training.progress import ProgressView
from bot.views import TERMINAL_STATES, JobEventView, JobState, JobView
from cogs._outbox import post_owed

log = logging.getLogger(__name__)


@dataclass
class _Board:
    """What this process knows about one job's progress message."""

    job_id: int
    channel_id: int | None = None
    message_id: int | None = None
    view: ProgressView | None = None
    notes: list[str] = field(default_factory=list)
    wanted: str | None = None  # the newest text to show
    shown: str | None = None  # the text the message has now (as far as we know)
    flusher: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def capacity_note(payload: Mapping[str, Any]) -> str:
    """The line a ``no_capacity`` event adds to the progress message."""
    gpu = payload.get("gpu_type") or "the chosen GPU"
    following = payload.get("next")
    if following:
        return f"No {gpu} available: trying {following}."
    return f"No {gpu} available."


class ProgressBoard(JobListener):
    """Keeps one progress message per job in the job's channel (see the module docstring)."""

    def __init__(self, client: discord.Client, service: JobService, outbox: Outbox) -> None:
        self._client = client
        self._service = service
        self._outbox = outbox
        self._boards: dict[int, _Board] = {}
        self._ended: set[int] = set()  # announced here: later reports of these jobs change nothing
        self._tasks = TaskGroup("progress")

    async def close(self) -> None:
        """Stop pending edits (the next process picks the message up again from the job row)."""
        await self._tasks.close()

    # -- JobListener --------------------------------------------------------------------------------

    async def on_state(self, job: JobView, old: JobState, new: JobState, payload: Mapping[str, Any]) -> None:
        if old == JobState.PENDING and new in TERMINAL_STATES:
            self._ended.add(job.id)  # never confirmed (cancelled or expired): no message, no announcement
            return
        board = await self._board(job.id, ProgressView.from_job(job))
        if old == JobState.PENDING and new == JobState.PROVISIONING and board.message_id is None:
            # Posted inline, before the job is driven, so every later update finds the message id.
            async with board.lock:
                await self._post(board, self._text(board))
            return
        self._want(board)
        if new in TERMINAL_STATES:
            # The final edit; the end-of-job summary (with mentions) is the review cog's message.
            await self._flush(board)
            if board.wanted is not None and board.wanted == board.shown:
                await self._final_made(board)
            self._ended.add(job.id)
            self._boards.pop(job.id, None)
        else:
            self._schedule(board)

    async def on_progress(self, view: ProgressView) -> None:
        if view.state == JobState.PENDING or view.job_id in self._ended:
            return
        board = await self._board(view.job_id, view)
        self._want(board)
        self._schedule(board)

    async def on_event(self, job: JobView, kind: str, payload: Mapping[str, Any]) -> None:
        if kind != "no_capacity" or job.id in self._ended:
            return
        board = await self._board(job.id, None, job=job)
        board.notes.append(capacity_note(payload))
        self._want(board)
        self._schedule(board)

    # -- boards ---------------------------------------------------------------------------------------

    async def _board(self, job_id: int, view: ProgressView | None, *, job: JobView | None = None) -> _Board:
        board = self._boards.get(job_id)
        if board is None:
            board = _Board(job_id)
            # After a restart: the notes so far come from the job's events.
            events: Sequence[JobEventView] = await self._service.events(job_id)
            board.notes = [capacity_note(e.payload or {}) for e in events if e.kind == "no_capacity"]
            self._boards[job_id] = board
        if view is None and board.view is None and job is not None:
            view = ProgressView.from_job(job)
        if view is not None:
            board.view = view
            if board.channel_id is None:
                board.channel_id = view.channel_id
            if board.message_id is None and view.progress_message_id is not None:
                board.message_id = view.progress_message_id
        return board

    @staticmethod
    def _text(board: _Board) -> str:
        assert board.view is not None
        lines = [board.view.render(), *board.notes[-3:]]
        return "\n".join(lines)[:2000]

    def _want(self, board: _Board) -> None:
        if board.view is not None:
            board.wanted = self._text(board)

    def _schedule(self, board: _Board) -> None:
        if board.flusher is None or board.flusher.done():
            board.flusher = self._tasks.spawn(self._flush(board), name=f"job-{board.job_id}")

    async def _flush(self, board: _Board) -> None:
        """Edit until the message shows the newest wanted text (one edit at a time per job)."""
        async with board.lock:
            while board.wanted is not None and board.wanted != board.shown:
                text = board.wanted
                if not await self._show(board, text):
                    return  # Discord refused; the next update tries again

    async def _show(self, board: _Board, text: str) -> bool:
        if board.message_id is None or board.channel_id is None:
            return await self._post(board, text)
        message = self._client.get_partial_messageable(board.channel_id).get_partial_message(board.message_id)
        try:
            await message.edit(content=text)
        except discord.NotFound:
            log.info("job %s: progress message %s is gone; posting a new one", board.job_id, board.message_id)
            await self._outbox.forget(board.job_id, PROGRESS, board.message_id)
            board.message_id = None
            return await self._post(board, text)
        except discord.HTTPException as exc:
            log.warning("job %s: progress edit failed: %s", board.job_id, exc)
            return False
        board.shown = text
        return True

    async def _post(self, board: _Board, text: str) -> bool:
        if board.channel_id is None:
            log.info("job %s has no channel: no progress message", board.job_id)
            board.shown = text
            return True
        try:
            posted = await post_owed(
                self._outbox, self._client, board.job_id, PROGRESS, channel_id=board.channel_id, content=text
            )
        except discord.HTTPException as exc:
            log.warning("job %s: could not post its progress message: %s", board.job_id, exc)
            return False
        assert posted.message_id is not None
        board.message_id = posted.message_id
        # A message found again (or posted by an earlier process) shows older text: edit it next.
        board.shown = text if posted.fresh else None
        await self._service.set_progress_message(
            board.job_id, channel_id=board.channel_id, message_id=posted.message_id
        )
        return True

    async def _final_made(self, board: _Board) -> None:
        """The job's progress message shows its end: nothing about it is owed any more."""
        if board.message_id is not None and board.channel_id is not None:
            await self._outbox.record(
                board.job_id, PROGRESS_FINAL, channel_id=board.channel_id, message_id=board.message_id
            )
        else:
            await self._outbox.settle(board.job_id, PROGRESS_FINAL)
