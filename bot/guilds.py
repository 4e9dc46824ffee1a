"""Per-guild choices that admins make from Discord: budgets, approvals, report channel, face engine.

Each value falls back to the settings' default when the guild has not chosen one. Secrets never live
here (style R4): only the environment holds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING

from bot.errors import InvalidInputError
from bot.text import quote_inline

if TYPE_CHECKING:  # bot.config imports this module for check_budget: keep SQLAlchemy off CLI start-up
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from bot.config import Settings
    from storage.models import GuildSettings

MIN_BUDGET_USD = Decimal("0.01")
MAX_BUDGET_USD = Decimal("10000.00")
CENT = Decimal("0.01")
_AMOUNT = re.compile(
    r"(?P<sign>-)?\s*\$?\s*(?P<sign2>-)?\s*(?P<number>[0-9]{1,15}(?:\.[0-9]*)?|\.[0-9]+)\s*(?:usd)?",
    re.IGNORECASE,
)
FACE_ENGINES = ("auto", "insightface", "dlib")


@dataclass(frozen=True)
class GuildConfig:
    guild_id: int
    job_budget_usd: Decimal
    monthly_budget_usd: Decimal
    approvals_required: int
    report_channel_id: int | None
    face_engine: str


def budget_range_text() -> str:
    return f"between ${MIN_BUDGET_USD} and ${MAX_BUDGET_USD:,}"


def check_budget(amount: Decimal, what: str = "A budget") -> Decimal:
    """``amount`` rounded to the cent, refused unless finite and within the allowed range.

    The one home of the money rule: every budget is checked *after* rounding (0.004 would otherwise
    pass as "more than zero" and be stored as $0.00, refusing every start), on create and on every
    update alike.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidInputError(f"{what} must be an amount {budget_range_text()}.")
    try:
        rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the context holds: absurd by any measure
        raise InvalidInputError(f"{what} must be an amount {budget_range_text()}.") from None
    if rounded < 0:
        raise InvalidInputError(f"{what} can't be negative: it must be {budget_range_text()}.")
    if rounded < MIN_BUDGET_USD:
        raise InvalidInputError(
            f"{what} of ${rounded} (after rounding to the cent) is too small: "
            f"it must be {budget_range_text()}."
        )
    if rounded > MAX_BUDGET_USD:
        raise InvalidInputError(
            f"{what} of ${rounded:,} is more than allowed: it must be {budget_range_text()}."
        )
    return rounded


def parse_usd(text: str, what: str = "A budget") -> Decimal:
    """'$2.50', '2.5', '2.5 USD' → Decimal('2.50'), checked by :func:`check_budget`.

    Only plain decimal numbers are read: no exponent, NaN, infinity, sign or non-ASCII digits.
    """
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        raise InvalidInputError(
            f"{quote_inline(text, 20)} is not an amount in dollars such as `2.50`; "
            f"{what.lower()} must be {budget_range_text()}."
        )
    amount = Decimal(match["number"])
    return check_budget(-amount if match["sign"] or match["sign2"] else amount, what)


def parse_budgets(job: str | None, month: str | None) -> tuple[Decimal | None, Decimal | None]:
    """``/budget set``'s two amounts, each parsed by :func:`parse_usd`; one refusal names every problem."""
    parsed: list[Decimal | None] = []
    problems: list[str] = []
    for text, what in ((job, "The budget per job"), (month, "The monthly budget")):
        try:
            parsed.append(parse_usd(text, what) if text is not None else None)
        except InvalidInputError as exc:
            parsed.append(None)
            problems.append(str(exc))
    if problems:
        raise InvalidInputError("\n".join(problems))
    return parsed[0], parsed[1]


class GuildConfigService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings

    async def get(self, guild_id: int) -> GuildConfig:
        from storage import guilds as store  # not at import time: bot.config imports this module
        from storage.db import unit_of_work

        async with unit_of_work(self._sessions) as session:
            row = await store.settings(session, guild_id)
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
        from storage import guilds as store  # not at import time: bot.config imports this module
        from storage.db import unit_of_work

        async with unit_of_work(self._sessions) as session:
            row = await store.settings_to_change(session, guild_id)
            if job_budget_usd is not None:
                row.job_budget_usd = check_budget(job_budget_usd, "The budget per job")
            if monthly_budget_usd is not None:
                row.monthly_budget_usd = check_budget(monthly_budget_usd, "The monthly budget")
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
