"""The NVIDIA driver of a simulated pod: ``nvidia-smi`` on its PATH, listing the pod's GPUs.

On RunPod the NVIDIA container runtime puts the driver's tools (``nvidia-smi``) and the devices into a
GPU pod and names the devices in ``NVIDIA_VISIBLE_DEVICES``; a pod without a working driver has no
``nvidia-smi`` (or one that lists nothing). The simulator gives every pod process the same: a small
``nvidia-smi`` that answers ``-L`` like the real one (``GPU 0: NVIDIA RTX A5000 (UUID: GPU-…)``), so
the worker's pre-launch check and the sd-scripts stand-in (which asks it what torch would see) read the
same hardware. No GPU list means no driver at all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_SMI = """#!/bin/sh
# nvidia-smi of a simulated pod (loraops sim/gpu.py): only the GPU list.
case "$1" in
  -L|--list-gpus)
    cat <<'EOF'
{listing}
EOF
    ;;
  *)
    echo "nvidia-smi (simulated): only -L is implemented" >&2
    exit 2
    ;;
esac
"""


def gpu_uuid(seed: str, index: int) -> str:
    """A stable UUID in nvidia-smi's ``GPU-8-4-4-4-12`` form."""
    h = hashlib.sha256(f"{seed}/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def install_driver(
    bin_dir: Path, gpu_names: Sequence[str], *, seed: str = "sim", path: str | None = None
) -> dict[str, str]:
    """Writes ``bin_dir/nvidia-smi`` listing ``gpu_names``; returns the variables a process needs:
    ``PATH`` with ``bin_dir`` before ``path`` (default: this process's PATH), ``NVIDIA_VISIBLE_DEVICES``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    uuids = [gpu_uuid(seed, index) for index in range(len(gpu_names))]
    listing = "\n".join(f"GPU {index}: {name} (UUID: {uuids[index]})" for index, name in enumerate(gpu_names))
    smi = bin_dir / "nvidia-smi"
    smi.write_text(_SMI.format(listing=listing))
    smi.chmod(0o755)
    return {
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", os.defpath) if path is None else path]),
        "NVIDIA_VISIBLE_DEVICES": ",".join(uuids),
    }


def _uuid_prefix(entry: str, uuid: str) -> bool:
    return entry.startswith("GPU-") and uuid.startswith(entry)


def visible_cuda_devices(env: Mapping[str, str]) -> list[str]:
    """What torch would count as CUDA devices in ``env``: the driver's GPUs (``nvidia-smi -L``) as
    selected by ``CUDA_VISIBLE_DEVICES`` (indices or UUID prefixes, read up to the first entry that names
    no device). The stand-in's ``torch.cuda.is_available()``."""
    smi = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=20, env=dict(env), check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus: list[tuple[str, str]] = []  # (index, uuid)
    for line in out.splitlines():
        head, _, rest = line.partition(": ")
        if head.startswith("GPU ") and "(UUID: " in rest:
            gpus.append((head.removeprefix("GPU "), rest.rsplit("(UUID: ", 1)[1].rstrip(")")))
    selector = env.get("CUDA_VISIBLE_DEVICES")
    if selector is None:
        return [uuid for _, uuid in gpus]
    chosen: list[str] = []
    for entry in (part.strip() for part in selector.split(",")):
        found = next(
            (uuid for index, uuid in gpus if entry in (index, uuid) or _uuid_prefix(entry, uuid)), None
        )
        if found is None or found in chosen:
            break
        chosen.append(found)
    return chosen
