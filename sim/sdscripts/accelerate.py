"""The stand-in's ``accelerate launch`` and the device accelerate picks, as accelerate 1.6.0 does them.

sd-scripts v0.10.1 pins accelerate 1.6.0. What matters to loraops is where training runs, and accelerate
decides that in two places (``commands/launch.py`` and ``utils/launch.py`` for the launcher,
``state.py`` for the trainer's ``PartialState``):

- the launcher reads a config file: ``--config_file`` (it must exist, else ``FileNotFoundError``) or, when
  it exists and ``--cpu`` is not given, ``$HF_HOME/accelerate/default_config.yaml`` (``HF_HOME`` defaults
  to ``$XDG_CACHE_HOME/huggingface``, then ``~/.cache/huggingface``). JSON when the name ends in ``.json``,
  else YAML. Its ``use_cpu``, ``gpu_ids`` and ``mixed_precision`` fill what the command line left out;
  without a config file it warns about each value it had to default;
- the launcher starts the script with ``ACCELERATE_USE_CPU=str(cpu or use_cpu)`` (overriding an inherited
  value), ``ACCELERATE_MIXED_PRECISION`` and, unless ``gpu_ids`` is ``all``, ``CUDA_VISIBLE_DEVICES``;
- in the script, ``ACCELERATE_USE_CPU`` (yes/no words; anything else raises ``ValueError``) forces the
  CPU; otherwise CUDA when torch sees a device, else the CPU, silently.

The stand-in's torch sees what the simulated driver lists (``sim.gpu.visible_cuda_devices``);
``SDSTANDIN_CUDA_BROKEN=1`` plays a torch build that cannot use the driver (the GPU is listed, torch
still sees none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import yaml

from sim.gpu import visible_cuda_devices

# accelerate launch options that take a value (the rest of its options used by loraops are flags).
VALUE_OPTIONS = {
    "--num_cpu_threads_per_process",
    "--num_processes",
    "--num_machines",
    "--mixed_precision",
    "--dynamo_backend",
    "--gpu_ids",
    "--main_process_port",
    "--config_file",
}
FLAGS = {"--multi_gpu", "--cpu", "-q", "--quiet"}
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


class UsageError(Exception):
    """What accelerate's argparse prints before exiting 2."""


def str_to_bool(value: str) -> bool:
    """accelerate.utils.environment.str_to_bool (the truth words it accepts, ValueError otherwise)."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"invalid truth value {lowered}")


def default_config_file(env: dict[str, str]) -> str:
    hf_home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(hf_home), "accelerate", "default_config.yaml")


def _load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    config = data if isinstance(data, dict) else {}
    if "distributed_type" not in config:  # ClusterConfig.process_config
        raise ValueError("A `distributed_type` must be specified in the config file.")
    return config


def split_launch_args(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """(launch options, script and its arguments); ``UsageError`` for an option accelerate lacks."""
    options: dict[str, str | bool] = {}
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        name, has_value, value = argv[index].partition("=")
        if name in VALUE_OPTIONS:
            if not has_value:
                index += 1
                if index >= len(argv):
                    raise UsageError(f"argument {name}: expected one argument")
                value = argv[index]
            options[name] = value
        elif name in FLAGS:
            options[name] = True
        else:
            raise UsageError(f"unrecognized arguments: {argv[index]}")
        index += 1
    return options, argv[index:]


def _physical_cores() -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or 1)
    except ImportError:
        return os.cpu_count() or 1


def child_environment(options: dict[str, str | bool], env: dict[str, str]) -> dict[str, str]:
    """The script's environment as accelerate's simple launcher builds it (warnings logged like it)."""
    cpu = bool(options.get("--cpu"))
    named = options.get("--config_file")
    config: dict[str, Any] | None = None
    if isinstance(named, str):
        if not os.path.isfile(named):
            raise FileNotFoundError(
                f"The passed configuration file `{named}` does not exist. Please pass an existing file to "
                "`accelerate launch`, or use the default one created through `accelerate config` and run "
                "`accelerate launch` without the `--config_file` argument."
            )
        config = _load_config(named)
    elif not cpu and os.path.isfile(default_config_file(env)):
        config = _load_config(default_config_file(env))
    mixed = options.get("--mixed_precision")
    gpu_ids = options.get("--gpu_ids")
    use_cpu = cpu
    warned: list[str] = []
    if config is not None:
        use_cpu = cpu or bool(config.get("use_cpu", False))
        if gpu_ids is None:
            gpu_ids = str(config["gpu_ids"]) if config.get("gpu_ids") is not None else "all"
        if not mixed:
            mixed = config.get("mixed_precision") or "no"
        processes = int(options.get("--num_processes") or config.get("num_processes") or 1)
        machines = int(options.get("--num_machines") or config.get("num_machines") or 1)
    else:
        processes = int(options.get("--num_processes") or len(visible_cuda_devices(env)))
        machines = int(options.get("--num_machines") or 1)
        if "--num_processes" not in options:
            warned.append(f"\t`--num_processes` was set to a value of `{processes}`")
        if "--num_machines" not in options:
            warned.append("\t`--num_machines` was set to a value of `1`")
        if mixed is None:
            warned.append("\t`--mixed_precision` was set to a value of `'no'`")
            mixed = "no"
        if "--dynamo_backend" not in options:
            warned.append("\t`--dynamo_backend` was set to a value of `'no'`")
    threads = options.get("--num_cpu_threads_per_process")
    if threads is None:
        omp = int(env.get("OMP_NUM_THREADS") or 0)
        threads = str(omp or 1)
        if use_cpu and processes >= 1 and omp == 0:
            per_process = _physical_cores() // max(processes // machines, 1)
            if per_process > 1:
                threads = str(per_process)
                warned.append(
                    f"\t`--num_cpu_threads_per_process` was set to `{per_process}` to improve out-of-box "
                    "performance when training on CPUs"
                )
    if warned:
        sys.stderr.write(
            "The following values were not passed to `accelerate launch` and had defaults used instead:\n"
            + "\n".join(warned)
            + "\nTo avoid this warning pass in values for each of the problematic parameters or run "
            "`accelerate config`.\n"
        )
        sys.stderr.flush()
    child = dict(env)
    child["ACCELERATE_USE_CPU"] = str(use_cpu)
    child["ACCELERATE_MIXED_PRECISION"] = str(mixed).lower()
    child["OMP_NUM_THREADS"] = str(threads)
    if isinstance(gpu_ids, str) and gpu_ids != "all":
        child["CUDA_VISIBLE_DEVICES"] = gpu_ids
    return child


def launch(argv: list[str]) -> int:
    """``accelerate launch [options] <script> [args]`` over the stand-in (the simple launcher)."""
    try:
        options, rest = split_launch_args(argv)
    except UsageError as exc:
        print(f"accelerate <command> [<args>] launch: error: {exc}", file=sys.stderr)
        return 2
    if not rest:
        return -1
    env = child_environment(options, dict(os.environ))  # FileNotFoundError propagates: a traceback, exit 1
    cmd = [sys.executable, "-m", "sim.sdscripts", *rest]
    process = subprocess.Popen(cmd, env=env)
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
    if process.returncode != 0:
        if options.get("-q") or options.get("--quiet"):
            return 1
        # Raised for real, so the traceback text is Python's own (accelerate does not catch it).
        raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
    return 0


def accelerator_device() -> str:
    """The device ``Accelerator()`` gets in this process (``PartialState``), for ``accelerator device:``."""
    if str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "False")):
        return "cpu"
    if os.environ.get("SDSTANDIN_CUDA_BROKEN") == "1":
        return "cpu"
    return "cuda" if visible_cuda_devices(dict(os.environ)) else "cpu"
