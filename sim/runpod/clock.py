"""The simulator's clock: real time, scaled, plus whatever a test advances it by."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SimClock:
    """Seconds since the epoch as the simulated RunPod sees them.

    ``scale`` multiplies real elapsed time (``0`` freezes it, so only :meth:`advance` moves it;
    ``60`` makes a minute pass every second). Boot delays, uptime and billing all read this clock.
    """

    def __init__(self, *, scale: float = 1.0, start: datetime | None = None) -> None:
        if scale < 0:
            raise ValueError("scale must be >= 0")
        self.scale = scale
        self._origin = (start or datetime.now(UTC).replace(microsecond=0)).timestamp()
        self._origin_mono = time.monotonic()
        self._offset = 0.0

    def time(self) -> float:
        return self._origin + (time.monotonic() - self._origin_mono) * self.scale + self._offset

    def set_scale(self, scale: float) -> None:
        """Run at ``scale`` from now on (time so far is kept): the simulator speeds the clock up while
        pods pull their image, so minutes of pulling pass in a second or two."""
        if scale < 0:
            raise ValueError("scale must be >= 0")
        if scale == self.scale:
            return
        mono = time.monotonic()
        self._offset += (mono - self._origin_mono) * self.scale
        self._origin_mono = mono
        self.scale = scale

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward (never back)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds


def js_date(moment: datetime) -> str:
    """A timestamp the way RunPod's ``lastStatusChange`` prints it (JavaScript ``Date.toString()``)."""
    return moment.astimezone(UTC).strftime("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)")
