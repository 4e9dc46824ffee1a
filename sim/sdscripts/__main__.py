"""Entry point: ``python -m sim.sdscripts [accelerate launch [opts]] <script> [args]``."""

from __future__ import annotations

import os
import sys

from .argspec import SCRIPTS


def _usage() -> int:
    scripts = "|".join(SCRIPTS)
    print(f"usage: python -m sim.sdscripts [accelerate launch [options]] <{scripts}> [args]", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "accelerate" and argv[1] == "launch":
        from .accelerate import launch

        code = launch(argv[2:])
        return _usage() if code == -1 else code
    if not argv or os.path.basename(argv[0]) not in SCRIPTS:
        return _usage()
    from .trainer import main as train_main

    return train_main(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
