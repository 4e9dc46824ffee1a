"""Progress of long command-line work: a tqdm bar (rate, ETA) on a terminal, ten plain lines in a log."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def counting(verb: str, *, quiet: bool = False, unit: str = "image") -> Callable[[int, int], None]:
    """A ``report(done, total)`` callback for work counted in items."""
    interactive = sys.stderr.isatty()
    bar: Any = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if interactive:
            from tqdm import tqdm

            if bar is None:
                bar = tqdm(total=total, desc=verb, unit=unit, file=sys.stderr, leave=True)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
            return
        if quiet:
            return
        if done == total or done % max(1, total // 10) == 0:
            print(f"{verb} {done}/{total}", file=sys.stderr, flush=True)

    return report


def downloading(desc: str) -> Callable[[int, int | None], None]:
    """A ``progress(received, total)`` callback for a download in bytes (a bar on a terminal only)."""
    bar: Any = None

    def progress(received: int, total: int | None) -> None:
        nonlocal bar
        if not sys.stderr.isatty():
            return
        from tqdm import tqdm

        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr)
        bar.update(received - bar.n)
        if total is not None and received >= total:
            bar.close()

    return progress
