"""worker tokens are derived, not stored: jobs.worker_token becomes jobs.worker_token_nonce

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 09:30:00

Plain-text tokens are dropped. A job still running across this upgrade has no nonce: the bot can no
longer reach its worker, so it fails the job and terminates its pod (bot.training.orchestrator), and
the pod stops itself when the bot is gone. Finish or cancel running jobs before upgrading.
"""

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


def downgrade() -> None:
    # The old tokens are gone for good; jobs created after the upgrade get none back.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_token", sa.String(length=128), nullable=True))
        batch_op.drop_column("worker_token_nonce")
