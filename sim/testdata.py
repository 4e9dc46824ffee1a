"""Where the shared test photos are: ``../shared/testdata/faces`` beside the checkout; and the small run
the sd-scripts stand-in trains in the worker and training tests (a dataset snapshot and its configs).

CI lays a copy of ``shared/`` beside the clone; developers have it beside the work tree. One place says
so, for the tests, the sandbox and the benchmarks.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TESTDATA_FACES = SHARED_DIR / "testdata" / "faces"


def testdata_faces() -> Path:
    return TESTDATA_FACES


# A small sd15 LoRA run as the bot's planner would render it; ``{steps}`` and ``{save_every}`` to fill.
STANDIN_CONFIG_TOML = """\
[model_arguments]
pretrained_model_name_or_path = "models/base.safetensors"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 8
network_alpha = 4.0
[training_arguments]
output_dir = "output"
output_name = "elena"
max_train_steps = {steps}
save_every_n_steps = {save_every}
sample_every_n_steps = 4
sample_prompts = "prompts.txt"
mixed_precision = "bf16"
save_precision = "fp16"
seed = 42
"""
STANDIN_DATASET_TOML = """\
[general]
caption_extension = ".txt"
[[datasets]]
resolution = 512
batch_size = 1
  [[datasets.subsets]]
  image_dir = "dataset/img"
  num_repeats = 2
"""


def snapshot_zip(*, with_images: bool = True) -> bytes:
    """A dataset snapshot like the bot's: ``img/`` with three real photos and their .txt captions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        photos = sorted((TESTDATA_FACES / "obama").glob("*.jpg"))[:3] if with_images else []
        for index, photo in enumerate(photos):
            archive.write(photo, f"img/{index:03d}.jpg")
            archive.writestr(f"img/{index:03d}.txt", "ohwx man, photo")
        archive.writestr("README.txt", "loraops snapshot")
    return buffer.getvalue()
