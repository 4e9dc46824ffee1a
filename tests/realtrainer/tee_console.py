"""``python tee_console.py OUT_DIR COMMAND...``: runs COMMAND and keeps its raw console.

Put in front of the trainer command by the real-trainer test: the worker reads the trainer's stdout and
stderr as always (this passes every byte on, unbuffered), and OUT_DIR gets ``stdout.raw``,
``stderr.raw`` and ``exit_code`` for the golden record. Exits with the command's code; a command
killed by a signal is reported as the shell does (128 + signal), after the same signal reached it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO


def _copy(source: BinaryIO, sink: BinaryIO, keep: BinaryIO) -> None:
    while chunk := source.read1(65536):  # type: ignore[attr-defined]
        sink.write(chunk)
        sink.flush()
        keep.write(chunk)
    keep.flush()


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    with (out / "stdout.raw").open("wb") as keep_out, (out / "stderr.raw").open("wb") as keep_err:
        threads = [
            threading.Thread(target=_copy, args=(process.stdout, sys.stdout.buffer, keep_out)),
            threading.Thread(target=_copy, args=(process.stderr, sys.stderr.buffer, keep_err)),
        ]
        for thread in threads:
            thread.start()
        code = process.wait()
        for thread in threads:
            thread.join()
    (out / "exit_code").write_text(str(code))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
