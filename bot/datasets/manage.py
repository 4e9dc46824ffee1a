"""Creating, listing and describing datasets: the rules for names, trigger and class words."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import ConflictError, InvalidInputError, NotFoundError
from bot.text import quote_inline
from storage import datasets as store
from storage.db import unit_of_work
from storage.models import Dataset

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{1,31}$")
# A trigger is one word that a caption can start with; whether the tokenizer keeps it whole is checked
# with the trigger advice (bot/training/triggers.py), which only warns.
TRIGGER_PATTERN = re.compile(r"^[A-Za-z0-9]{2,32}$")
CLASS_PATTERN = re.compile(r"^[a-z][a-z ]{1,31}$")


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    trigger_word: str
    class_word: str
    owner_id: int
    created_at: datetime
    image_count: int
    excluded_count: int


def validate_new_dataset(name: str, trigger: str, class_word: str) -> tuple[str, str, str]:
    """Normalise and check the three words; raise one clear message for the first problem."""
    name, trigger, class_word = name.strip().lower(), trigger.strip(), class_word.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            "Dataset names are 2-32 characters: lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    if not TRIGGER_PATTERN.fullmatch(trigger):
        raise InvalidInputError("The trigger must be one word of 2-32 letters or digits, e.g. `ohwx`.")
    if not CLASS_PATTERN.fullmatch(class_word):
        raise InvalidInputError(
            "The class word is what the subject is, e.g. `woman` or `man` (letters only)."
        )
    if trigger.casefold() == class_word.casefold():
        raise InvalidInputError("The trigger must differ from the class word.")
    return name, trigger, class_word


class DatasetService:
    """Dataset lifecycle. Each method is one short unit of work."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self, *, guild_id: int, name: str, trigger: str, class_word: str, owner_id: int
    ) -> DatasetInfo:
        name, trigger, class_word = validate_new_dataset(name, trigger, class_word)
        try:
            async with unit_of_work(self._sessions) as session:
                exists = await store.dataset_id_named(session, guild_id, name)
                if exists is not None:
                    raise ConflictError(f"A dataset named `{name}` already exists here.")
                dataset = store.add_dataset(
                    session,
                    guild_id=guild_id,
                    name=name,
                    trigger_word=trigger,
                    class_word=class_word,
                    owner_id=owner_id,
                )
                await session.flush()
                return _info(dataset, 0, 0)
        except IntegrityError:
            # Two creates raced past the check; the unique constraint decided.
            raise ConflictError(f"A dataset named `{name}` already exists here.") from None

    async def get(self, *, guild_id: int, name: str) -> DatasetInfo:
        async with unit_of_work(self._sessions) as session:
            dataset = await self._find(session, guild_id, name)
            counts = await _image_counts(session, [dataset.id])
            return _info(dataset, *counts.get(dataset.id, (0, 0)))

    async def list(self, *, guild_id: int) -> list[DatasetInfo]:
        async with unit_of_work(self._sessions) as session:
            datasets = await store.datasets_of(session, guild_id)
            counts = await _image_counts(session, [d.id for d in datasets])
            return [_info(d, *counts.get(d.id, (0, 0))) for d in datasets]

    async def names(self, *, guild_id: int, prefix: str = "", limit: int = 25) -> list[str]:
        """For autocomplete: at most ``limit`` names starting with ``prefix``."""
        async with unit_of_work(self._sessions) as session:
            return await store.dataset_names(session, guild_id, prefix.lower(), limit)

    @staticmethod
    async def _find(session: AsyncSession, guild_id: int, name: str) -> Dataset:
        dataset = await store.dataset_named(session, guild_id, name.strip().lower())
        if dataset is None:
            raise NotFoundError(
                f"No dataset named {quote_inline(name, 40)} here. `/dataset list` shows them."
            )
        return dataset


async def _image_counts(session: AsyncSession, dataset_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not dataset_ids:
        return {}
    return await store.image_counts(session, dataset_ids)


def _info(dataset: Dataset, image_count: int, excluded_count: int) -> DatasetInfo:
    return DatasetInfo(
        id=dataset.id,
        name=dataset.name,
        trigger_word=dataset.trigger_word,
        class_word=dataset.class_word,
        owner_id=dataset.owner_id,
        created_at=dataset.created_at,
        image_count=image_count,
        excluded_count=excluded_count,
    )
