"""Entry point: ``python -m sim.sdscripts [accelerate launch [opts]] <script> [args]``."""

from __future__ import annotations

import os
import subprocess
import sys

from .argspec import SCRIPTS

# accelerate launch options that take a value (the rest of its options used by loraops are flags).
_ACCELERATE_VALUE_OPTIONS = {
    "--num_cpu_threads_per_process",
    "--num_processes",
    "--num_machines",
    "--mixed_precision",
    "--dynamo_backend",
    "--gpu_ids",
    "--main_process_port",
    "--config_file",
}
_ACCELERATE_FLAGS = {"--multi_gpu", "--cpu", "-q", "--quiet"}


def _usage() -> int:
    scripts = "|".join(SCRIPTS)
    print(f"usage: python -m sim.sdscripts [accelerate launch [options]] <{scripts}> [args]", file=sys.stderr)
    return 2


def _accelerate(argv: list[str]) -> int:
    """accelerate's simple_launcher: run the script in a child, turn a failure into CalledProcessError."""
    quiet = False
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index].split("=", 1)[0]
        if option in ("-q", "--quiet"):
            quiet = True
        if option in _ACCELERATE_VALUE_OPTIONS and "=" not in argv[index]:
            index += 1
        elif option not in _ACCELERATE_FLAGS and option not in _ACCELERATE_VALUE_OPTIONS:
            print(
                f"accelerate <command> [<args>] launch: error: unrecognized arguments: {argv[index]}",
                file=sys.stderr,
            )
            return 2
        index += 1
    if index >= len(argv):
        return _usage()
    cmd = [sys.executable, "-m", "sim.sdscripts", *argv[index:]]
    process = subprocess.Popen(cmd, env=os.environ.copy())
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
    if process.returncode != 0:
        if quiet:
            return 1
        # Raised for real, so the traceback text is Python's own (accelerate does not catch it).
        raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "accelerate" and argv[1] == "launch":
        return _accelerate(argv[2:])
    if not argv or os.path.basename(argv[0]) not in SCRIPTS:
        return _usage()
    from .trainer import main as train_main

    return train_main(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
