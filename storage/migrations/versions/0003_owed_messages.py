"""owed messages (the outbox of messages a job owes its channel)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 09:40:00

Jobs and checkpoints that were announced before this table existed are recorded as settled, so a bot
upgraded over an old database does not post their summaries and rows a second time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TERMINAL = "('succeeded', 'failed', 'cancelled', 'budget_stopped')"


def upgrade() -> None:
    op.create_table(
        "owed_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=60), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("nonce", sa.String(length=25), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempted_at", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("done_at", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_owed_messages_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owed_messages")),
        sa.UniqueConstraint("job_id", "key", name=op.f("uq_owed_messages_job_id_key")),
    )
    with op.batch_alter_table("owed_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_owed_messages_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_owed_messages_message_id"), ["message_id"], unique=False)

    # What older bots already announced counts as delivered (see the module docstring).
    op.execute(
        "INSERT INTO owed_messages (job_id, key, channel_id, nonce, content, message_id, attempts, "
        "created_at, done_at) "
        "SELECT id, 'summary', channel_id, '', '', summary_message_id, 0, created_at, "
        "COALESCE(finished_at, updated_at) "
        f"FROM jobs WHERE state IN {_TERMINAL}"
    )
    op.execute(
        "INSERT INTO owed_messages (job_id, key, channel_id, nonce, content, message_id, attempts, "
        "created_at, done_at) "
        "SELECT id, 'progress', channel_id, '', '', progress_message_id, 0, created_at, created_at "
        "FROM jobs WHERE progress_message_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO owed_messages (job_id, key, channel_id, nonce, content, message_id, attempts, "
        "created_at, done_at) "
        "SELECT c.job_id, 'row:' || CAST(c.step AS VARCHAR(20)), j.channel_id, '', '', c.row_message_id, "
        "0, c.created_at, c.created_at "
        "FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE c.row_message_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO owed_messages (job_id, key, channel_id, nonce, content, message_id, attempts, "
        "created_at, done_at) "
        "SELECT c.job_id, 'delivery:' || CAST(c.step AS VARCHAR(20)), j.channel_id, '', '', NULL, "
        "0, c.created_at, COALESCE(c.approved_at, c.created_at) "
        "FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE c.approved"
    )


def downgrade() -> None:
    with op.batch_alter_table("owed_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_owed_messages_message_id"))
        batch_op.drop_index(batch_op.f("ix_owed_messages_job_id"))
    op.drop_table("owed_messages")
