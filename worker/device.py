"""Will sd-scripts train on the pod's GPU? Checked before the launch and again at the trainer's first words.

A pod that trains on its CPU is the costliest silent failure there is: the GPU is billed by the second
while the run crawls (or bitsandbytes crashes). It happens when accelerate is told to use the CPU, and
accelerate is told through several doors (read from accelerate 1.6.0, the version sd-scripts v0.10.1 pins,
``commands/launch.py::_validate_launch_command`` and ``utils/launch.py::prepare_simple_launcher_cmd_env``):

- ``accelerate launch --cpu``;
- a config file with ``use_cpu: true``: the one named by ``--config_file``, else the default
  ``$HF_HOME/accelerate/default_config.yaml`` (``HF_HOME`` defaults to ``$XDG_CACHE_HOME/huggingface``,
  then ``~/.cache/huggingface``), read only when it exists. ``accelerate config default`` run where no GPU
  is visible (an image build) writes exactly that file;
- ``ACCELERATE_USE_CPU`` in the trainer's environment. ``accelerate launch`` always sets it for its child
  (``str(cpu or use_cpu)``), overriding an inherited value; only a trainer started without
  ``accelerate launch`` reads the inherited one;
- no CUDA device: ``gpu_ids`` (``--gpu_ids`` or the config's) becomes the child's
  ``CUDA_VISIBLE_DEVICES`` unless it is ``all``; an inherited ``CUDA_VISIBLE_DEVICES`` that selects none of
  the GPUs hides them all. accelerate then picks the CPU without a word.

The first two plus the GPU inventory (``nvidia-smi -L``) are checked here before anything is downloaded.
What no static check can see (a CUDA build of torch that cannot use the driver) shows in the first line
sd-scripts prints after preparing accelerate, ``accelerator device: <device>``: ``parse_device_line``
reads it and the job stops there, before model loading and before any training step.

``LORAOPS_TEST_ONLY_ALLOW_CPU_TRAINING=1`` turns the refusals into notes. Only the test suite sets it (CI
has no GPU, and the real-trainer test trains on the CPU on purpose); the bot never puts it in a pod's
environment and nothing a user types can reach the worker's environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ALLOW_CPU_ENV = "LORAOPS_TEST_ONLY_ALLOW_CPU_TRAINING"
_DEVICE_LINE = re.compile(r"^accelerator device: (?P<device>[a-z]+)(?::\d+)?$")
_SMI_LINE = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>GPU-[0-9a-fA-F-]+)\)$")
_TRUE = {"y", "yes", "t", "true", "on", "1"}
_FALSE = {"n", "no", "f", "false", "off", "0"}


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str


@dataclass(frozen=True)
class LaunchPlan:
    """What the trainer's accelerate will be told, as far as the CPU/GPU choice goes."""

    accelerate: bool  # the trainer command is ``accelerate launch ...``
    config_file: Path | None  # the accelerate config file that applies, if any
    use_cpu_reason: str | None  # why accelerate is told to use the CPU (None: it is not)
    visible_devices: str | None  # the trainer's CUDA_VISIBLE_DEVICES (None: unset)
    problem: str | None = None  # the settings themselves are broken (accelerate would refuse them)


def cpu_training_allowed(env: Mapping[str, str]) -> bool:
    return env.get(ALLOW_CPU_ENV) == "1"


def _launch_options(trainer_cmd: Sequence[str]) -> list[str] | None:
    """The options between ``accelerate launch`` and the script, or None when accelerate is not used."""
    for index, part in enumerate(trainer_cmd[:-1]):
        if Path(part).name == "accelerate" and trainer_cmd[index + 1] == "launch":
            return list(trainer_cmd[index + 2 :])
    return None


def _option(options: Sequence[str], name: str) -> str | None:
    value: str | None = None
    for index, part in enumerate(options):
        if part == name and index + 1 < len(options):
            value = options[index + 1]
        elif part.startswith(name + "="):
            value = part.split("=", 1)[1]
    return value


def default_config_file(env: Mapping[str, str]) -> Path:
    """accelerate's default config location for this environment."""
    home = env.get("HOME") or str(Path.home())
    cache = env.get("XDG_CACHE_HOME") or f"{home}/.cache"
    hf_home = env.get("HF_HOME") or f"{cache}/huggingface"
    hf_home = hf_home.replace("~", home, 1) if hf_home.startswith("~") else hf_home
    return Path(hf_home) / "accelerate" / "default_config.yaml"


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def _broken(accelerate: bool, config_file: Path | None, env: Mapping[str, str], problem: str) -> LaunchPlan:
    """Settings accelerate itself would refuse: the launch fails, and says so."""
    return LaunchPlan(accelerate, config_file, None, env.get("CUDA_VISIBLE_DEVICES"), problem)


def _read_config(path: Path) -> dict[str, Any] | str:
    """accelerate's config file as a mapping, or why accelerate would refuse it."""
    try:
        text = path.read_text(encoding="utf-8")
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return f"accelerate config file {path} cannot be read: {exc}"
    if not isinstance(config, dict):
        return f"accelerate config file {path} is not a mapping"
    if "distributed_type" not in config:
        return f"accelerate config file {path} has no distributed_type (accelerate refuses it)"
    environment = config.get("compute_environment", "LOCAL_MACHINE")
    if environment != "LOCAL_MACHINE":
        return f"accelerate config file {path} is for {environment}, not this machine"
    return config


def launch_plan(trainer_cmd: Sequence[str], env: Mapping[str, str]) -> LaunchPlan:
    """How the trainer's accelerate will choose between CPU and GPU, from its command line and env."""
    options = _launch_options(trainer_cmd)
    if options is None:
        inherited = env.get("ACCELERATE_USE_CPU")
        if inherited is not None and inherited.strip().lower() not in _TRUE | _FALSE:
            return _broken(False, None, env, f"ACCELERATE_USE_CPU={inherited!r} is not a yes/no value")
        reason = f"ACCELERATE_USE_CPU={inherited} is set" if inherited and _truthy(inherited) else None
        return LaunchPlan(False, None, reason, env.get("CUDA_VISIBLE_DEVICES"))
    if "--cpu" in options:
        reason = "the launcher runs `accelerate launch --cpu`"
        return LaunchPlan(True, None, reason, env.get("CUDA_VISIBLE_DEVICES"))
    gpu_ids = _option(options, "--gpu_ids")
    named = _option(options, "--config_file")
    config_file: Path | None = Path(named) if named else default_config_file(env)
    reason: str | None = None
    if named and not Path(named).is_file():
        return _broken(True, Path(named), env, f"accelerate config file {named} does not exist")
    if config_file is not None and config_file.is_file():
        config = _read_config(config_file)
        if isinstance(config, str):
            return _broken(True, config_file, env, config)
        if _truthy(config.get("use_cpu", False)):
            reason = f"accelerate's config file {config_file} says use_cpu: true"
        if gpu_ids is None and config.get("gpu_ids") is not None:
            gpu_ids = str(config["gpu_ids"])
    else:
        config_file = None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if gpu_ids is not None and gpu_ids != "all":
        visible = gpu_ids
    return LaunchPlan(True, config_file, reason, visible)


def selected_gpus(gpus: Sequence[Gpu], visible: str | None) -> list[Gpu]:
    """The GPUs CUDA shows the process under ``CUDA_VISIBLE_DEVICES`` (indices or UUID prefixes; the
    list ends at the first entry that names no device, as CUDA reads it)."""
    if visible is None:
        return list(gpus)
    chosen: list[Gpu] = []
    for entry in (part.strip() for part in visible.split(",")):
        match: Gpu | None = None
        if entry.isdigit():
            match = next((g for g in gpus if g.index == int(entry)), None)
        elif entry.startswith(("GPU-", "MIG-")):
            match = next((g for g in gpus if g.uuid.startswith(entry)), None)
        if match is None or match in chosen:
            break
        chosen.append(match)
    return chosen


async def list_gpus(env: Mapping[str, str], limit_s: float = 20.0) -> tuple[list[Gpu], str | None]:
    """The pod's GPUs from ``nvidia-smi -L`` and, when there are none, why."""
    smi = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    if smi is None:
        return [], "nvidia-smi is not in the pod: no NVIDIA driver is visible"
    try:
        process = await asyncio.create_subprocess_exec(
            smi,
            "-L",
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return [], f"nvidia-smi could not run: {exc}"
    try:
        out, _ = await asyncio.wait_for(process.communicate(), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return [], f"nvidia-smi did not answer within {limit_s:.0f} s"
    text = out.decode("utf-8", "replace")
    gpus = [
        Gpu(int(m["index"]), m["name"], m["uuid"])
        for m in (_SMI_LINE.match(line.strip()) for line in text.splitlines())
        if m is not None
    ]
    if process.returncode != 0 or not gpus:
        first = text.strip().splitlines()[0] if text.strip() else f"exit code {process.returncode}"
        return [], f"nvidia-smi lists no GPU ({first[:200]})"
    return gpus, None


@dataclass(frozen=True)
class DeviceCheck:
    gpus: tuple[Gpu, ...]  # the GPUs the trainer will see
    problem: str | None  # why training would run on the CPU (None: it will use a GPU)


async def check_before_launch(trainer_cmd: Sequence[str], env: Mapping[str, str]) -> DeviceCheck:
    """Whether the trainer, launched with ``trainer_cmd`` in ``env``, will train on a CUDA GPU."""
    plan = launch_plan(trainer_cmd, env)
    if plan.problem is not None:
        return DeviceCheck((), plan.problem)
    if plan.use_cpu_reason is not None:
        return DeviceCheck((), f"{plan.use_cpu_reason}, so accelerate would train on the CPU")
    gpus, why_none = await list_gpus(env)
    if why_none is not None:
        return DeviceCheck(
            (), f"no CUDA GPU is visible in the pod ({why_none}), so training would run on the CPU"
        )
    visible = selected_gpus(gpus, plan.visible_devices)
    if not visible:
        names = ", ".join(f"{g.index}: {g.name}" for g in gpus)
        return DeviceCheck(
            (),
            f"CUDA_VISIBLE_DEVICES={plan.visible_devices!r} hides every GPU of the pod ({names}), "
            "so training would run on the CPU",
        )
    return DeviceCheck(tuple(visible), None)


def parse_device_line(line: str) -> str | None:
    """The device type in sd-scripts' ``accelerator device: cuda:0`` line, or None for any other line."""
    match = _DEVICE_LINE.match(line.strip())
    return match["device"] if match else None
