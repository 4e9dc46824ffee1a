"""Worker settings: command-line options over environment variables over defaults.

Environment (set by RunPod, by the bot's pod spec, or by the local simulator):
- ``LORAOPS_JOB_SPEC`` (base64 JSON JobSpec), ``LORAOPS_WORKER_TOKEN`` (bearer token): required
- ``LORAOPS_WORKER_HOST`` (0.0.0.0), ``LORAOPS_WORKER_PORT`` (8000; 0 picks a free port),
  ``LORAOPS_WORKER_PORT_FILE`` (write the bound port there; for local runs with port 0)
- ``LORAOPS_WORK_DIR`` (/loraops/job): cwd of sd-scripts; config.toml, dataset/, models/, output
- ``LORAOPS_MODEL_CACHE_DIR``: base-model cache; default /workspace/loraops-models when /workspace
  (the network or pod volume) exists, else <work dir>/models
- ``LORAOPS_HF_BASE_URL`` (https://huggingface.co), ``HF_TOKEN``
- ``LORAOPS_TRAINER_CMD`` (``accelerate launch --config_file /etc/loraops/accelerate.yaml
  --num_cpu_threads_per_process 1``): the launcher the script path and its arguments are appended to;
  ``LORAOPS_SD_SCRIPTS_DIR`` (/opt/sd-scripts)
- ``LORAOPS_TEST_ONLY_ALLOW_CPU_TRAINING=1``: tests only; training on the CPU is allowed (worker/device.py)
- ``RUNPOD_POD_ID``, ``RUNPOD_API_KEY`` (pod-scoped), ``RUNPOD_API_BASE_URL`` (read by the SDK)
- ``LORAOPS_SCAN_SECONDS`` (1.0): how often the output directory is scanned while training
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import ENV_JOB_SPEC, ENV_WORKER_TOKEN, WORKER_PORT, JobSpec

# The image's accelerate settings (worker/accelerate_config.yaml, copied there by worker/Dockerfile): named
# explicitly so no default config file left in the image can decide CPU or GPU.
ACCELERATE_CONFIG_PATH = "/etc/loraops/accelerate.yaml"
DEFAULT_TRAINER_CMD = (
    f"accelerate launch --config_file {ACCELERATE_CONFIG_PATH} --num_cpu_threads_per_process 1"
)


class SettingsError(Exception):
    """A missing or invalid setting: one line for the pod log, no traceback."""


@dataclass
class WorkerSettings:
    spec: JobSpec
    token: str = field(repr=False)
    host: str = "0.0.0.0"
    port: int = WORKER_PORT
    port_file: Path | None = None
    work_dir: Path = Path("/loraops/job")
    cache_dir: Path = Path("/loraops/job/models")
    hf_base_url: str = "https://huggingface.co"
    hf_token: str | None = field(default=None, repr=False)
    trainer_cmd: list[str] = field(default_factory=lambda: shlex.split(DEFAULT_TRAINER_CMD))
    sd_scripts_dir: str = "/opt/sd-scripts"
    pod_id: str | None = None
    runpod_api_key: str | None = field(default=None, repr=False)
    scan_seconds: float = 1.0
    cancel_grace_seconds: float = 10.0

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.hf_token, self.runpod_api_key) if s]

    @classmethod
    def from_env(
        cls,
        env: dict[str, str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        work_dir: str | None = None,
        cache_dir: str | None = None,
        port_file: str | None = None,
    ) -> WorkerSettings:
        env = dict(os.environ if env is None else env)
        raw_spec = env.get(ENV_JOB_SPEC, "")
        token = env.get(ENV_WORKER_TOKEN, "")
        if not raw_spec:
            raise SettingsError(f"{ENV_JOB_SPEC} is not set (the job spec, base64 JSON)")
        if len(token) < 16:
            raise SettingsError(f"{ENV_WORKER_TOKEN} is missing or shorter than 16 characters")
        try:
            spec = JobSpec.from_env(raw_spec)
        except (ValueError, TypeError, KeyError) as exc:
            raise SettingsError(f"{ENV_JOB_SPEC} is not a valid job spec: {exc}") from None
        work = Path(work_dir or env.get("LORAOPS_WORK_DIR") or "/loraops/job")
        cache = cache_dir or env.get("LORAOPS_MODEL_CACHE_DIR")
        if not cache:
            cache = "/workspace/loraops-models" if Path("/workspace").is_dir() else str(work / "models")
        try:
            bound_port = port if port is not None else int(env.get("LORAOPS_WORKER_PORT") or WORKER_PORT)
            scan = float(env.get("LORAOPS_SCAN_SECONDS") or 1.0)
        except ValueError as exc:
            raise SettingsError(f"invalid number in the environment: {exc}") from None
        port_path = port_file or env.get("LORAOPS_WORKER_PORT_FILE")
        return cls(
            spec=spec,
            token=token,
            host=host or env.get("LORAOPS_WORKER_HOST") or "0.0.0.0",
            port=bound_port,
            port_file=Path(port_path) if port_path else None,
            work_dir=work,
            cache_dir=Path(cache),
            hf_base_url=env.get("LORAOPS_HF_BASE_URL") or "https://huggingface.co",
            hf_token=env.get("HF_TOKEN") or None,
            trainer_cmd=shlex.split(env.get("LORAOPS_TRAINER_CMD") or DEFAULT_TRAINER_CMD),
            sd_scripts_dir=env.get("LORAOPS_SD_SCRIPTS_DIR") or "/opt/sd-scripts",
            pod_id=env.get("RUNPOD_POD_ID") or None,
            runpod_api_key=env.get("RUNPOD_API_KEY") or None,
            scan_seconds=scan,
        )
