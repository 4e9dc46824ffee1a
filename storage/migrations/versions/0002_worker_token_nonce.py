"""worker tokens are derived, not stored: jobs.worker_token becomes jobs.worker_token_nonce

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 09:30:00

Plain-text tokens are dropped. A job still waiting for confirmation gets a nonce (it has no pod yet, so
a new token is as good as the old). A job already renting across this upgrade has none: the bot can
no longer reach its worker, so the job fails and its pod is terminated (bot.training.orchestrator), and
the pod stops itself when the bot is gone. Finish or cancel running jobs before upgrading.
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_token_nonce", sa.String(length=64), nullable=True))
        batch_op.drop_column("worker_token")
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.Integer()),
        sa.column("state", sa.String()),
        sa.column("worker_token_nonce", sa.String()),
    )
    bind = op.get_bind()
    pending = bind.execute(sa.select(jobs.c.id).where(jobs.c.state == "pending")).scalars().all()
    for job_id in pending:
        bind.execute(
            sa.update(jobs).where(jobs.c.id == job_id).values(worker_token_nonce=secrets.token_hex(16))
        )


def downgrade() -> None:
    # The old tokens are gone for good; jobs created after the upgrade get none back.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_token", sa.String(length=128), nullable=True))
        batch_op.drop_column("worker_token_nonce")
