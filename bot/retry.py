"""The one retry policy of every client: what is tried again, how often, and how long we wait between.

Every call to a remote service that may be worth a second try goes through :meth:`RetryPolicy.call`
(tenacity underneath). A client marks a failure as worth another try by raising :class:`RetryLater`
(or a subclass, e.g. the worker client's ``WorkerUnavailableError``), optionally with the wait the
server named; anything else fails at once. The settings of each client are declared below, side by side:

==========================  ========  =====================  ==============================================
policy                      tries     waits between (s)      what is tried again
==========================  ========  =====================  ==============================================
``CLOUDINARY``              5         2, 4, 8, 16 (≤ 60)     420/429 rate limits (a named reset shortens the
                                                             wait; one beyond 120 s fails at once), 5xx,
                                                             network errors, bad answers
``RUNPOD_READ_BACK``        4         0.5, 1, 2              a pod just created that RunPod does not list
                                                             yet, or a transient RunPod error reading it
``WORKER_DOWNLOAD_CHUNK``   3         0.2, 0.4               a Range chunk cut off or refused by the proxy
                                                             (``TRANSIENT_HTTP_STATUSES``, timeouts)
``WORKER_DATASET_PARTS``    4         none: the part halves  a dataset part the proxy cut (524) or dropped
==========================  ========  =====================  ==============================================

RunPod's SDK calls themselves are not retried here: a mutation that failed may have taken effect (see
``bot.clients.runpod``); the orchestrator's next turn looks before it acts again. The worker in the pod
shares only ``worker.protocol`` with the bot, so its base-model download (``worker/fetch.py``: 5 tries,
waits of 1, 2, 4, 8 s, resuming) uses tenacity directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tenacity import RetryCallState

log = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP statuses after which the same request may well succeed: timeouts, "too early", rate limits,
# server errors, and the 52x pages Cloudflare (in front of RunPod's proxy) answers for an origin it
# could not reach or that took too long.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


class RetryLater(Exception):
    """A failure worth another try. ``after_s``: the wait the server named (Retry-After, Cloudinary's
    "Try again on …"), when it named one; it shortens the back-off, never lengthens it."""

    def __init__(self, message: str, *, after_s: float | None = None) -> None:
        super().__init__(message)
        self.after_s = after_s


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many tries, and the back-off between them: ``base_delay_s`` after the first failure, then
    doubling (or growing by ``base_delay_s`` when ``linear``), never more than ``max_delay_s``."""

    attempts: int
    base_delay_s: float
    max_delay_s: float
    linear: bool = False
    # A server that says when its allowance resets further away than this is not waited for: the call
    # fails at once and says when to come back (used by clients that read such a time, e.g. Cloudinary).
    max_wait_for_reset_s: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failed try (1-based)."""
        growth = failures if self.linear else 2 ** (failures - 1)
        return min(self.max_delay_s, self.base_delay_s * growth)

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        what: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """``attempt()`` until it returns, raises something other than :class:`RetryLater`, or the tries
        are used up (then the last :class:`RetryLater` is raised). ``what`` names the call in the log."""
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome is not None else None
            backoff = self.delay(state.attempt_number)
            named = failure.after_s if isinstance(failure, RetryLater) else None
            return backoff if named is None else max(0.0, min(backoff, named))

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            waiting = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s failed (attempt %d): %s; waiting %.1fs", what, state.attempt_number, failure, waiting
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            retry=retry_if_exception_type(RetryLater),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)


CLOUDINARY = RetryPolicy(attempts=5, base_delay_s=2.0, max_delay_s=60.0, max_wait_for_reset_s=120.0)
RUNPOD_READ_BACK = RetryPolicy(attempts=4, base_delay_s=0.5, max_delay_s=2.0)
WORKER_DOWNLOAD_CHUNK = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=0.4, linear=True)
# Parts of a dataset upload are not waited between: a cut part is resent at half the size from where
# the worker's bytes end. Only the number of tries (over the whole upload) comes from here.
WORKER_DATASET_PARTS = RetryPolicy(attempts=4, base_delay_s=0.0, max_delay_s=0.0)
