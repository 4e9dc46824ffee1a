"""What a gathering did, file by file: nothing is silently dropped.

``summary()`` is short enough for one Discord message; ``detail()`` lists everything (the cog can
attach it as a text file when the summary had to cut lists short).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.text import plain, plural, quote_inline, truncate, visible

log = logging.getLogger(__name__)

DISCORD_MESSAGE_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class AddedImage:
    position: int
    name: str
    width: int
    height: int
    format: str
    byte_size: int
    frames: int = 1  # an animated image: only its first frame is used


@dataclass(frozen=True, slots=True)
class DuplicateFile:
    name: str
    of_position: int
    kind: str  # "same file" | "same picture" | "same source"
    distance: int | None = None

    def describe(self) -> str:
        if self.kind == "same picture":
            return f"same picture as #{self.of_position} (pHash distance {self.distance})"
        if self.kind == "same source":
            return f"already gathered from the same source as #{self.of_position}"
        return f"same file as #{self.of_position}"


@dataclass(frozen=True, slots=True)
class RejectedFile:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class SkippedFile:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """A snapshot for the progress message the cog keeps editing."""

    phase: str  # "listing" | "downloading" | "processing" | "done"
    done: int
    total: int | None
    added: int
    duplicates: int
    rejected: int
    skipped: int

    def text(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return (
            f"{self.phase.capitalize()}… {self.done}{of} files: {self.added} added, "
            f"{self.duplicates} duplicates, {self.rejected} rejected, {self.skipped} skipped"
        )


ProgressCallback = Callable[[IngestProgress], Awaitable[None]]


async def notify(progress: ProgressCallback | None, snapshot: IngestProgress) -> None:
    """Call the progress callback; its failure (a Discord edit that failed) never stops ingest."""
    if progress is None:
        return
    try:
        await progress(snapshot)
    except Exception:
        log.warning("progress callback failed", exc_info=True)


@dataclass
class IngestReport:
    dataset_id: int
    dataset_name: str
    source: str  # e.g. "Cloudinary folder elena", "3 attachments"
    added: list[AddedImage] = field(default_factory=list)
    duplicates: list[DuplicateFile] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    stopped_early: str | None = None  # why the source could not be read to the end
    notes: list[str] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.added) + len(self.duplicates) + len(self.rejected) + len(self.skipped)

    def progress(self, phase: str, total: int | None) -> IngestProgress:
        return IngestProgress(
            phase=phase,
            done=self.seen,
            total=total,
            added=len(self.added),
            duplicates=len(self.duplicates),
            rejected=len(self.rejected),
            skipped=len(self.skipped),
        )

    def headline(self) -> str:
        return self._headline(markdown=True)

    def _headline(self, *, markdown: bool) -> str:
        parts: list[str] = []
        if self.added:
            parts.append(f"added {plural(len(self.added), 'image')} ({_positions(self.added)})")
        elif self.duplicates and not self.rejected:
            parts.append(
                f"no new images: all {plural(len(self.duplicates), 'file')} were already in the dataset"
            )
        else:
            parts.append("no images added")
        if self.duplicates and (self.added or self.rejected):
            parts.append(f"{plural(len(self.duplicates), 'duplicate')} skipped")
        if self.rejected:
            parts.append(f"{len(self.rejected)} rejected")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (not images)")
        if self.animated:
            parts.append(f"{plural(len(self.animated), 'animated image')}: only the first frame is used")
        if not markdown:
            return f"{self.dataset_name} from {self.source}: " + "; ".join(parts) + "."
        # Dataset names are letters, digits, - and _ (checked at creation); the source is composed by the
        # bot, any user text in it already made safe (bot.datasets.gather).
        return f"**{self.dataset_name}** from {self.source}: " + "; ".join(parts) + "."

    def summary(self, limit: int = DISCORD_MESSAGE_LIMIT) -> str:
        """Short text for one Discord message: the counts, then as many reasons as fit."""
        lines = []
        if self.stopped_early:
            lines.append(f"⚠️ Stopped early: {self.stopped_early}")
        lines.append(self.headline())
        lines.extend(plain(note, 300) for note in self.notes)
        sections = [
            ("Animated (first frame used)", [f"• {_animated(a)}" for a in self.animated]),
            ("Rejected", [f"• {_name(r.name)}: {plain(r.reason, 300)}" for r in self.rejected]),
            ("Duplicates", [f"• {_name(d.name)}: {d.describe()}" for d in self.duplicates]),
            ("Skipped", [f"• {_name(s.name)}: {plain(s.reason, 300)}" for s in self.skipped]),
        ]
        text = "\n".join(lines)
        for title, items in sections:
            if not items:
                continue
            text = _append_section(text, title, items, limit)
        return truncate(text, limit)

    @property
    def animated(self) -> list[AddedImage]:
        return [a for a in self.added if a.frames > 1]

    def detail(self) -> str:
        """Everything, one line per file (a text file: names cleaned of control characters, not escaped)."""
        out = []
        if self.stopped_early:
            out.append(f"Stopped early: {visible(self.stopped_early, 500)}")
        out.append(visible(self._headline(markdown=False), 1000))
        out.extend(visible(note, 500) for note in self.notes)
        if self.added:
            out.append("\nAdded:")
            out.extend(
                f"  #{a.position}  {visible(a.name, 200)}  {a.width}×{a.height} {a.format}  {a.byte_size} B"
                + (f"  animated, {a.frames} frames: only the first is used" if a.frames > 1 else "")
                for a in self.added
            )
        if self.duplicates:
            out.append("\nDuplicates (skipped):")
            out.extend(f"  {visible(d.name, 200)}: {d.describe()}" for d in self.duplicates)
        if self.rejected:
            out.append("\nRejected:")
            out.extend(f"  {visible(r.name, 200)}: {visible(r.reason, 500)}" for r in self.rejected)
        if self.skipped:
            out.append("\nSkipped (not images):")
            out.extend(f"  {visible(s.name, 200)}: {visible(s.reason, 500)}" for s in self.skipped)
        return "\n".join(out) + "\n"

    @property
    def truncated(self) -> bool:
        """True when ``summary()`` could not list every problem (attach ``detail()`` then)."""
        return any(line.startswith("… and ") for line in self.summary().splitlines())


def _append_section(text: str, title: str, items: list[str], limit: int) -> str:
    # Reserve room for a closing "… and N more" line so the counts stay honest.
    head = f"\n{title}:"
    if len(text) + len(head) + 40 > limit:
        return text + ("" if len(text) + 30 > limit else f"\n… and {len(items)} more {title.lower()}")
    text += head
    for index, item in enumerate(items):
        remaining = len(items) - index
        tail = f"\n… and {remaining} more (see the full report)"
        if len(text) + 1 + len(item) + len(tail) > limit - 80:
            return text + tail
        text += "\n" + item
    return text


def _name(name: str, limit: int = 60) -> str:
    # The end of a long path says most (the file, its zip entry); a code span keeps it inert.
    shown = visible(name)
    return quote_inline(shown if len(shown) <= limit else "…" + shown[-(limit - 1) :], limit)


def _animated(image: AddedImage) -> str:
    return f"#{image.position} {_name(image.name)}: {image.frames} frames, only the first is used"


def _positions(added: list[AddedImage]) -> str:
    positions = sorted(a.position for a in added)
    ranges: list[str] = []
    start = prev = positions[0]
    for p in positions[1:]:
        if p == prev + 1:
            prev = p
            continue
        ranges.append(f"#{start}" if start == prev else f"#{start}–#{prev}")
        start = prev = p
    ranges.append(f"#{start}" if start == prev else f"#{start}–#{prev}")
    return ", ".join(ranges) if len(ranges) <= 4 else f"#{positions[0]}–#{positions[-1]}"
