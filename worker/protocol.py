"""The contract between the bot and the in-pod worker (design §5). Standard library only.

The job spec travels in the pod's environment as base64 JSON (``ENV_JOB_SPEC``), so no quote or
newline can break RunPod's GraphQL; the per-job bearer token travels in ``ENV_WORKER_TOKEN``.

HTTP API of the worker (port ``WORKER_PORT``; every route but ``/health`` needs
``Authorization: Bearer <token>``; every call answers well under the proxy's 100 s limit):

- ``GET  /health``                    → ``{"ok": true, "protocol": PROTOCOL_VERSION}``
- ``GET  /status``                    → ``WorkerStatus`` as JSON
- ``PUT  /dataset``                   body: the snapshot zip; header ``X-Content-SHA256``; 201 when
                                        stored and verified, 400 on mismatch, 409 if already received
- ``GET  /files/{kind}/{name}``       kind ``samples`` or ``checkpoints``; honours ``Range: bytes=a-b``
                                        (206), header ``X-Content-SHA256`` carries the whole file's hash
- ``POST /cancel``                    stops training; state becomes ``cancelled``
- ``POST /ack``                       the bot has collected everything; the worker exits and the pod
                                        terminates itself

Work directory (the worker's ``--work-dir``, the cwd of sd-scripts). Every path in config.toml and
dataset.toml is relative to it, and each input has exactly one source:

- ``config.toml``, ``dataset.toml``, ``prompts.txt`` (``WORK_CONFIG_FILE``, ``WORK_DATASET_CONFIG_FILE``,
  ``WORK_PROMPTS_FILE``): written by the worker from the job spec's ``config_toml``, ``dataset_toml``
  and ``prompts_txt``. The spec is the only source of these three; the zip never carries them.
- ``models/<local_name>`` (``WORK_MODELS_DIR``): one file per ``BaseModelSource`` (the base model and,
  for Flux, each of ``extra`` in the order clip_l, t5xxl, ae), named by ``BaseModelSource.local_name``
  (the HF filename's last segment, or the URL's last path segment) and linked from the model cache.
  config.toml names them so: ``pretrained_model_name_or_path = "models/<base.local_name>"`` and, for
  Flux, ``clip_l``/``t5xxl``/``ae = "models/<extra[i].local_name>"``. The worker refuses a spec whose
  config names a ``models/`` file it will not fetch (before downloading anything).
- ``dataset/`` (``WORK_DATASET_DIR``): the snapshot zip (``PUT /dataset``) is unpacked *into* this
  folder, so the zip's entries are relative to it: ``full/0001.png`` + ``full/0001.txt`` (images,
  captions, masks-in-alpha), ``face_crops/...``; dataset.toml's ``image_dir = "dataset/full"``. An
  upload that leaves an ``image_dir`` of dataset.toml missing, or no image at all, is refused (400).
- ``output/`` (``WORK_OUTPUT_DIR``; config.toml's ``output_dir``, required): checkpoints, and
  ``output/sample/`` for samples, listed in ``/status`` and served by ``/files``;
  ``logs/`` (``WORK_LOGGING_DIR``; ``logging_dir``): sd-scripts' TensorBoard logs, not collected.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PROTOCOL_VERSION = 1
WORKER_PORT = 8000
ENV_JOB_SPEC = "LORAOPS_JOB_SPEC"
ENV_WORKER_TOKEN = "LORAOPS_WORKER_TOKEN"
SHA256_HEADER = "X-Content-SHA256"

ModelFamily = Literal["sd15", "sdxl", "flux"]
WorkerState = Literal[
    "starting",  # process up, fetching the base model
    "waiting_dataset",  # ready for PUT /dataset
    "training",
    "finished",  # sd-scripts exited 0 and produced its final checkpoint
    "failed",
    "cancelled",
    "acknowledged",  # the bot collected everything; the worker is exiting
]
# Layout of the worker's work directory (see the module docstring). Added compatibly: the protocol
# version is unchanged.
WORK_MODELS_DIR = "models"
WORK_DATASET_DIR = "dataset"
WORK_PROMPTS_FILE = "prompts.txt"
WORK_CONFIG_FILE = "config.toml"
WORK_DATASET_CONFIG_FILE = "dataset.toml"
WORK_OUTPUT_DIR = "output"
WORK_LOGGING_DIR = "logs"
# config.toml keys that name base-model files, in the order of [base_model, *base_model.extra].
MODEL_PATH_KEYS: dict[str, tuple[str, ...]] = {
    "sd15": ("pretrained_model_name_or_path",),
    "sdxl": ("pretrained_model_name_or_path",),
    "flux": ("pretrained_model_name_or_path", "clip_l", "t5xxl", "ae"),
}
TRAIN_SCRIPTS: dict[str, str] = {
    "sd15": "train_network.py",
    "sdxl": "sdxl_train_network.py",
    "flux": "flux_train_network.py",
}


@dataclass(frozen=True)
class BaseModelSource:
    """Where the pod gets the base checkpoint: a Hugging Face file or a plain URL."""

    kind: Literal["hf", "url"]
    repo: str = ""  # hf: "stabilityai/stable-diffusion-xl-base-1.0"
    filename: str = ""  # hf: "sd_xl_base_1.0.safetensors"
    url: str = ""  # url: https://...
    sha256: str | None = None
    # Flux needs more than one file (clip_l, t5xxl, ae); each is another source.
    extra: tuple[BaseModelSource, ...] = ()

    @property
    def local_name(self) -> str:
        """The file name under ``models/`` in the work dir (the HF filename, or the URL's last segment)."""
        if self.kind == "hf":
            return self.filename.rsplit("/", 1)[-1]
        return self.url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    @property
    def work_path(self) -> str:
        """Where this file is in the work dir, as config.toml names it: ``models/<local_name>``."""
        return f"{WORK_MODELS_DIR}/{self.local_name}"

    def files(self) -> tuple[BaseModelSource, ...]:
        """This source and its extras, in the order the worker fetches them."""
        return (self, *self.extra)


@dataclass(frozen=True)
class JobSpec:
    job_id: int
    model_family: ModelFamily
    base_model: BaseModelSource
    config_toml: str  # sd-scripts --config_file contents (paths relative to the worker's work dir)
    dataset_toml: str  # sd-scripts --dataset_config contents
    prompts_txt: str
    total_steps: int
    dataset_sha256: str  # the zip the bot will PUT
    deadline_unix: float  # hard deadline: the worker stops and the pod terminates itself past it
    protocol: int = PROTOCOL_VERSION
    # When the job's budget runs out at the pod's price (0: no limit): the worker stops and the pod
    # terminates itself then, whether or not the bot is there to do it.
    budget_stop_unix: float = 0.0
    # Once training has ended, a pod whose bot has not called for this many seconds terminates itself
    # (0: never): the bot is gone, and an idle pod bills until someone notices.
    unattended_stop_s: float = 0.0

    @property
    def train_script(self) -> str:
        return TRAIN_SCRIPTS[self.model_family]

    def to_env(self) -> str:
        """Base64 of compact JSON: only [A-Za-z0-9+/=], safe inside any GraphQL string."""
        return base64.b64encode(json.dumps(asdict(self), separators=(",", ":")).encode()).decode("ascii")

    @classmethod
    def from_env(cls, value: str) -> JobSpec:
        data = json.loads(base64.b64decode(value.encode("ascii"), validate=True))
        if data.get("protocol") != PROTOCOL_VERSION:
            raise ValueError(f"job spec protocol {data.get('protocol')} != {PROTOCOL_VERSION}")
        data["base_model"] = _source(data["base_model"])
        return cls(**data)


def _source(data: dict[str, Any]) -> BaseModelSource:
    extra = tuple(_source(item) for item in data.get("extra", ()))
    return BaseModelSource(**{**data, "extra": extra})


@dataclass(frozen=True)
class FileInfo:
    name: str
    step: int
    size: int
    sha256: str
    prompt_index: int | None = None  # samples only


@dataclass
class WorkerStatus:
    state: WorkerState
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    rate: float | None = None  # it/s
    eta_s: float | None = None
    epoch: int | None = None
    samples: list[FileInfo] = field(default_factory=list)
    checkpoints: list[FileInfo] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    error: str | None = None
    protocol: int = PROTOCOL_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerStatus:
        data = dict(data)
        data["samples"] = [FileInfo(**item) for item in data.get("samples", [])]
        data["checkpoints"] = [FileInfo(**item) for item in data.get("checkpoints", [])]
        return cls(**data)
