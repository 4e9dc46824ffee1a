"""Reading sd-scripts' console output: the ``steps:`` tqdm line, epochs and failure markers.

tqdm redraws with ``\\r`` (also when not on a TTY) and the last redraw may never get a newline, so the
stream is split on both ``\\r`` and ``\\n``; the regex is anchored at ``steps:`` so the other bars
(``read caption``, latent caching, the sampler's denoising bars) are never taken for progress.
See /work/shared/reference/sd_scripts.md §2.3–§2.5.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PROGRESS = re.compile(
    r"^steps:\s+(?P<pct>\d+)%\|.*?\|\s*(?P<step>\d+)/(?P<total>\d+)"
    r" \[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+),"
    r"\s*(?P<rate>[\d.?]+)(?P<unit>it/s|s/it)(?:, (?P<postfix>.*))?\]"
)
_AVR_LOSS = re.compile(r"avr_loss=(?P<value>[0-9.eE+-]+|nan|inf|-inf)")
_EPOCH = re.compile(r"^epoch (?P<epoch>\d+)/(?P<total>\d+)$")
_SAVING = re.compile(r"^saving checkpoint: (?P<path>.+)$")
_SIGNAL = re.compile(r"died with <Signals\.(?P<name>SIG\w+): (?P<number>\d+)>")
OOM_MARKER = "CUDA out of memory"
NO_DATA_MARKER = "No data found."
MODEL_SAVED = "model saved."


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    rate: float | None  # it/s
    eta_s: float | None
    loss: float | None  # avr_loss; may be nan or inf


def _seconds(clock: str) -> float | None:
    if "?" in clock:
        return None
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def parse_progress(line: str) -> Progress | None:
    """The training progress in one ``steps:`` redraw, or None for any other line."""
    match = _PROGRESS.match(line.strip())
    if match is None:
        return None
    rate_text = match["rate"]
    rate: float | None = None
    if "?" not in rate_text:
        value = float(rate_text)
        rate = value if match["unit"] == "it/s" else (1.0 / value if value > 0 else None)
    loss: float | None = None
    if match["postfix"]:
        loss_match = _AVR_LOSS.search(match["postfix"])
        if loss_match:
            loss = float(loss_match["value"])
    return Progress(int(match["step"]), int(match["total"]), rate, _seconds(match["remaining"]), loss)


def loss_is_bad(loss: float | None) -> bool:
    return loss is not None and (math.isnan(loss) or math.isinf(loss))


def parse_epoch(line: str) -> tuple[int, int] | None:
    match = _EPOCH.match(line.strip())
    return (int(match["epoch"]), int(match["total"])) if match else None


def parse_saving(line: str) -> str | None:
    match = _SAVING.match(line.strip())
    return match["path"] if match else None


def parse_signal(line: str) -> str | None:
    """accelerate's ``... died with <Signals.SIGKILL: 9>.`` when the child was killed."""
    match = _SIGNAL.search(line)
    return match["name"] if match else None


class LineSplitter:
    """Turns stream chunks into lines, splitting on ``\\r`` and ``\\n``; keeps the unfinished tail."""

    def __init__(self) -> None:
        self._tail = ""

    def feed(self, chunk: str) -> list[str]:
        text = self._tail + chunk
        parts = re.split(r"\r\n|\r|\n", text)
        self._tail = parts.pop()
        return parts

    @property
    def tail(self) -> str:
        """The unfinished last piece (a tqdm redraw often stays here until the next ``\\r``)."""
        return self._tail

    def flush(self) -> list[str]:
        rest, self._tail = self._tail, ""
        return [rest] if rest else []
