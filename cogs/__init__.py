"""Thin adapters between Discord and the services in ``bot/``. Loaded in this order."""

EXTENSIONS: tuple[str, ...] = ("cogs.dataset", "cogs.admin", "cogs.train", "cogs.review")
