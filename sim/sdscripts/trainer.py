"""The stand-in training run: same checks, console output, files and failure modes as sd-scripts.

Order of events follows ``train_network.py::NetworkTrainer.train`` at v0.10.1 (see
/work/shared/reference/sd_scripts.md §2–§3): config checks and dataset preparation (all errors come
before "running training"), the running-training block on stdout, the ``steps`` tqdm bar on stderr,
per-step sampling before the step checkpoint, epoch checkpoints that never cover the last epoch, the
final ``{output_name}.safetensors`` and ``model saved.``.

Knobs (environment):
- ``SDSTANDIN_STEP_SECONDS``  seconds per optimizer step (default 0.02)
- ``SDSTANDIN_NAN_AT_STEP``   the loss is NaN from this step on (``avr_loss=nan`` until the end, black
                              samples, NaN weights; the run does not stop, as the real one does not)
- ``SDSTANDIN_OOM_AT_STEP``   CUDA out-of-memory traceback right after this step's progress update, exit 1
- ``SDSTANDIN_KILL_AT_STEP``  SIGKILL itself at this step (what the host OOM killer does)
- ``SDSTANDIN_NO_IMAGES``     ignore every image: "No data found" and exit 0 with no files
- ``SDSTANDIN_SKIP_FINAL_SAVE`` finish the loop but write no final checkpoint, exit 0
- ``SDSTANDIN_FACE_FROM``     an image of another person that early samples show instead of noise
- ``SDSTANDIN_SAMPLES``       how samples evolve: learning | failing | studio | memorising (sample_modes.py)
- ``SDSTANDIN_NAN_IN_CACHE``  ``latents`` or ``text_encoder``: the VAE / text encoder gives NaN (as an fp16
                              SDXL VAE does). v0.10.1 checks no cached value for NaN, so the run does not
                              stop there: the loss is NaN from the first step (``avr_loss=nan``)
- ``SDSTANDIN_REPORT``        path: a JSON report (ignored config keys, resolved values) written at start
- ``SDSTANDIN_CUDA_BROKEN``   torch sees no CUDA device although the driver lists one (``accelerator
                              device: cpu``); see ``sim/sdscripts/accelerate.py`` for how the device is chosen
- ``SDSTANDIN_CPU_SLOWDOWN``  how much slower a step is on the CPU (default 50)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import toml

from . import config as cfg
from . import safetensors_io
from .accelerate import accelerator_device
from .argspec import build_parser

_KNOWN_NETWORK_MODULES = {
    "networks.lora",
    "networks.lora_flux",
    "networks.dylora",
    "networks.oft",
    "networks.lora_fa",
}
_BASE_MODEL_VERSION = {
    "train_network.py": "sd_v1",
    "sdxl_train_network.py": "sdxl_base_v1-0",
    "flux_train_network.py": "flux1",
}
_ARCHITECTURE = {
    "train_network.py": "stable-diffusion-v1/lora",
    "sdxl_train_network.py": "stable-diffusion-xl-v1-base/lora",
    "flux_train_network.py": "flux-1-dev/lora",
}
_IMPLEMENTATION = {
    "train_network.py": "diffusers",
    "sdxl_train_network.py": "https://github.com/Stability-AI/generative-models",
    "flux_train_network.py": "https://github.com/black-forest-labs/flux",
}
_OOM_TEXT = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
    "23.55 GiB of which 3.06 MiB is free. Including non-PyTorch memory, this process has 23.53 GiB memory "
    "in use. Of the allocated memory 22.90 GiB is allocated by PyTorch, and 194.87 MiB is reserved by "
    "PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
    "Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


class Console:
    """sd-scripts' two log paths: Rich on stderr (default) or plain ``%(message)s`` on stdout."""

    def __init__(self) -> None:
        self.simple = False
        self._last_time = ""

    def log(self, message: str, level: str = "INFO", where: str = "train_network.py") -> None:
        if self.simple:
            print(message, flush=True)
            return
        # Rich leaves the time column blank when it repeats the previous record's second.
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        shown = now if now != self._last_time else " " * len(now)
        self._last_time = now
        sys.stderr.write(f"{shown} {level:<8} {message}    {where}\n")
        sys.stderr.flush()

    @staticmethod
    def print(*parts: object) -> None:
        """accelerator.print / print: stdout."""
        print(*parts, flush=True)


def _crash(exc: BaseException, where: str) -> int:
    """An uncaught exception: Python's traceback on stderr, exit 1."""
    sys.stderr.write("Traceback (most recent call last):\n")
    sys.stderr.write(f'  File "{where}", line 1, in <module>\n    trainer.train(args)\n')
    sys.stderr.write(
        f"{type(exc).__module__ + '.' if type(exc).__module__ != 'builtins' else ''}"
        f"{type(exc).__qualname__}: {exc}\n"
    )
    sys.stderr.flush()
    return 1


def _parse_prompts(path: str) -> list[dict[str, Any]]:
    """train_util.load_prompts + line_to_prompt_dict (the options the stand-in uses)."""
    import re

    if path.endswith(".txt"):
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        raw: list[Any] = [line.strip() for line in lines if line.strip() and line[0] != "#"]
    elif path.endswith(".toml"):
        data = toml.loads(Path(path).read_text(encoding="utf-8"))  # toml 0.10.2, as load_prompts reads it
        raw = [dict(**data["prompt"], **subset) for subset in data["prompt"]["subset"]]
    elif path.endswith(".json"):
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    else:
        raw = []
    prompts: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, dict):
            prompts.append(item)
            continue
        pieces = item.split(" --")
        entry: dict[str, Any] = {"prompt": pieces[0]}
        for piece in pieces:
            for pattern, key, conv in (
                (r"w (\d+)", "width", int),
                (r"h (\d+)", "height", int),
                (r"d (\d+)", "seed", int),
                (r"s (\d+)", "sample_steps", lambda v: max(1, min(1000, int(v)))),
                (r"l ([\d\.]+)", "scale", float),
                (r"g ([\d\.]+)", "guidance_scale", float),
                (r"n (.+)", "negative_prompt", str),
                (r"ss (.+)", "sample_sampler", str),
            ):
                match = re.match(pattern, piece, re.IGNORECASE)
                if match:
                    entry[key] = conv(match.group(1))
                    break
        prompts.append(entry)
    return prompts


class Run:
    """One training run of ``script`` with parsed ``args``."""

    def __init__(self, script: str, args: argparse.Namespace, console: Console) -> None:
        self.script = script
        self.args = args
        self.console = console
        self.flux = script == "flux_train_network.py"
        self.sdxl = script == "sdxl_train_network.py"
        self.step_seconds = float(os.environ.get("SDSTANDIN_STEP_SECONDS", "0.02"))
        self.nan_at = _env_int("SDSTANDIN_NAN_AT_STEP")
        self.oom_at = _env_int("SDSTANDIN_OOM_AT_STEP")
        self.kill_at = _env_int("SDSTANDIN_KILL_AT_STEP")
        face_from = os.environ.get("SDSTANDIN_FACE_FROM")
        self.face_from = Path(face_from) if face_from else None
        self.datasets: list[cfg.Dataset] = []
        self.is_nan = False
        self.session_id = random.randint(0, 2**32)
        self.started_at = time.time()

    # ---- set-up ----

    def prepare_args(self) -> None:
        """verify_training_args + prepare_dataset_args: the checks that run before anything loads."""
        args = self.args
        if args.cache_latents_to_disk and not args.cache_latents:
            args.cache_latents = True
            self.console.log(
                "cache_latents_to_disk is enabled, so cache_latents is also enabled / "
                "cache_latents_to_diskが有効なため、cache_latentsを有効にします",
                "WARNING",
                "train_util.py",
            )
        if args.caption_extention is not None:  # prepare_dataset_args' backward compatibility
            args.caption_extension, args.caption_extention = args.caption_extention, None
        if args.resolution is not None:
            # The value comes unconverted from a config file: an int crashes here exactly like the real one.
            args.resolution = tuple(int(r) for r in args.resolution.split(","))
            if len(args.resolution) == 1:
                args.resolution = (args.resolution[0], args.resolution[0])
        if args.face_crop_aug_range is not None:
            crop_range = tuple(float(r) for r in args.face_crop_aug_range.split(","))
            args.face_crop_aug_range = crop_range
            if len(crop_range) != 2 or crop_range[0] > crop_range[1]:
                raise AssertionError(
                    "face_crop_aug_range must be two floats / "
                    f"face_crop_aug_rangeは'下限,上限'で指定してください: {args.face_crop_aug_range}"
                )
        if args.seed is None:
            args.seed = random.randint(0, 2**32)

    def prepare_dataset(self) -> None:
        args = self.args
        if args.dataset_config is not None:
            self.console.log(f"Loading dataset config from {args.dataset_config}")
            try:
                user_config = cfg.load_dataset_config(str(args.dataset_config))
            except toml.TomlDecodeError:
                self.console.log(
                    "Error on parsing TOML config file. Please check the format. / TOML 形式の設定ファイルの"
                    f"読み込みに失敗しました。文法が正しいか確認してください。: {args.dataset_config}",
                    "ERROR",
                    "config_util.py",
                )
                raise
            try:
                # ConfigSanitizer(True, True, args.masked_loss, True): the mask-directory schema exists
                # only with --masked_loss.
                cfg.validate_dataset_config(user_config, support_controlnet=bool(args.masked_loss))
            except cfg.DatasetConfigInvalid:
                self.console.log(
                    "Invalid user config / ユーザ設定の形式が正しくないようです", "ERROR", "config_util.py"
                )
                raise
        elif args.train_data_dir is not None:
            self.console.log("Using DreamBooth method.")
            user_config = {"datasets": [{"subsets": _subsets_from_dirs(args.train_data_dir)}]}
        else:
            user_config = {"datasets": [{"subsets": []}]}
        self._check_argparse_types()
        self.datasets = cfg.resolve_datasets(user_config, args)
        no_images = os.environ.get("SDSTANDIN_NO_IMAGES") == "1"
        for index, dataset in enumerate(self.datasets):
            if dataset.params["enable_bucket"]:
                self._adjust_bucket_reso(dataset)
            self.console.log("prepare images.", where="train_util.py")
            for subset in dataset.subsets:
                if subset.num_repeats < 1:
                    self.console.log(
                        f"ignore subset with image_dir='{subset.image_dir}': num_repeats is less than 1",
                        "WARNING",
                        "train_util.py",
                    )
                    continue
                if not os.path.isdir(subset.image_dir):
                    self.console.log(f"not directory: {subset.image_dir}", "WARNING", "train_util.py")
                else:
                    subset.images = [] if no_images else cfg.images_in(subset.image_dir)
                    self._sizes_from_cache_files(len(subset.images))
                    self.console.log(
                        f"found directory {subset.image_dir} contains {len(subset.images)} image files",
                        where="train_util.py",
                    )
                    _bar(len(subset.images), "read caption")
                    subset.missing_captions = sum(
                        1
                        for image in subset.images
                        if not image.with_suffix(subset.caption_extension).is_file()
                    )
                    if subset.missing_captions:
                        self.console.log(
                            f"No caption file found for {subset.missing_captions} images. Training will "
                            "continue without captions for these images. If class token exists, it will be "
                            "used."
                            " / "
                            f"{subset.missing_captions}枚の画像にキャプションファイルが見つかりませんでした。",
                            "WARNING",
                            "train_util.py",
                        )
                if not subset.images:
                    self.console.log(
                        f"ignore subset with image_dir='{subset.image_dir}': no images found / "
                        "画像が見つからないためサブセットを無視します",
                        "WARNING",
                        "train_util.py",
                    )
            self.console.log(f"{dataset.num_train_images} train images with repeats.", where="train_util.py")
            self.console.log(f"{dataset.num_reg_images} reg images with repeats.", where="train_util.py")
            if dataset.num_reg_images == 0:
                self.console.log(
                    "no regularization images / 正則化画像が見つかりませんでした", "WARNING", "train_util.py"
                )
            self.console.log(self._describe(index, dataset), where="config_util.py")
        for index, dataset in enumerate(self.datasets):
            # BaseDataset.make_buckets, after all datasets are described.
            self.console.log(f"[Prepare dataset {index}]", where="config_util.py")
            self.console.log("loading image sizes.", where="train_util.py")
            _bar(len({image for subset in dataset.subsets for image in subset.images}))
            bucketed = dataset.params["enable_bucket"]
            self.console.log("make buckets" if bucketed else "prepare dataset", where="train_util.py")

    def _sizes_from_cache_files(self, images: int) -> None:
        """load_dreambooth_dir with a latents caching strategy set (always, for these scripts): image
        sizes from the names of cached latents; the stand-in never leaves cache files, so none."""
        self.console.log("get image size from name of cache files", where="train_util.py")
        _bar(images)
        self.console.log(f"set image size from cache files: 0/{images}", where="train_util.py")

    def _adjust_bucket_reso(self, dataset: cfg.Dataset) -> None:
        """BaseDataset.adjust_min_max_bucket_reso_by_steps, at dataset construction (before the image
        scan): min rounded down and max rounded up to the bucket step, then both asserted against the
        resolution whatever ``bucket_no_upscale`` says."""
        params, step = dataset.params, dataset.params["bucket_reso_steps"]
        low, high = params["min_bucket_reso"], params["max_bucket_reso"]
        if low % step != 0:
            adjusted = low - low % step
            self.console.log(
                "min_bucket_reso is adjusted to be multiple of bucket_reso_steps / "
                f"min_bucket_resoがbucket_reso_stepsの倍数になるように調整されました: {low} -> {adjusted}",
                "WARNING",
                "train_util.py",
            )
            params["min_bucket_reso"] = low = adjusted
        if high % step != 0:
            adjusted = high + step - high % step
            self.console.log(
                "max_bucket_reso is adjusted to be multiple of bucket_reso_steps / "
                f"max_bucket_resoがbucket_reso_stepsの倍数になるように調整されました: {high} -> {adjusted}",
                "WARNING",
                "train_util.py",
            )
            params["max_bucket_reso"] = high = adjusted
        if min(dataset.resolution) < low:
            raise AssertionError(
                "min_bucket_reso must be equal or less than resolution / "
                "min_bucket_resoは最小解像度より大きくできません。解像度を大きくするかmin_bucket_resoを小さくしてください"
            )
        if max(dataset.resolution) > high:
            raise AssertionError(
                "max_bucket_reso must be equal or greater than resolution / "
                "max_bucket_resoは最大解像度より小さくできません。解像度を小さくするかmin_bucket_resoを大きくしてください"
            )

    def _check_argparse_types(self) -> None:
        """config_util's argparse validator: every namespace value the dataset schema knows, typed."""
        try:
            cfg.check_argparse_namespace(self.args)
        except cfg.DatasetConfigInvalid:
            self.console.log(
                "Invalid cmdline parsed arguments. This should be a bug. / "
                "コマンドラインのパース結果が正しくないようです。プログラムのバグの可能性が高いです。",
                "ERROR",
                "config_util.py",
            )
            raise

    @staticmethod
    def _describe(index: int, dataset: cfg.Dataset) -> str:
        lines = [
            f"[Dataset {index}]",
            f"  batch_size: {dataset.batch_size}",
            f"  resolution: {dataset.resolution}",
            f"  enable_bucket: {dataset.params['enable_bucket']}",
        ]
        for sub_index, subset in enumerate(dataset.subsets):
            lines += [
                f"  [Subset {sub_index} of Dataset {index}]",
                f'    image_dir: "{subset.image_dir}"',
                f"    image_count: {len(subset.images)}",
                f"    num_repeats: {subset.num_repeats}",
                f"    is_reg: {subset.is_reg}",
                f"    class_tokens: {subset.class_tokens}",
                f"    caption_extension: {subset.caption_extension}",
            ]
        return "\n".join(lines)

    def assert_args(self) -> None:
        """train()'s latent-cache assert, then the script's assert_extra_args, before any model loads."""
        args = self.args
        if args.cache_latents and not all(
            not (s.params["color_aug"] or s.params["random_crop"]) for d in self.datasets for s in d.subsets
        ):
            raise AssertionError(
                "when caching latents, either color_aug or random_crop cannot be used / "
                "latentをキャッシュするときはcolor_augとrandom_cropは使えません"
            )
        if self.sdxl:
            self._assert_sdxl()
        elif self.flux:
            self._verify_bucket_reso_steps(64)  # FluxNetworkTrainer calls NetworkTrainer's first
            self._assert_flux()
        else:
            self._verify_bucket_reso_steps(64)

    def _assert_sdxl(self) -> None:
        """sdxl_train_network.py assert_extra_args (with sdxl_train_util.verify_sdxl_training_args)."""
        args = self.args
        if args.v2:
            raise AssertionError(
                "v2 cannot be enabled in SDXL training / SDXL学習ではv2を有効にすることはできません"
            )
        if args.clip_skip is not None:
            self.console.log(
                "clip_skip will be unexpected / SDXL学習ではclip_skipは動作しません",
                "WARNING",
                "sdxl_train_util.py",
            )
        if args.cache_text_encoder_outputs_to_disk and not args.cache_text_encoder_outputs:
            args.cache_text_encoder_outputs = True
            self.console.log(
                "cache_text_encoder_outputs is enabled because cache_text_encoder_outputs_to_disk is enabled"
                " / "
                "cache_text_encoder_outputs_to_diskが有効になっているためcache_text_encoder_outputsが有効になりました",
                "WARNING",
                "sdxl_train_util.py",
            )
        if args.cache_text_encoder_outputs:
            self._assert_text_encoder_output_cacheable()
        if args.cache_text_encoder_outputs and not args.network_train_unet_only:
            raise AssertionError(
                "network for Text Encoder cannot be trained with caching Text Encoder outputs / "
                "Text Encoderの出力をキャッシュしながらText Encoderのネットワークを学習することはできません"
            )
        self._verify_bucket_reso_steps(32)

    def _assert_flux(self) -> None:
        """flux_train_network.py assert_extra_args, after NetworkTrainer's."""
        args = self.args
        if args.model_type == "chroma" and not args.apply_t5_attn_mask:
            raise AssertionError(
                "apply_t5_attn_mask must be True for Chroma / "
                "Chromaではapply_t5_attn_maskを指定する必要があります"
            )
        if args.fp8_base_unet:
            args.fp8_base = True
        if args.cache_text_encoder_outputs_to_disk and not args.cache_text_encoder_outputs:
            self.console.log(
                "cache_text_encoder_outputs_to_disk is enabled, so cache_text_encoder_outputs is also enabled"
                " / "
                "cache_text_encoder_outputs_to_diskが有効になっているため、cache_text_encoder_outputsも有効になります",
                "WARNING",
                "flux_train_network.py",
            )
            args.cache_text_encoder_outputs = True
        if args.cache_text_encoder_outputs:
            self._assert_text_encoder_output_cacheable()
        if args.blocks_to_swap and args.cpu_offload_checkpointing:
            raise AssertionError(
                "blocks_to_swap is not supported with cpu_offload_checkpointing / "
                "blocks_to_swapはcpu_offload_checkpointingと併用できません"
            )
        self._verify_bucket_reso_steps(32)

    def _assert_text_encoder_output_cacheable(self) -> None:
        """DatasetGroup.is_text_encoder_output_cacheable() (SDXL and Flux only; no dropout support)."""
        for dataset in self.datasets:
            for subset in dataset.subsets:
                p = subset.params
                if (
                    p["caption_dropout_rate"] > 0
                    or p["shuffle_caption"]
                    or p["token_warmup_step"] > 0
                    or p["caption_tag_dropout_rate"] > 0
                ):
                    raise AssertionError(
                        "when caching Text Encoder output, either caption_dropout_rate, shuffle_caption, "
                        "token_warmup_step or caption_tag_dropout_rate cannot be used / "
                        "Text Encoderの出力をキャッシュするときはcaption_dropout_rate, shuffle_caption, "
                        "token_warmup_step, caption_tag_dropout_rateは使えません"
                    )

    def _verify_bucket_reso_steps(self, min_steps: int) -> None:
        """BaseDataset.verify_bucket_reso_steps: bucket_reso_steps is None (not checked) without buckets."""
        for dataset in self.datasets:
            if not dataset.params["enable_bucket"]:
                continue
            steps = dataset.params["bucket_reso_steps"]
            if steps % min_steps != 0:
                raise AssertionError(
                    f"bucket_reso_steps is {steps}. it must be divisible by {min_steps}.\n"
                    f"bucket_reso_stepsが{steps}です。{min_steps}で割り切れる必要があります"
                )

    def load_models(self) -> None:
        """Model loading: only checks that the files the config names exist."""
        args = self.args
        self.console.log("preparing accelerator")
        device = accelerator_device()  # ValueError for a bad ACCELERATE_USE_CPU, as accelerate raises
        self.console.print("accelerator device:", device)
        if device == "cpu":
            # What a GPU run does in seconds takes minutes on a CPU; the run goes on all the same.
            self.step_seconds *= float(os.environ.get("SDSTANDIN_CPU_SLOWDOWN", "50"))
        model = args.pretrained_model_name_or_path
        if model is None:
            raise TypeError("expected str, bytes or os.PathLike object, not NoneType")
        files = [("pretrained_model_name_or_path", model)]
        if self.flux:
            files += [(name, getattr(args, name)) for name in ("ae", "t5xxl")]
            if args.model_type != "chroma":
                files.append(("clip_l", args.clip_l))
        for name, value in files:
            if value is None:
                raise TypeError(f"expected str, bytes or os.PathLike object, not NoneType ({name})")
            looks_like_file = value.endswith(
                (".safetensors", ".ckpt", ".sft", ".pt", ".bin")
            ) or value.startswith("/")
            if looks_like_file and not os.path.exists(value):
                raise FileNotFoundError(f"[Errno 2] No such file or directory: '{value}'")
        if args.network_module is None:
            raise AttributeError("'NoneType' object has no attribute 'startswith'")
        if args.network_module not in _KNOWN_NETWORK_MODULES:
            raise ModuleNotFoundError(f"No module named '{args.network_module}'")
        if args.cache_latents:
            for index, dataset in enumerate(self.datasets):
                self.console.log(f"[Dataset {index}]", where="train_util.py")
                self.console.log("caching latents with caching strategy.", where="train_util.py")
                self.console.log("caching latents...", where="train_util.py")
                _bar(len({image for subset in dataset.subsets for image in subset.images}))
        if (self.sdxl or self.flux) and args.cache_text_encoder_outputs:
            self.console.log("caching Text Encoder outputs with caching strategy.", where="train_util.py")
        if os.environ.get("SDSTANDIN_NAN_IN_CACHE", "") in ("latents", "text_encoder"):
            # v0.10.1's caching strategies (strategy_base._default_cache_batch_latents and the SDXL/Flux
            # text-encoder ones) never look for NaN; only the legacy train_util.cache_batch_latents did,
            # and the LoRA scripts no longer call it. NaN cached values train on: NaN loss from step 1.
            self.is_nan = True
        self.console.print("import network module:", args.network_module)
        dim = args.network_dim if args.network_dim is not None else 4
        self.console.log(
            f"create LoRA network. base dim (rank): {dim}, alpha: {args.network_alpha}", where="lora.py"
        )
        self.console.log("create LoRA for U-Net: 722 modules.", where="lora.py")
        self.console.print("prepare optimizer, data loader etc.")

    # ---- training ----

    def batches_per_epoch(self) -> int:
        # One bucket per dataset (the stand-in does not bucket); reg images double the batches.
        total = 0
        for dataset in self.datasets:
            train = dataset.num_train_images
            doubled = 2 * train if dataset.num_reg_images else train
            total += math.ceil(doubled / dataset.batch_size)
        return total

    def train(self) -> int:
        args = self.args
        batches = self.batches_per_epoch()
        accumulation = args.gradient_accumulation_steps
        if args.max_train_epochs is not None:
            args.max_train_steps = args.max_train_epochs * math.ceil(batches / accumulation)
            self.console.print(
                f"override steps. steps for {args.max_train_epochs} epochs is / "
                "指定エポックまでのステップ数: "
                f"{args.max_train_steps}"
            )
        if args.lr_scheduler in ("constant", "adafactor") and args.lr_warmup_steps:
            raise ValueError("SchedulerType.CONSTANT does not require `num_warmup_steps`. Set None or 0.")
        per_epoch = math.ceil(batches / accumulation)
        num_epochs = math.ceil(args.max_train_steps / per_epoch)
        self.num_epochs = num_epochs
        self.console.print("running training / 学習開始")
        num_train = sum(d.num_train_images for d in self.datasets)
        self.console.print(f"  num train images * repeats / 学習画像の数×繰り返し回数: {num_train}")
        self.console.print("  num validation images * repeats / 学習画像の数×繰り返し回数: 0")
        self.console.print(
            f"  num reg images / 正則化画像の数: {sum(d.num_reg_images for d in self.datasets)}"
        )
        self.console.print(f"  num batches per epoch / 1epochのバッチ数: {batches}")
        self.console.print(f"  num epochs / epoch数: {num_epochs}")
        self.console.print(
            f"  batch size per device / バッチサイズ: {', '.join(str(d.batch_size) for d in self.datasets)}"
        )
        self.console.print(f"  gradient accumulation steps / 勾配を合計するステップ数 = {accumulation}")
        self.console.print(f"  total optimization steps / 学習ステップ数: {args.max_train_steps}")

        from tqdm import tqdm

        global_step = 0
        rng = random.Random(args.seed)
        losses: list[float] = []
        # --sample_at_first samples before the steps bar exists (train_network.py creates it after them).
        if args.sample_at_first:
            self.sample(0, epoch=0)
        progress = tqdm(range(args.max_train_steps), smoothing=0, desc="steps", file=sys.stderr)
        for epoch in range(num_epochs):
            self.console.print(f"\nepoch {epoch + 1}/{num_epochs}\n")
            self.console.log(
                f"epoch is incremented. current_epoch: {epoch}, epoch: {epoch + 1}", where="train_util.py"
            )
            # One pass per micro-batch: the bar advances when accelerate syncs the gradients (every
            # `accumulation` batches, and at the end of the data loader), but its postfix (the loss) is
            # set, and the bar redrawn, after every micro-batch.
            for batch in range(batches):
                time.sleep(self.step_seconds / accumulation)
                synced = (batch + 1) % accumulation == 0 or batch + 1 == batches
                if synced:
                    progress.update(1)
                    global_step += 1
                    if self.nan_at is not None and global_step >= self.nan_at:
                        self.is_nan = True
                    self.sample(global_step, epoch=None)
                    if args.save_every_n_steps and global_step % args.save_every_n_steps == 0:
                        self.save(self.step_name(global_step), global_step, epoch)
                        self.remove_old_step(global_step)
                loss = (
                    math.nan
                    if self.is_nan
                    else 0.14 * math.exp(-global_step / 400) + 0.06 + rng.uniform(-0.02, 0.02)
                )
                losses.append(loss)
                window = losses[-batches:]
                progress.set_postfix(avr_loss=sum(window) / len(window))
                if synced and self.oom_at is not None and global_step >= self.oom_at:
                    sys.stderr.write(
                        "Traceback (most recent call last):\n"
                        f'  File "{self.script}", line 1729, in <module>\n    trainer.train(args)\n'
                        f"{_OOM_TEXT}\n"
                    )
                    sys.stderr.flush()
                    return 1
                if synced and self.kill_at is not None and global_step >= self.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if global_step >= args.max_train_steps:
                    break
            every = args.save_every_n_epochs
            if every is not None and (epoch + 1) % every == 0 and (epoch + 1) < num_epochs:
                self.save(self.epoch_name(epoch + 1), global_step, epoch + 1)
            self.sample(global_step, epoch=epoch + 1)
            if global_step >= args.max_train_steps:
                break
        if os.environ.get("SDSTANDIN_SKIP_FINAL_SAVE") == "1":
            return 0
        name = f"{args.output_name or 'last'}.{args.save_model_as}"
        self.save(name, global_step, num_epochs)
        self.console.log("model saved.")
        return 0

    def step_name(self, step: int) -> str:
        return f"{self.args.output_name or 'at'}-step{step:08d}.{self.args.save_model_as}"

    def epoch_name(self, epoch: int) -> str:
        return f"{self.args.output_name or 'epoch'}-{epoch:06d}.{self.args.save_model_as}"

    def remove_old_step(self, step: int) -> None:
        args = self.args
        if args.save_last_n_steps is None:
            return
        remove = step - args.save_last_n_steps - 1
        remove -= remove % args.save_every_n_steps
        if remove <= 0:
            return
        old = os.path.join(args.output_dir, self.step_name(remove))
        if os.path.exists(old):
            self.console.print(f"removing old checkpoint: {old}")
            os.remove(old)

    # ---- samples ----

    def sample(self, steps: int, epoch: int | None) -> None:
        """sample_images_common's schedule and file names."""
        args = self.args
        if steps == 0:
            if not args.sample_at_first:
                return
        else:
            every_steps, every_epochs = args.sample_every_n_steps, args.sample_every_n_epochs
            if every_epochs is not None:  # epochs win when both are set
                if epoch is None or epoch % every_epochs != 0:
                    return
            elif every_steps is None or steps % every_steps != 0 or epoch is not None:
                return
        self.console.log("")
        self.console.log(
            f"generating sample images at step / サンプル画像生成 ステップ: {steps}", where="train_util.py"
        )
        if not os.path.isfile(args.sample_prompts):
            self.console.log(
                f"No prompt file / プロンプトファイルがありません: {args.sample_prompts}",
                "ERROR",
                "train_util.py",
            )
            return
        save_dir = args.output_dir + "/sample"
        os.makedirs(save_dir, exist_ok=True)
        dataset_images = [img for d in self.datasets for s in d.subsets if not s.is_reg for img in s.images]
        from .sample_modes import make_sample

        for index, prompt in enumerate(_parse_prompts(args.sample_prompts)):
            width = max(
                64, int(prompt.get("width", 512)) // (16 if self.flux else 8) * (16 if self.flux else 8)
            )
            height = max(
                64, int(prompt.get("height", 512)) // (16 if self.flux else 8) * (16 if self.flux else 8)
            )
            seed = prompt.get("seed")
            self._log_prompt(prompt)
            # The pipeline's denoising bar (diffusers' progress_bar, or flux_train_utils' tqdm).
            _bar(int(prompt.get("sample_steps", 20 if self.flux else 30)))
            image = make_sample(
                dataset_images,
                prompt_index=index,
                step=steps,
                total_steps=args.max_train_steps,
                width=width,
                height=height,
                seed=seed if seed is not None else index,
                nan=self.is_nan,
                face_from=self.face_from,
            )
            suffix = f"e{epoch:06d}" if epoch is not None else f"{steps:06d}"
            stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
            seed_part = f"_{seed}" if seed is not None else ""
            prefix = f"{args.output_name}_" if args.output_name else ""
            name = f"{prefix}{suffix}_{index:02d}_{stamp}{seed_part}.png"
            image.save(os.path.join(save_dir, name))

    def _log_prompt(self, prompt: dict[str, Any]) -> None:
        """sample_image_inference's lines: train_util's for SD1.5/SDXL, flux_train_utils' for Flux."""
        where = "flux_train_utils.py" if self.flux else "train_util.py"
        negative = prompt.get("negative_prompt")
        lines = [f"prompt: {prompt.get('prompt', '')}"]
        if self.flux:
            cfg_scale = float(prompt.get("scale", 1.0))
            if cfg_scale != 1.0:
                lines.append(f"negative_prompt: {negative or ''}")
            elif negative:
                lines.append("negative prompt is ignored because scale is 1.0")
            height, width = (
                max(64, v - v % 16) for v in (prompt.get("height", 512), prompt.get("width", 512))
            )
            lines += [
                f"height: {height}",
                f"width: {width}",
                f"sample_steps: {prompt.get('sample_steps', 20)}",
                f"embedded guidance scale: {prompt.get('guidance_scale', 3.5)}",
            ]
            if cfg_scale != 1.0:
                lines.append(f"CFG scale: {cfg_scale}")
        else:
            lines += [
                f"negative_prompt: {negative}",
                f"height: {prompt.get('height', 512)}",
                f"width: {prompt.get('width', 512)}",
                f"sample_steps: {prompt.get('sample_steps', 30)}",
                f"scale: {prompt.get('scale', 7.5)}",
                f"sample_sampler: {prompt.get('sample_sampler', self.args.sample_sampler)}",
            ]
        if prompt.get("seed") is not None:
            lines.append(f"seed: {prompt['seed']}")
        for line in lines:
            self.console.log(line, where=where)

    # ---- checkpoints ----

    def save(self, name: str, steps: int, epoch: int) -> None:
        args = self.args
        if args.output_dir is None:
            raise TypeError("unsupported operand type(s) for +: 'NoneType' and 'str'")
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, name)
        self.console.print(f"\nsaving checkpoint: {path}")
        metadata = self.metadata()
        metadata["ss_training_finished_at"] = str(time.time())
        metadata["ss_steps"] = str(steps)
        metadata["ss_epoch"] = str(epoch)
        dtype = {"fp16": "F16", "bf16": "BF16"}.get(args.save_precision or "", "F32")
        safetensors_io.write(Path(path), self.tensors(steps), metadata, dtype)

    def tensors(self, steps: int) -> dict[str, np.ndarray]:
        dim = self.args.network_dim if self.args.network_dim is not None else 4
        rng = np.random.default_rng(steps + 1)
        prefix = (
            "lora_unet_double_blocks_0_img_attn_proj"
            if self.flux
            else "lora_unet_down_blocks_0_attentions_0_proj_in"
        )
        tensors: dict[str, np.ndarray] = {}
        for module in (prefix, prefix.replace("_0_", "_1_", 1)):
            down = rng.normal(0, 0.01, (dim, 64)).astype(np.float32)
            up = rng.normal(0, 0.01, (64, dim)).astype(np.float32)
            if self.is_nan:
                down[:] = np.nan
                up[:] = np.nan
            tensors[f"{module}.lora_down.weight"] = down
            tensors[f"{module}.lora_up.weight"] = up
            tensors[f"{module}.alpha"] = np.array(float(self.args.network_alpha or dim), dtype=np.float32)
        return tensors

    def metadata(self) -> dict[str, str]:
        """train_network.py's metadata: every value a string; ss_* plus modelspec.*."""
        args = self.args
        dim = args.network_dim if args.network_dim is not None else 4
        datasets = [
            {
                "is_dreambooth": True,
                "batch_size_per_device": d.batch_size,
                "num_train_images": d.num_train_images,
                "num_reg_images": d.num_reg_images,
                "resolution": list(d.resolution),
                "enable_bucket": d.params["enable_bucket"],
                "min_bucket_reso": d.params["min_bucket_reso"],
                "max_bucket_reso": d.params["max_bucket_reso"],
                "subsets": [
                    {
                        "img_count": len(s.images),
                        "num_repeats": s.num_repeats,
                        "image_dir": os.path.basename(s.image_dir),
                        "class_tokens": s.class_tokens,
                        "is_reg": s.is_reg,
                        **s.params,
                    }
                    for s in d.subsets
                ],
            }
            for d in self.datasets
        ]
        values: dict[str, Any] = {
            "ss_session_id": self.session_id,
            "ss_training_started_at": self.started_at,
            "ss_output_name": args.output_name,
            "ss_learning_rate": args.learning_rate,
            "ss_text_encoder_lr": args.text_encoder_lr,
            "ss_unet_lr": args.unet_lr,
            "ss_num_train_images": sum(d.num_train_images for d in self.datasets),
            "ss_num_validation_images": 0,
            "ss_num_reg_images": sum(d.num_reg_images for d in self.datasets),
            "ss_num_batches_per_epoch": self.batches_per_epoch(),
            "ss_num_epochs": getattr(self, "num_epochs", 0),
            "ss_gradient_checkpointing": args.gradient_checkpointing,
            "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
            "ss_max_train_steps": args.max_train_steps,
            "ss_lr_warmup_steps": args.lr_warmup_steps,
            "ss_lr_scheduler": args.lr_scheduler,
            "ss_network_module": args.network_module,
            "ss_network_dim": dim,
            "ss_network_alpha": args.network_alpha,
            "ss_network_dropout": args.network_dropout,
            "ss_mixed_precision": args.mixed_precision,
            "ss_full_fp16": bool(args.full_fp16),
            "ss_v2": bool(args.v2),
            "ss_base_model_version": _BASE_MODEL_VERSION[self.script],
            "ss_clip_skip": args.clip_skip,
            "ss_max_token_length": args.max_token_length,
            "ss_cache_latents": bool(args.cache_latents),
            "ss_seed": args.seed,
            "ss_lowram": args.lowram,
            "ss_noise_offset": args.noise_offset,
            "ss_multires_noise_iterations": args.multires_noise_iterations,
            "ss_multires_noise_discount": args.multires_noise_discount,
            "ss_adaptive_noise_scale": args.adaptive_noise_scale,
            "ss_zero_terminal_snr": args.zero_terminal_snr,
            "ss_training_comment": args.training_comment,
            "ss_sd_scripts_commit_hash": "(unknown)",
            "ss_optimizer": (args.optimizer_type or "AdamW")
            if not args.optimizer_args
            else f"{args.optimizer_type or 'AdamW'}({', '.join(args.optimizer_args)})",
            "ss_max_grad_norm": args.max_grad_norm,
            "ss_caption_dropout_rate": 0.0,
            "ss_caption_dropout_every_n_epochs": 0,
            "ss_caption_tag_dropout_rate": 0.0,
            "ss_face_crop_aug_range": args.face_crop_aug_range,
            "ss_prior_loss_weight": args.prior_loss_weight,
            "ss_min_snr_gamma": args.min_snr_gamma,
            "ss_scale_weight_norms": args.scale_weight_norms,
            "ss_ip_noise_gamma": args.ip_noise_gamma,
            "ss_debiased_estimation": bool(args.debiased_estimation_loss),
            "ss_noise_offset_random_strength": args.noise_offset_random_strength,
            "ss_ip_noise_gamma_random_strength": args.ip_noise_gamma_random_strength,
            "ss_loss_type": args.loss_type,
            "ss_huber_schedule": args.huber_schedule,
            "ss_huber_scale": args.huber_scale,
            "ss_huber_c": args.huber_c,
            "ss_fp8_base": bool(args.fp8_base),
            "ss_fp8_base_unet": bool(args.fp8_base_unet),
            "ss_validation_seed": args.validation_seed,
            "ss_validation_split": args.validation_split,
            "ss_max_validation_steps": args.max_validation_steps,
            "ss_validate_every_n_epochs": args.validate_every_n_epochs,
            "ss_validate_every_n_steps": args.validate_every_n_steps,
            "ss_resize_interpolation": args.resize_interpolation,
            "ss_datasets": json.dumps(datasets),
            "ss_tag_frequency": json.dumps(
                {os.path.basename(s.image_dir): {} for d in self.datasets for s in d.subsets}
            ),
            "ss_dataset_dirs": json.dumps(
                {
                    os.path.basename(s.image_dir): {"n_repeats": s.num_repeats, "img_count": len(s.images)}
                    for d in self.datasets
                    for s in d.subsets
                }
            ),
        }
        if args.network_args:
            values["ss_network_args"] = json.dumps(
                dict(a.split("=", 1) for a in args.network_args if "=" in a)
            )
        model = args.pretrained_model_name_or_path
        if model and os.path.exists(model):
            values["ss_sd_model_name"] = os.path.basename(model)
        if self.flux:
            for name in (
                "model_type",
                "apply_t5_attn_mask",
                "weighting_scheme",
                "logit_mean",
                "logit_std",
                "mode_scale",
                "guidance_scale",
                "timestep_sampling",
                "sigmoid_scale",
                "model_prediction_type",
                "discrete_flow_shift",
            ):
                values[f"ss_{name}"] = getattr(args, name)
        if args.no_metadata:
            keep = {
                "ss_v2",
                "ss_base_model_version",
                "ss_network_module",
                "ss_network_dim",
                "ss_network_alpha",
                "ss_network_args",
            }
            values = {k: v for k, v in values.items() if k in keep}
        resolution = (
            args.resolution or (512, 512) if not (self.sdxl or self.flux) else args.resolution or (1024, 1024)
        )
        values.update(
            {
                "modelspec.sai_model_spec": "1.0.1",
                "modelspec.architecture": _ARCHITECTURE[self.script],
                "modelspec.implementation": _IMPLEMENTATION[self.script],
                "modelspec.title": args.metadata_title or args.output_name or "",
                "modelspec.date": datetime.now(UTC).astimezone().replace(microsecond=0).isoformat(),
                "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
                "modelspec.implementation_version": "sd-scripts/unknown",
            }
        )
        if not self.flux:
            values["modelspec.prediction_type"] = "v" if args.v_parameterization else "epsilon"
        if args.metadata_trigger_phrase:
            values["modelspec.trigger_phrase"] = args.metadata_trigger_phrase
        values = {k: str(v) for k, v in values.items()}
        values["sshs_model_hash"] = uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(values, sort_keys=True)).hex * 2
        values["sshs_legacy_hash"] = values["sshs_model_hash"][:8]
        return values


def _bar(total: int, desc: str | None = None) -> None:
    """A tqdm bar as sd-scripts' loops over images draw one (stderr), run to its end."""
    from tqdm import tqdm

    for _ in tqdm(range(total), desc=desc, file=sys.stderr):
        pass


def _subsets_from_dirs(train_data_dir: str) -> list[dict[str, Any]]:
    """config_util.generate_dreambooth_subsets_config_by_subdirs: "<repeats>_<class>" folders."""
    subsets: list[dict[str, Any]] = []
    root = Path(train_data_dir)
    if not root.is_dir():
        return subsets
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        head, _, tail = child.name.partition("_")
        if not head.isdigit():
            continue
        subsets.append({"image_dir": str(child), "num_repeats": int(head), "class_tokens": tail})
    return subsets


def main(script_path: str, argv: list[str]) -> int:
    """What ``python <script_path> <argv>`` does in sd-scripts; returns the exit code."""
    script = os.path.basename(script_path)
    parser = build_parser(script)
    args = parser.parse_args(argv)  # unknown options: usage + "error: unrecognized arguments", exit 2
    console = Console()
    try:
        args, ignored, _loaded = cfg.read_config_file(
            args, parser, argv, log=lambda message: console.log(message, where="train_util.py")
        )
    except cfg.ConfigExit as stop:
        console.log(stop.message, where="train_util.py")
        return stop.code
    report = os.environ.get("SDSTANDIN_REPORT")
    if report:
        Path(report).write_text(
            json.dumps(
                {
                    "script": script,
                    "ignored_config_keys": ignored,
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                indent=1,
            )
        )
    run = Run(script, args, console)
    try:
        run.prepare_args()
        console.simple = bool(args.console_log_simple)
        run.prepare_dataset()
        if not any(d.num_train_images for d in run.datasets):
            console.log(
                "No data found. Please verify arguments (train_data_dir must be the parent of folders with "
                "images) / 画像がありません。引数指定を確認してください"
                "（train_data_dirには画像があるフォルダではなく、"
                "画像があるフォルダの親フォルダを指定する必要があります）",
                "ERROR",
            )
            return 0
        run.assert_args()
        run.load_models()
        return run.train()
    except cfg.DatasetConfigInvalid as exc:
        return _crash(_named("voluptuous.error", "MultipleInvalid", str(exc)), script)
    except Exception as exc:
        return _crash(exc, script)


def _named(module: str, name: str, message: str) -> BaseException:
    """An exception whose traceback line reads ``module.name: message``."""
    kind = type(name, (Exception,), {"__module__": module})
    return kind(message)
