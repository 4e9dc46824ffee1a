"""Frozen views of rows: what leaves the persistence layer for the domain's callers and the cogs.

A view is a plain, immutable copy of a row taken while its session was open, so whoever holds it can
neither lazy-load (a detached row raises) nor write back by accident, and a rule about a row (is the job
live, who asked for it) is read off one object. Cogs get these through ``bot/views.py``; they never
import ``storage`` (ruff TID251 keeps it so).

Each view has ``of(row)``. JSON columns are copied, so changing a view's ``params`` or ``payload`` can't
reach the row (they are still dicts: callers read them like the row's).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from storage.models import (
    LIVE_STATES,
    TERMINAL_STATES,
    Checkpoint,
    Job,
    JobEvent,
    JobState,
    OwedMessage,
    Sample,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_View = TypeVar("_View", bound="DataclassInstance")

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "CheckpointView",
    "JobEventView",
    "JobState",
    "JobView",
    "OwedMessageView",
    "SampleView",
]


def _copied(view: type[_View], row: object, **converted: Any) -> _View:
    """A ``view`` whose fields are ``row``'s attributes of the same name, except the ``converted`` ones
    (a copied JSON column, an enum, a default for NULL): each ``of`` names only what is not a plain copy."""
    names = {f.name for f in fields(view)}
    unknown = converted.keys() - names
    if unknown:
        raise TypeError(f"{view.__name__} has no field {', '.join(sorted(unknown))}")
    return view(**{name: converted[name] if name in converted else getattr(row, name) for name in names})


@dataclass(frozen=True, slots=True)
class JobView:
    """One training job as it was when read (design §4 ``jobs``)."""

    id: int
    guild_id: int
    dataset_id: int
    snapshot_id: int | None
    preset: str
    params: dict[str, Any]
    state: JobState
    gpu_type: str | None
    pod_name: str | None
    pod_id: str | None
    price_per_hour: Decimal | None
    budget_usd: Decimal
    cost_usd: Decimal
    estimate: dict[str, Any]
    step: int
    total_steps: int
    loss: float | None
    rate: float | None
    eta_s: float | None
    early_stop_patience: int | None
    channel_id: int | None
    progress_message_id: int | None
    summary_message_id: int | None
    requested_by: int
    error: str | None
    last_log: tuple[str, ...]
    created_at: datetime
    pod_created_at: datetime | None
    pod_terminated_at: datetime | None
    deadline_at: datetime | None
    finished_at: datetime | None

    @property
    def live(self) -> bool:
        """Not ended: it may still rent, spend or be cancelled."""
        return self.state in LIVE_STATES

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def of(cls, row: Job) -> JobView:
        return _copied(
            cls,
            row,
            params=copy.deepcopy(row.params or {}),
            state=JobState(row.state),
            cost_usd=row.cost_usd if row.cost_usd is not None else Decimal(0),
            estimate=copy.deepcopy(row.estimate or {}),
            step=row.step or 0,
            total_steps=row.total_steps or 0,
            last_log=tuple(str(line) for line in row.last_log or ()),
        )


@dataclass(frozen=True, slots=True)
class JobEventView:
    """One committed job event: a transition (``kind == "state"``) or something noteworthy."""

    id: int
    job_id: int
    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, row: JobEvent) -> JobEventView:
        return _copied(cls, row, payload=copy.deepcopy(row.payload or {}))


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """A checkpoint of a job (its file is in the blob store once ``collected``)."""

    id: int
    job_id: int
    step: int
    file_name: str
    sha256: str
    size_bytes: int
    collected: bool
    engine: str | None
    score_mean: float | None
    score_max: float | None
    face_share: float | None
    row_message_id: int | None
    approved: bool

    @classmethod
    def of(cls, row: Checkpoint) -> CheckpointView:
        return _copied(cls, row, collected=bool(row.collected), approved=bool(row.approved))


@dataclass(frozen=True, slots=True)
class SampleView:
    """One sample image of a checkpoint step, with its stored face score (if scored)."""

    id: int
    job_id: int
    step: int
    prompt_index: int
    prompt: str
    seed: int | None
    file_name: str
    blob_sha256: str
    engine: str | None
    face_found: bool | None
    face_similarity: float | None
    ceiling_pct: float | None

    @classmethod
    def of(cls, row: Sample) -> SampleView:
        return _copied(cls, row, prompt=row.prompt or "")


@dataclass(frozen=True, slots=True)
class OwedMessageView:
    """One message a job owes the team (design §7): where it went, once posted (``done_at``)."""

    id: int
    job_id: int
    key: str
    channel_id: int | None
    nonce: str
    content: str
    message_id: int | None
    attempts: int
    attempted_at: datetime | None
    done_at: datetime | None

    @classmethod
    def of(cls, row: OwedMessage) -> OwedMessageView:
        return _copied(cls, row, content=row.content or "", attempts=row.attempts or 0)
