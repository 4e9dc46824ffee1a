"""loraops: Discord chat-ops for identity LoRA training.

The domain lives here and never imports discord; only ``bot/app.py`` (and ``bot/discord_*.py``)
adapt it to discord.py.
"""

__version__ = "0.1.0"
