"""The relational model of design §4: every table, so later work adds behaviour rather than schema churn.

Conventions: Discord snowflakes are BigInteger; money is ``Money`` (Decimal); times are ``UTCDateTime``;
blobs are referenced by their sha256 in the content-addressed store (``storage/blobs.py``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from storage.types import Money, UTCDateTime, utcnow

# Named constraints so Alembic migrations are deterministic on both SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        Decimal: Money(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class JobState(enum.StrEnum):
    """design §5. Terminal states end a job; every change is a committed ``JobEvent``."""

    PENDING = "pending"
    PROVISIONING = "provisioning"
    UPLOADING = "uploading"
    TRAINING = "training"
    COLLECTING = "collecting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_STOPPED = "budget_stopped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.BUDGET_STOPPED}
)
LIVE_STATES = frozenset(set(JobState) - TERMINAL_STATES)


class GuildSettings(Base):
    """Per-guild choices that admins change from Discord (never secrets)."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    report_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    trainer_role: Mapped[str | None] = mapped_column(String(100))
    reviewer_role: Mapped[str | None] = mapped_column(String(100))
    admin_role: Mapped[str | None] = mapped_column(String(100))
    job_budget_usd: Mapped[Decimal | None]
    monthly_budget_usd: Mapped[Decimal | None]
    approvals_required: Mapped[int | None] = mapped_column(Integer)
    face_engine: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("guild_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(32))
    trigger_word: Mapped[str] = mapped_column(String(64))
    class_word: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[int] = mapped_column(BigInteger)
    caption_template: Mapped[str] = mapped_column(String(300), default="{trigger} {class}, {tags}")
    next_position: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    images: Mapped[list[Image]] = relationship(back_populates="dataset", cascade="all, delete-orphan")


class Image(Base):
    """One image of a dataset. ``position`` is the stable number shown on contact sheets.

    ``subset`` is ``full`` for gathered images and ``face_crops`` for crops derived from one
    (``derived_from_id``); the bytes live in the blob store under ``sha256``.
    """

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sha256", "subset"),
        UniqueConstraint("dataset_id", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    subset: Mapped[str] = mapped_column(String(20), default="full")
    derived_from_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    phash: Mapped[str | None] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(10))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    source_kind: Mapped[str] = mapped_column(String(20))  # cloudinary | attachment | url | zip | crop
    source_ref: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    added_by: Mapped[int] = mapped_column(BigInteger)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusion_reason: Mapped[str | None] = mapped_column(String(200))

    dataset: Mapped[Dataset] = relationship(back_populates="images")
    caption: Mapped[Caption | None] = relationship(
        back_populates="image", cascade="all, delete-orphan", uselist=False
    )


class FaceAnalysis(Base):
    """What one engine saw in one image. Scores of different engines are never compared."""

    __tablename__ = "face_analyses"
    __table_args__ = (UniqueConstraint("image_id", "engine"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    engine: Mapped[str] = mapped_column(String(40))
    face_count: Mapped[int] = mapped_column(Integer)
    bbox: Mapped[list[Any] | None] = mapped_column(JSON)  # [x0, y0, x1, y1] of the main face, pixels
    det_score: Mapped[float | None] = mapped_column(Float)
    face_ratio: Mapped[float | None] = mapped_column(Float)  # face box area / frame area
    sharpness: Mapped[float | None] = mapped_column(Float)
    brightness: Mapped[float | None] = mapped_column(Float)
    yaw: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, L2-normalised
    identity_similarity: Mapped[float | None] = mapped_column(Float)
    flags: Mapped[list[Any]] = mapped_column(default=list)
    analysed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Caption(Base):
    __tablename__ = "captions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str] = mapped_column(Text)
    edited_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    image: Mapped[Image] = relationship(back_populates="caption")


class DatasetSnapshot(Base):
    """A frozen dataset: a job trains a snapshot, never a moving dataset. Identified by content hash."""

    __tablename__ = "dataset_snapshots"
    __table_args__ = (UniqueConstraint("dataset_id", "content_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    preset: Mapped[str] = mapped_column(String(40))
    manifest: Mapped[dict[str, Any]] = mapped_column()  # images, captions, rendered config
    archive_sha256: Mapped[str | None] = mapped_column(String(64))  # zip in the blob store
    image_count: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One training run. Rows are committed before the side effect they announce (design §5)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_guild_state", "guild_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshots.id", ondelete="RESTRICT"))
    preset: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per-run overrides
    state: Mapped[str] = mapped_column(String(20), default=JobState.PENDING.value, index=True)
    gpu_type: Mapped[str | None] = mapped_column(String(80))
    pod_name: Mapped[str | None] = mapped_column(String(80), unique=True)
    pod_id: Mapped[str | None] = mapped_column(String(80), index=True)
    # The pod API's bearer token is derived from this random, non-secret nonce and a key from the
    # environment (bot.training.tokens); the token itself is never stored.
    worker_token_nonce: Mapped[str | None] = mapped_column(String(64))
    price_per_hour: Mapped[Decimal | None]
    budget_usd: Mapped[Decimal]
    cost_usd: Mapped[Decimal] = mapped_column(default=Decimal(0))
    estimate: Mapped[dict[str, Any]] = mapped_column(default=dict)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float)
    rate: Mapped[float | None] = mapped_column(Float)  # iterations per second
    eta_s: Mapped[float | None] = mapped_column(Float)
    early_stop_patience: Mapped[int | None] = mapped_column(Integer)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    summary_message_id: Mapped[int | None] = mapped_column(BigInteger)
    requested_by: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    last_log: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pod_created_at: Mapped[datetime | None] = mapped_column()
    pod_terminated_at: Mapped[datetime | None] = mapped_column()
    deadline_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobEvent.id"
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))  # "state" for transitions; else e.g. "pod_created"
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)

    job: Mapped[Job] = relationship(back_populates="events")


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    collected: Mapped[bool] = mapped_column(Boolean, default=False)  # bytes verified and in the blob store
    engine: Mapped[str | None] = mapped_column(String(40))
    score_mean: Mapped[float | None] = mapped_column(Float)
    score_max: Mapped[float | None] = mapped_column(Float)
    face_share: Mapped[float | None] = mapped_column(Float)
    row_message_id: Mapped[int | None] = mapped_column(BigInteger)  # the grid row reviewers react on
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_at: Mapped[datetime | None] = mapped_column()
    approved_by: Mapped[list[Any]] = mapped_column(default=list)
    delivered_to: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("job_id", "step", "prompt_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    prompt_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int | None] = mapped_column(BigInteger)
    file_name: Mapped[str] = mapped_column(String(200))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str | None] = mapped_column(String(40))
    face_found: Mapped[bool | None] = mapped_column(Boolean)
    face_similarity: Mapped[float | None] = mapped_column(Float)
    ceiling_pct: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vote(Base):
    """A reviewer's reaction on a grid or summary message. One row per (message, user, emoji)."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("message_id", "user_id", "emoji"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    emoji: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OwedMessage(Base):
    """A message the bot owes a channel, recorded before it is posted (the outbox).

    One row per (job, key): ``progress``, ``row:<step>``, ``chart``, ``early_stop``, ``summary``,
    ``delivery:<step>``, ``quote``. The row is committed with a fresh ``nonce`` *before* the post
    (Discord dedups a create carrying the same nonce for a few minutes), ``content`` is the text last
    sent (so a restarted bot can find a message that was posted but never recorded), and
    ``message_id`` is stored the moment Discord answers. ``done_at`` set with no message id means the
    message was settled without posting (no channel to post in).
    """

    __tablename__ = "owed_messages"
    __table_args__ = (UniqueConstraint("job_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(60))
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    nonce: Mapped[str] = mapped_column(String(25))
    content: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempted_at: Mapped[datetime | None] = mapped_column()
    done_at: Mapped[datetime | None] = mapped_column()


class SpendEntry(Base):
    """Money that left (or is leaving) the account. Each job's accruals sum to its cost so far."""

    __tablename__ = "spend_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    amount_usd: Mapped[Decimal]
    period_start: Mapped[datetime] = mapped_column()
    period_end: Mapped[datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(20), default="pod_time")
    note: Mapped[str] = mapped_column(String(200), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)
