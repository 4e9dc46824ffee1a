"""Command-line progress: a tqdm bar with rate and ETA on a terminal; about ten plain lines in a log file."""

from __future__ import annotations

import io

import pytest

from bot import cli_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_about_ten_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    report = cli_progress.counting("analysing")
    for done in range(1, 201):
        report(done, 200)
    lines = log.getvalue().splitlines()
    assert 9 <= len(lines) <= 11
    assert lines[-1] == "analysing 200/200"
    assert "\r" not in log.getvalue()


def test_quiet_log_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    report = cli_progress.counting("analysing", quiet=True)
    for done in range(1, 11):
        report(done, 10)
    assert log.getvalue() == ""


def test_terminal_gets_a_bar_with_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    report = cli_progress.counting("analysing")
    for done in range(1, 6):
        report(done, 5)
    shown = screen.getvalue()
    assert "analysing: 100%" in shown and "5/5" in shown and "image/s" in shown


def test_download_bar_on_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    cli_progress.downloading("models")(512, 1024)
    assert log.getvalue() == ""
    screen = _Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    progress = cli_progress.downloading("models")
    progress(512, 1024)
    progress(1024, 1024)
    assert "models: 100%" in screen.getvalue()
