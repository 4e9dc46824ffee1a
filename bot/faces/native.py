"""Where :mod:`bot.faces._native` (the C module ``setup.py`` builds) is looked up, once.

Its callers fall back to the libraries it stands in for (dlib's resize, OpenCV's matcher) when it is
missing, as in a source tree nobody installed: the same results, slower. Logged once per process.
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def native_module() -> Any | None:
    """The built C module, or None (with one warning) when it was not built."""
    try:
        return importlib.import_module("bot.faces._native")
    except ImportError:
        log.warning("bot.faces._native is not built (pip install -e .): faces run ~3x slower")
        return None


__all__ = ["native_module"]
