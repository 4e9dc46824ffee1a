"""Named moments at which a crash test makes this process die by SIGKILL, exactly there.

The code calls :func:`crashpoint` at the moments that matter for recovery (a message posted but its id
not yet stored, a checkpoint marked announced but its row not yet posted, ...). In production no point
is ever armed: nothing in ``bot/`` reads the environment or any setting for it, so ``loraops run`` cannot
be made to kill itself. Only the test launcher ``python -m sim.crashing`` (which then runs the very same
``loraops`` main) arms points, through :func:`arm`. An unarmed call is one set lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

_armed: frozenset[str] = frozenset()


def arm(names: Iterable[str]) -> None:
    """Make the process SIGKILL itself when it reaches any of ``names`` (tests only, see above)."""
    global _armed
    _armed = frozenset(name for name in names if name)


def armed() -> frozenset[str]:
    return _armed


def crashpoint(name: str) -> None:
    """Die here, at once and without any clean-up, if ``name`` is armed; otherwise nothing."""
    if name not in _armed:
        return
    # One line the test can look for, written straight to the fd: buffers die with the process.
    os.write(sys.stderr.fileno(), f"CRASHPOINT {name}: SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
