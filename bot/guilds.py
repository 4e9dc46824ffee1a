"""Per-guild choices that admins make from Discord: budgets, approvals, report channel, face engine.

Each value falls back to the settings' default when the guild has not chosen one. Secrets never live
here (style R4): only the environment holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.errors import InvalidInputError
from storage.db import unit_of_work
from storage.models import GuildSettings

MAX_BUDGET_USD = Decimal("10000")
FACE_ENGINES = ("auto", "insightface", "dlib")


@dataclass(frozen=True)
class GuildConfig:
    guild_id: int
    job_budget_usd: Decimal
    monthly_budget_usd: Decimal
    approvals_required: int
    report_channel_id: int | None
    face_engine: str


def parse_usd(text: str) -> Decimal:
    """'$2.50', '2.5' → Decimal('2.50'); refuses negatives, zero, NaN and absurd amounts."""
    cleaned = text.strip().removeprefix("$").strip()
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidInputError(f"`{text[:20]}` is not an amount in dollars, e.g. `2.50`.") from None
    if not amount.is_finite() or amount <= 0 or amount > MAX_BUDGET_USD:
        raise InvalidInputError(f"Budgets are between $0.01 and ${MAX_BUDGET_USD}.")
    return amount.quantize(Decimal("0.01"))


class GuildConfigService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings

    async def get(self, guild_id: int) -> GuildConfig:
        async with unit_of_work(self._sessions) as session:
            row = await session.get(GuildSettings, guild_id)
        return self._effective(guild_id, row)

    def _effective(self, guild_id: int, row: GuildSettings | None) -> GuildConfig:
        s = self._settings
        return GuildConfig(
            guild_id=guild_id,
            job_budget_usd=(
                row.job_budget_usd if row and row.job_budget_usd is not None else s.default_job_budget_usd
            ),
            monthly_budget_usd=(
                row.monthly_budget_usd if row and row.monthly_budget_usd is not None else s.monthly_budget_usd
            ),
            approvals_required=(
                row.approvals_required if row and row.approvals_required is not None else s.approvals_required
            ),
            report_channel_id=row.report_channel_id if row else None,
            face_engine=(row.face_engine if row and row.face_engine else s.face_engine),
        )

    async def update(
        self,
        guild_id: int,
        *,
        job_budget_usd: Decimal | None = None,
        monthly_budget_usd: Decimal | None = None,
        approvals_required: int | None = None,
        report_channel_id: int | None = None,
        face_engine: str | None = None,
    ) -> GuildConfig:
        """Change the given values (None leaves a value as it is) in one unit of work."""
        if approvals_required is not None and not 1 <= approvals_required <= 25:
            raise InvalidInputError("Approvals required must be between 1 and 25.")
        if face_engine is not None and face_engine not in FACE_ENGINES:
            raise InvalidInputError(f"Face engine must be one of {', '.join(FACE_ENGINES)}.")
        async with unit_of_work(self._sessions) as session:
            row = await session.get(GuildSettings, guild_id)
            if row is None:
                row = GuildSettings(guild_id=guild_id)
                session.add(row)
            if job_budget_usd is not None:
                row.job_budget_usd = job_budget_usd
            if monthly_budget_usd is not None:
                row.monthly_budget_usd = monthly_budget_usd
            if approvals_required is not None:
                row.approvals_required = approvals_required
            if report_channel_id is not None:
                row.report_channel_id = report_channel_id
            if face_engine is not None:
                row.face_engine = face_engine
            config = self._effective(guild_id, row)
            if config.job_budget_usd > config.monthly_budget_usd:
                # Raising leaves the unit of work, which rolls the change back.
                raise InvalidInputError("A job's budget can't exceed the monthly budget.")
            await session.flush()
            return config
