"""The golden record of a real sd-scripts run, and the shape comparison the stand-in is held to.

The record (``golden/``) is the real trainer's console and output files from
``test_real_run.py`` (``LORAOPS_RECORD_GOLDEN=1`` rewrites it): ``stdout.txt`` and ``stderr.txt`` one
redraw or line per line (tqdm's ``\\r`` redraws split, terminal escapes removed, timestamps, absolute
paths, rates and timings sanitised), ``files.txt`` (the output folder, sample time stamps masked),
``exit_code``, and the ``config.toml``/``dataset.toml``/``prompts.txt`` the run used.

Two outputs have the same shape when, per stream:

1. the sequence of protocol events is equal: the lines the worker and the bot read or a user sees
   (``accelerator device``, the running-training block, ``epoch N/M``, sampling and its prompt lines,
   ``saving checkpoint``, ``removing old checkpoint``, ``model saved.``) verbatim after sanitising, and the
   progress redraws as (bar, step/total, loss shown or not), consecutive repeats folded;
2. every line the stand-in prints has the shape of some line the real trainer printed (numbers,
   paths and times abstracted): the stand-in invents nothing;
3. the output files have the same names and the exit codes are equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_STAMP = re.compile(r"(?<=_)\d{14}(?=[_.])")
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[\w.~+-]+/)+[\w.~+-]*")
_BAR = re.compile(
    r"^(?P<desc>[^|]*?)\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<times>[^\],]*),\s*(?P<rate>[^\],]*?)(?P<post>,[^\]]*)?\]\s*$"
)
_GLUED = re.compile(r"^(.*?\|\s*\d+/\d+ \[[^\]]*\])(\S.*)$")
_EVENTS = (
    re.compile(r"^accelerator device: \w+"),
    re.compile(r"^running training / "),
    re.compile(
        r"^  (num train images|num reg images|num batches per epoch|num epochs|batch size per device"
        r"|gradient accumulation steps|total optimization steps)"
    ),
    re.compile(r"^override steps\. "),
    re.compile(r"^epoch \d+/\d+$"),
    re.compile(r"^epoch is incremented\. "),
    re.compile(r"^generating sample images at step"),
    re.compile(r"^(prompt|negative_prompt|height|width|sample_steps|scale|sample_sampler|seed): "),
    re.compile(r"^saving checkpoint: "),
    re.compile(r"^removing old checkpoint: "),
    re.compile(r"^model saved\.$"),
    re.compile(r"^No data found\. "),
)


def split_console(raw: str) -> list[str]:
    """Lines as a terminal log shows them: ``\\r`` and ``\\n`` both end a line, escapes removed, and
    text written right after a progress redraw (a warning, on the same stream) starts a line of its own."""
    lines = []
    for piece in re.split(r"\r\n|\r|\n", raw):
        text = _ANSI.sub("", piece).rstrip()
        while (glued := _GLUED.match(text)) is not None:
            lines.append(glued[1])
            text = glued[2]
        if text.strip():
            lines.append(text)
    return lines


def sanitize(line: str) -> str:
    """What may differ between two runs of the same config: times, paths, speeds."""
    line = _TIME.sub("<time>", line)
    line = _STAMP.sub("<stamp>", line)
    line = _ABS_PATH.sub("<path>", line)
    bar = _BAR.match(line)
    if bar:
        post = re.sub(r"avr_loss=[^,\]]+", "avr_loss=<loss>", bar["post"] or "")
        line = (
            f"{bar['desc']} {bar['pct']}%|<bar>| {bar['n']}/{bar['total']} [<times>, <rate>{post}]".lstrip()
        )
    return line


def shape(line: str) -> str:
    """A sanitised line with every number, path and run of spaces abstracted."""
    text = re.sub(r"(\w+\.py):\d+", r"\1", line)  # Rich's "file.py:LINE" column
    text = re.sub(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", "N", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "<str>", text)
    return re.sub(r"\s+", " ", text).strip()


def events(lines: list[str]) -> list[str]:
    """The protocol events of one stream, in order. Every redraw of the training bar counts (what the
    worker parses); of any other bar only its start and its end (how many redraws a short loop gets in
    between depends on tqdm's refresh interval, not on the trainer)."""
    found: list[str] = []
    for line in lines:
        bar = _BAR.match(line)
        if bar:
            desc = bar["desc"].strip().rstrip(":") or "(no label)"
            if desc != "steps" and bar["n"] not in ("0", bar["total"]):
                continue
            loss = " loss" if bar["post"] and "avr_loss" in bar["post"] else ""
            event = f"bar {desc} {bar['n']}/{bar['total']}{loss}"
        elif any(pattern.match(line) for pattern in _EVENTS):
            event = line
        else:
            continue
        if not found or found[-1] != event:
            found.append(event)
    return found


@dataclass(frozen=True)
class Console:
    stdout: list[str]
    stderr: list[str]
    exit_code: int

    @classmethod
    def from_raw(cls, stdout: str, stderr: str, exit_code: int) -> Console:
        return cls(
            [sanitize(x) for x in split_console(stdout)],
            [sanitize(x) for x in split_console(stderr)],
            exit_code,
        )

    @classmethod
    def read(cls, folder: Path) -> Console:
        """What tee_console.py kept."""
        return cls.from_raw(
            (folder / "stdout.raw").read_bytes().decode("utf-8", "replace"),
            (folder / "stderr.raw").read_bytes().decode("utf-8", "replace"),
            int((folder / "exit_code").read_text()),
        )


def output_tree(output: Path) -> list[str]:
    """The output folder's files (relative), sample time stamps masked."""
    return sorted(
        _STAMP.sub("<stamp>", p.relative_to(output).as_posix()) for p in output.rglob("*") if p.is_file()
    )


@dataclass(frozen=True)
class Record:
    console: Console
    files: list[str]
    config_toml: str
    dataset_toml: str
    prompts_txt: str


def record(run: Console, files: list[str], *, config_toml: str, dataset_toml: str, prompts_txt: str) -> None:
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "stdout.txt").write_text("\n".join(run.stdout) + "\n")
    (GOLDEN / "stderr.txt").write_text("\n".join(run.stderr) + "\n")
    (GOLDEN / "exit_code").write_text(f"{run.exit_code}\n")
    (GOLDEN / "files.txt").write_text("\n".join(files) + "\n")
    (GOLDEN / "config.toml").write_text(_ABS_PATH.sub("<path>", config_toml))
    (GOLDEN / "dataset.toml").write_text(dataset_toml)
    (GOLDEN / "prompts.txt").write_text(prompts_txt)


def load() -> Record:
    return Record(
        Console(
            (GOLDEN / "stdout.txt").read_text().splitlines(),
            (GOLDEN / "stderr.txt").read_text().splitlines(),
            int((GOLDEN / "exit_code").read_text()),
        ),
        (GOLDEN / "files.txt").read_text().splitlines(),
        (GOLDEN / "config.toml").read_text(),
        (GOLDEN / "dataset.toml").read_text(),
        (GOLDEN / "prompts.txt").read_text(),
    )


def differences(golden: Record, run: Console, files: list[str], *, invents: bool = True) -> list[str]:
    """Where ``run`` (and its ``files``) differs in shape from the record; empty when it matches."""
    problems: list[str] = []
    for name in ("stdout", "stderr"):
        want, got = getattr(golden.console, name), getattr(run, name)
        want_events, got_events = events(want), events(got)
        if want_events != got_events:
            problems.append(f"{name} events differ:\n" + _side_by_side(want_events, got_events))
        if invents:
            known = {shape(line) for line in want}
            new = [line for line in got if shape(line) not in known]
            if new:
                problems.append(f"{name} lines the real trainer never prints:\n  " + "\n  ".join(new[:30]))
    if files != golden.files:
        problems.append(f"output files differ:\n  real: {golden.files}\n  this: {files}")
    if run.exit_code != golden.console.exit_code:
        problems.append(f"exit code {run.exit_code}, the real trainer's was {golden.console.exit_code}")
    return problems


def assert_same_shape(golden: Record, run: Console, files: list[str], *, invents: bool = True) -> None:
    problems = differences(golden, run, files, invents=invents)
    assert not problems, "\n\n".join(problems)


def _side_by_side(want: list[str], got: list[str]) -> str:
    rows = []
    for index in range(max(len(want), len(got))):
        a = want[index] if index < len(want) else ""
        b = got[index] if index < len(got) else ""
        rows.append(f"  {'  ' if a == b else '!!'} {a[:70]:<70} | {b[:70]}")
    return "\n".join(rows)
