"""How dataset images are named to people: by their number on the contact sheets ("#3, #7 and 2 more")."""

from __future__ import annotations

from collections.abc import Sequence


def position_list(positions: Sequence[int], limit: int = 30) -> str:
    """``#1, #4, #9`` for the first ``limit`` positions, then how many more there are."""
    shown = ", ".join(f"#{p}" for p in positions[:limit])
    return shown + (f" and {len(positions) - limit} more" if len(positions) > limit else "")
