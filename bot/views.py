"""What the cogs read about jobs: the frozen views of ``storage/views.py`` and the job states.

Cogs import from here, never from ``storage`` (ruff TID251 bans it in ``cogs/**``): the persistence
layer stays behind the domain, and a cog can't hold a row.
"""

from __future__ import annotations

from storage.views import (
    LIVE_STATES,
    TERMINAL_STATES,
    CheckpointView,
    JobEventView,
    JobState,
    JobView,
    SampleView,
)

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "CheckpointView",
    "JobEventView",
    "JobState",
    "JobView",
    "SampleView",
]
