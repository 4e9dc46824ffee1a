"""``python -m sim.crashing run``: the real ``loraops`` main, with crash points armed (tests only).

``LORAOPS_TEST_CRASH_AT`` names the points (comma separated, see :mod:`bot.crashpoints`) at which the
process SIGKILLs itself. This launcher is the only code that reads that variable, and ``loraops run``
never imports it, so a production bot cannot be made to crash by its environment.
"""

from __future__ import annotations

import os
import sys

from bot import crashpoints

ENV_CRASH_AT = "LORAOPS_TEST_CRASH_AT"


def main(argv: list[str] | None = None) -> int:
    crashpoints.arm(os.environ.get(ENV_CRASH_AT, "").split(","))
    from bot.cli import main as loraops_main

    return loraops_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
