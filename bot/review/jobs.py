"""The review's read of one job by the id a person or a button gave: a missing job is one user error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import NotFoundError
from storage import jobs as job_store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from storage.models import Job


async def existing_job(session: AsyncSession, job_id: int) -> Job:
    """The job row, or :class:`NotFoundError` ("There is no job #N.") when there is none."""
    job = await job_store.job(session, job_id)
    if job is None:
        raise NotFoundError(f"There is no job #{job_id}.")
    return job
