"""``loraops sandbox``: the whole journey as a user runs it (a subprocess), and the transcript it writes.

The studio's story in two runs of sixteen stand-in steps, a checkpoint every four: the first (their own
settings) raises the face alarm at its second checkpoint and is stopped; "Retry with these changes"
applies the suggestions and quotes the face-weighted preset, whose run is approved and delivered. About
three minutes on two cores (1024 px samples scored at every checkpoint).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.transcript import markdown, render_html, slash_line

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run_sandbox(out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bot", "sandbox", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _texts(entry: dict[str, Any]) -> str:
    """Everything a reader sees in an entry: content, embed texts and the command line."""
    parts = [str(entry.get("content") or "")]
    for embed in entry.get("embeds") or []:
        parts += [str(embed.get("title") or ""), str(embed.get("description") or "")]
        parts += [f"{f.get('name')} {f.get('value')}" for f in embed.get("fields") or []]
    interaction = entry.get("interaction") or {}
    parts.append(str(interaction.get("command") or ""))
    return "\n".join(parts)


def test_sandbox_runs_the_journey_and_writes_a_transcript(tmp_path: Path) -> None:
    out = tmp_path / "sandbox-out"
    done = _run_sandbox(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Progress lines as it goes, then where the transcript is.
    assert "alice: /dataset create name:elena trigger:ohwx class:woman" in done.stdout
    assert f"open {out / 'transcript.html'}" in done.stdout
    # Every pod is gone and RunPod's meter equals the ledger (the sandbox checks it to the cent).
    assert "and the ledger says the same; no pod is left running" in done.stdout

    entries: list[dict[str, Any]] = json.loads((out / "transcript.json").read_text(encoding="utf-8"))
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert {e["kind"] for e in entries} >= {"message", "edit", "command", "reaction"}
    stamps = [e["at"] for e in entries]
    assert stamps == sorted(stamps)  # in the order it happened
    messages = [e for e in entries if e["kind"] in ("message", "edit")]
    for entry in messages:
        assert {"channel", "author", "content", "embeds", "attachments", "reactions"} <= entry.keys()
        assert entry["channel"] == "general"
    said = "\n".join(_texts(e) for e in entries)

    # The key moments, each from the bot, in order: the studio's run, the alarm, the stop, the retry,
    # the face-weighted run approved and delivered.
    moments = [
        "Created dataset **elena** (trigger `ohwx`, class woman)",
        "from Cloudinary folder “elena”: added 7 images",
        "Contact sheet: 1 page",
        "photos checked with",
        "Captions of **elena**",
        "Job #1 is waiting for confirmation",
        "Job #1 · sdxl-v4 · training",
        "**Checkpoint step 4/16**: recognised as elena in 0 of 4 samples",
        "**Checkpoint step 8/16**: recognised as elena in 0 of 4 samples",
        "job #1: **the face is not being learned.** At the 2nd checkpoint, step 8/16",
        "🛑 Job #1 stopped by",
        "training job #1 for **elena**",
        "Retry of job #1 with the suggested changes: preset `sdxl-face`",
        "Job #2 is waiting for confirmation",
        "Job #2 · sdxl-face · training",
        "training job #2 for **elena**",
        "of job #2 approved by",
        "Job #2 · **Checkpoint step 8/16**",  # /train samples job:2 step:8
        "of job #2 promoted by",
        "This month:",
    ]
    positions = []
    for moment in moments:
        found = [e["seq"] for e in messages if moment in _texts(e) and e["author"] == "loraops"]
        assert found, f"no bot message says {moment!r}"
        positions.append(found[0])
    assert positions == sorted(positions), list(zip(moments, positions, strict=True))
    assert "1 duplicate skipped" in said
    assert "is weak for identity training" in said  # the trigger advice for "elena"
    final_progress = [e for e in messages if e["content"].startswith("Job #2 · sdxl-face · finished")]
    assert final_progress and final_progress[0]["kind"] == "edit"  # the progress message, edited in place

    # The alarm: the requester pinged, what finishing would cost, what to change, three buttons.
    alarm = next(e for e in messages if "the face is not being learned" in e["content"])
    assert re.match(r"⚠️ <@\d+> job #1: ", alarm["content"]), alarm["content"][:80]
    assert "Finishing the run would cost about $" in alarm["content"]
    assert "the face-weighted preset `sdxl-face` instead of `sdxl-v4`" in alarm["content"]
    assert [c["label"] for c in alarm["components"]] == ["Stop now", "Let it run", "Retry with these changes"]
    stopped = next(e for e in messages if e["content"].startswith("🛑 Job #1 stopped by"))
    assert (
        "This saves about $" in stopped["content"]
        and "checkpoints saved so far are kept" in stopped["content"]
    )
    first = next(e for e in messages if "training job #1 for **elena**" in e["content"])
    assert "Stopped early: stopped on request after the face alarm (saved about $" in first["content"]
    retry = next(e for e in messages if "Retry of job #1" in e["content"])
    assert "Applied to the dataset: excluded" in retry["content"] and "face crop" in retry["content"]
    second = next(e for e in messages if "training job #2 for **elena**" in e["content"])
    assert re.search(
        r"Best checkpoint: \*\*step \d+\*\*: recognised as elena in [34] of 4 samples", second["content"]
    )
    # Likeness at or above the dataset's ceiling reads as such, never "101% of ceiling".
    assert not re.search(r"\b1\d\d% of (the dataset's )?ceiling", said)
    assert "likeness at the dataset's own ceiling" in said

    # Commands as typed, clicks by label; private replies marked with who sees them.
    commands = [e["interaction"]["command"] for e in entries if e["kind"] == "command"]
    assert "/dataset create name:elena trigger:ohwx class:woman" in commands
    assert "/dataset gather name:elena source:cloudinary folder:elena" in commands
    assert {"[Confirm]", "[Stop now]", "[Retry with these changes]"} <= set(commands)
    budget = next(e for e in messages if e["content"].startswith("This month:"))
    assert budget["ephemeral"] and budget["visible_to"] == "Erin"
    assert budget["interaction"]["command"] == "/budget show"

    # Files: saved under files/ with their names, the bytes as posted.
    files = [a for e in messages for a in e["attachments"]]
    names = {Path(a["file"]).name for a in files}
    expected = {"elena-sheet-01.jpg", "elena-report-card-01.jpg", "job1-step4.jpg", "job1-step8-alarm.jpg"}
    assert expected | {"job2-step4.jpg", "job2-grid.jpg"} <= names, names
    for attachment in files:
        path = out / attachment["file"]
        assert path.is_file() and path.stat().st_size == attachment["size"] > 0
    # An edit that replaced the chart points at the chart of that moment, not the final one.
    charts = [e for e in messages if e["content"].startswith("Job #2: face similarity and loss")]
    assert len(charts) >= 2 and len({c["attachments"][0]["sha256"] for c in charts}) == len(charts)

    # Reactions: who reacted with what, on the second run's grid rows and summary.
    row4 = next(
        e
        for e in messages
        if e["kind"] == "message" and any(Path(a["file"]).name == "job2-step4.jpg" for a in e["attachments"])
    )
    votes = {r["emoji"]: r["users"] for r in row4["reactions"]}
    assert "Bob" in votes["👍"] and "Dana" in votes["👎"]
    summary = second
    assert "Bob" in {r["emoji"]: r["users"] for r in summary["reactions"]}["✅"]
    reacted = [(e["author"], e["emoji"]) for e in entries if e["kind"] == "reaction"]
    assert ("Bob", "✅") in reacted and ("Dana", "👎") in reacted

    # Delivered into the ComfyUI loras folder: the approved checkpoint and the promoted one.
    delivered = sorted(p.name for p in (out / "comfyui" / "loras").glob("*.safetensors"))
    assert len(delivered) == 2 and all(re.fullmatch(r"elena-ohwx-s\d+\.safetensors", n) for n in delivered)

    page = (out / "transcript.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for text in (
        "/dataset create name:elena trigger:ohwx class:woman",
        "Created dataset <strong>elena</strong>",
        "added 7 images",
        "the face is not being learned",
        "Checkpoint step 16/16",
        'src="files/job2-grid.jpg"',
        'src="files/elena-report-card-01.jpg"',
        'class="reaction"',
        "Only Erin can see this",
        "@Alice",  # mentions shown as names
        "@reviewer",
        "edited",
    ):
        assert text in page, text
    assert "<@" not in page and "&lt;@" not in page  # no raw mention left


def test_markdown_escapes_everything_before_formatting() -> None:
    hostile = '<script>alert("x")</script> **bold** `<b>` <@42> [link](javascript:alert(1)) \\*lit\\*'
    rendered = markdown(hostile, {"<@42>": "@<img src=x onerror=alert(1)>"})
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered
    assert "<strong>bold</strong>" in rendered
    assert "<code>&lt;b&gt;</code>" in rendered
    assert "<img" not in rendered and "@&lt;img src=x onerror=alert(1)&gt;" in rendered
    assert "href=" not in rendered  # only http(s) links become links
    assert "*lit*" in rendered and "<em>lit</em>" not in rendered


def test_html_page_escapes_names_commands_and_files() -> None:
    entry: dict[str, Any] = {
        "seq": 1,
        "kind": "message",
        "at": "2026-01-01T00:00:00+00:00",
        "channel": "<general>",
        "message_id": "1",
        "version": 0,
        "author": '"><script>',
        "author_is_bot": False,
        "content": "hi",
        "embeds": [{"title": "<t>", "fields": [{"name": "<n>", "value": "<v>"}], "color": 1}],
        "attachments": [
            {"filename": '"><x.png', "file": 'files/"><x.png', "size": 3, "content_type": "image/png"}
        ],
        "components": [{"label": "<Go>", "custom_id": "go", "style": 1}],
        "reactions": [{"emoji": "👍", "users": ["<u>"]}],
        "ephemeral": True,
        "visible_to": "<u>",
        "interaction": {"id": "9", "type": "slash", "user": "<u>", "command": '/x a:"<bx>"'},
    }
    page = render_html([entry], title="<title>")
    body = page.split("</style>", 1)[1]
    for raw in ("<script>", "<general>", "<t>", "<n>", "<v>", "<Go>", "<u>", '"><x', "<bx>", "<title>"):
        assert raw not in body, raw


def test_slash_line_shows_subcommands_options_and_attachment_names() -> None:
    data = {
        "name": "dataset",
        "options": [
            {
                "type": 1,
                "name": "add",
                "options": [
                    {"type": 3, "name": "name", "value": "elena"},
                    {"type": 11, "name": "file1", "value": "77"},
                    {"type": 3, "name": "note", "value": "two words"},
                ],
            }
        ],
        "resolved": {"attachments": {"77": {"filename": "a.jpg"}}},
    }
    assert slash_line(data) == '/dataset add name:elena file1:a.jpg note:"two words"'
