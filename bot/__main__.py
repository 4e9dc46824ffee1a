"""``python -m bot`` is the same as the ``loraops`` console script."""

from bot.cli import main

raise SystemExit(main())
