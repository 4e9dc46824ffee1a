"""``loraops sandbox``: the whole journey as a user runs it (a subprocess), and the transcript it writes.

The run takes well under a minute on two cores: twelve stand-in steps, a checkpoint every four.
"""

from __future__ import annotations

import json
import os
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
        timeout=300,
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

    # The key moments, each from the bot, in order.
    moments = [
        "Created dataset **elena** (trigger `ohwx`, class woman)",
        "from Cloudinary folder “elena”: added 7 images",
        "Contact sheet: 1 page",
        "photos checked with",
        "applied the curation",
        "Captions of **elena**",
        "Job #1 is waiting for confirmation",
        "Job #1 · sd15-local · training",
        "**Checkpoint step 4/12**",
        "**Checkpoint step 12/12**",
        "training job #1 for **elena**",
        "Checkpoint step 12 of job #1 approved by",
        "Job #1 · **Checkpoint step 8/12**",  # /train samples job:1 step:8
        "Checkpoint step 8 of job #1 promoted by",
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
    final_progress = [e for e in messages if e["content"].startswith("Job #1 · sd15-local · finished")]
    assert final_progress and final_progress[0]["kind"] == "edit"  # the progress message, edited in place

    # Commands as typed, clicks by label; private replies marked with who sees them.
    commands = [e["interaction"]["command"] for e in entries if e["kind"] == "command"]
    assert "/dataset create name:elena trigger:ohwx class:woman" in commands
    assert "/dataset gather name:elena source:cloudinary folder:elena" in commands
    assert "[Confirm]" in commands and "[Both]" in commands
    budget = next(e for e in messages if e["content"].startswith("This month:"))
    assert budget["ephemeral"] and budget["visible_to"] == "Erin"
    assert budget["interaction"]["command"] == "/budget show"

    # Files: saved under files/ with their names, the bytes as posted.
    files = [a for e in messages for a in e["attachments"]]
    names = {Path(a["file"]).name for a in files}
    assert {"elena-sheet-01.jpg", "elena-report-card-01.jpg", "job1-step4.jpg", "job1-grid.jpg"} <= names
    for attachment in files:
        path = out / attachment["file"]
        assert path.is_file() and path.stat().st_size == attachment["size"] > 0
    # An edit that replaced the chart points at the chart of that moment, not the final one.
    charts = [e for e in messages if e["content"].startswith("Job #1: face similarity and loss")]
    assert len(charts) >= 2 and len({c["attachments"][0]["sha256"] for c in charts}) == len(charts)

    # Reactions: who reacted with what, on the grid rows and the summary.
    row4 = next(e for e in messages if e["kind"] == "message" and "**Checkpoint step 4/12**" in e["content"])
    votes = {r["emoji"]: r["users"] for r in row4["reactions"]}
    assert "Bob" in votes["👍"] and "Dana" in votes["👎"]
    summary = next(e for e in messages if "training job #1 for **elena**" in e["content"])
    assert "Bob" in {r["emoji"]: r["users"] for r in summary["reactions"]}["✅"]
    reacted = [(e["author"], e["emoji"]) for e in entries if e["kind"] == "reaction"]
    assert ("Bob", "✅") in reacted and ("Dana", "👎") in reacted

    # Delivered into the ComfyUI loras folder.
    delivered = list((out / "comfyui" / "loras").glob("*.safetensors"))
    assert sorted(p.name for p in delivered) == ["elena-ohwx-s12.safetensors", "elena-ohwx-s8.safetensors"]

    page = (out / "transcript.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for text in (
        "/dataset create name:elena trigger:ohwx class:woman",
        "Created dataset <strong>elena</strong>",
        "added 7 images",
        "applied the curation",
        "Checkpoint step 12/12",
        'src="files/job1-grid.jpg"',
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
