"""Every cog loads, and no command name repeats (a repeated name would make Discord reject the sync)."""

from __future__ import annotations

from collections import Counter

from discord import app_commands

from bot.app import build_application
from bot.config import Settings
from cogs import EXTENSIONS


async def test_every_cog_loads_and_command_names_are_unique(settings: Settings) -> None:
    app = await build_application(settings)
    try:
        app.bot.sync_on_start = False
        await app.bot.setup_hook()
        assert set(app.bot.extensions) == set(EXTENSIONS)
        names = [(type(command).__name__, command.qualified_name) for command in app.bot.tree.walk_commands()]
        names += [
            ("context", command.name)
            for command in app.bot.tree.get_commands()
            if isinstance(command, app_commands.ContextMenu)
        ]
        repeated = [name for name, count in Counter(names).items() if count > 1]
        assert repeated == []
        assert ("Command", "dataset create") in names
        for command in app.bot.tree.walk_commands():
            if isinstance(command, app_commands.Command):
                for parameter in command.parameters:
                    assert parameter.description and parameter.description != "…", (
                        f"/{command.qualified_name} {parameter.name} needs a description"
                    )
    finally:
        await app.close()
