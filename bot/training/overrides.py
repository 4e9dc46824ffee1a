"""What people may change in a preset from chat, and why everything else is refused.

A ``KEY=VALUE`` override from ``/train`` or ``/dataset export`` is user text that ends up in a config.toml
run on a pod that holds the job's secrets. So the rule is an allow-list, not a deny-list: only the
settings in :data:`ALLOWED` can be changed, each with its type and range (finite numbers only), and only
for the preset families it means something for. Everything the bot owns — paths, model files, the
dataset config, output and logging locations, network weights, the network module, free-form argument
lists — is refused with a reason that names the key, before anything is rented
(:func:`bot.training.presets.apply_overrides` is the one place that applies this table; the cog, the
export and the renderer all go through it).

Ranges for sd-scripts arguments and dataset keys that :mod:`bot.training.sdscripts_schema` already
bounds (``LIMITS``, ``DATASET_LIMITS``) live there and are applied from there; :data:`ALLOWED` adds the
ranges nobody else checks (face mask, preset, sampling, dropout rates ...).

This module also parses the override text people type (:func:`split_overrides`), so the cog and the
export read ``rank=16, lr=1e-4 "sampling.negative=blurry, dark"`` the same way.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from bot.text import quote_inline

Family = Literal["sd15", "sdxl", "flux"]
ALL: frozenset[str] = frozenset({"sd15", "sdxl", "flux"})
UNET: frozenset[str] = frozenset({"sd15", "sdxl"})  # families with a U-Net and CLIP text encoders
FLUX: frozenset[str] = frozenset({"flux"})

Kind = Literal["int", "float", "number", "bool", "str", "size", "optimizer_args"]
MAX_OVERRIDES = 40  # more than this in one command is a paste accident, not a run
MAX_VALUE_CHARS = 300


@dataclass(frozen=True)
class Allowed:
    """One setting users may change: its type, its range (None = the schema's, or unbounded), where."""

    kind: Kind
    low: float | None = None
    high: float | None = None
    families: frozenset[str] = ALL
    max_chars: int = 64  # for text values


# Keys are canonical: an sd-scripts argument, a dataset.toml key, ``<subset>.<key>``, or
# ``face.`` / ``preset.`` / ``sampling.`` + name. Aliases (steps, rank, lr ...) are resolved before.
ALLOWED: dict[str, Allowed] = {
    # how long and how big
    "max_train_steps": Allowed("int"),
    "max_train_epochs": Allowed("int"),
    "network_dim": Allowed("int"),
    "network_alpha": Allowed("float"),
    "network_dropout": Allowed("float"),
    "network_train_unet_only": Allowed("bool"),
    # optimiser and schedule (names are checked against the release by the schema)
    "learning_rate": Allowed("float"),
    "unet_lr": Allowed("float"),
    "text_encoder_lr": Allowed("float", 0.0, 1.0, families=UNET),
    "optimizer_type": Allowed("str"),
    "optimizer_args": Allowed("optimizer_args"),
    "lr_scheduler": Allowed("str"),
    "lr_scheduler_num_cycles": Allowed("int"),
    "lr_scheduler_power": Allowed("float", 0.0, 10.0),
    "lr_warmup_steps": Allowed("number", 0, 100_000),  # a fraction < 1 or a step count (schema checks both)
    "max_grad_norm": Allowed("float"),
    "gradient_accumulation_steps": Allowed("int"),
    "gradient_checkpointing": Allowed("bool"),
    "seed": Allowed("int"),
    # loss shaping
    "min_snr_gamma": Allowed("float", families=UNET),
    "noise_offset": Allowed("float", families=UNET),
    "multires_noise_iterations": Allowed("int", 0, 20, families=UNET),
    "multires_noise_discount": Allowed("float", 0.0, 1.0, families=UNET),
    "ip_noise_gamma": Allowed("float", 0.0, 1.0),
    "scale_weight_norms": Allowed("float", 0.0, 100.0),
    "clip_skip": Allowed("int", 1, 12, families=frozenset({"sd15"})),
    # precision (choices from the release's argparse data)
    "mixed_precision": Allowed("str"),
    "save_precision": Allowed("str"),
    "no_half_vae": Allowed("bool", families=UNET),
    "fp8_base": Allowed("bool"),
    # Flux only
    "guidance_scale": Allowed("float", families=FLUX),
    "timestep_sampling": Allowed("str", families=FLUX),
    "discrete_flow_shift": Allowed("float", 0.0, 100.0, families=FLUX),
    "model_prediction_type": Allowed("str", families=FLUX),
    "blocks_to_swap": Allowed("int", families=FLUX),
    # checkpoints and samples
    "save_every_n_steps": Allowed("int"),
    "save_every_n_epochs": Allowed("int"),
    "sample_every_n_steps": Allowed("int"),
    "sample_every_n_epochs": Allowed("int"),
    "sample_sampler": Allowed("str"),
    "sample_at_first": Allowed("bool"),
    # dataset.toml (general and dataset level)
    "resolution": Allowed("size"),
    "batch_size": Allowed("int"),
    "enable_bucket": Allowed("bool"),
    "min_bucket_reso": Allowed("int"),
    "max_bucket_reso": Allowed("int"),
    "bucket_no_upscale": Allowed("bool"),
    "shuffle_caption": Allowed("bool"),
    "keep_tokens": Allowed("int"),
    "flip_aug": Allowed("bool"),
    "caption_dropout_rate": Allowed("float", 0.0, 1.0),
    "caption_tag_dropout_rate": Allowed("float", 0.0, 1.0),
    # per subset
    "full.num_repeats": Allowed("int"),
    "face_crops.num_repeats": Allowed("int"),
    # loraops' own sections
    "face.crops_subset": Allowed("bool"),
    "face.alpha_mask": Allowed("bool"),
    "face.background": Allowed("float", 0.0, 1.0),  # a loss weight: 0 ignores the body, 1 = no mask
    "face.margin": Allowed("float", 0.0, 2.0),  # grown by up to twice the face box on each side
    "face.feather": Allowed("float", 0.0, 1.0),
    "preset.early_stop_patience": Allowed("int", 0, 100),
    # the face alarm judges at this checkpoint or this share of the steps, whichever comes first
    "preset.face_alarm_checkpoint": Allowed("int", 1, 100),
    "preset.face_alarm_fraction": Allowed("float", 0.0, 1.0),
    # low: the preset's own value (a smaller GPU would run out of memory mid-run); see low_for
    "preset.min_vram_gb": Allowed("int", None, 192),
    "sampling.width": Allowed("int", 256, 2048),
    "sampling.height": Allowed("int", 256, 2048),
    "sampling.steps": Allowed("int", 1, 150),
    "sampling.cfg": Allowed("float", 0.0, 30.0),
    "sampling.guidance": Allowed("float", 0.0, 30.0, families=FLUX),
    "sampling.negative": Allowed("str", max_chars=300),
}

# Friendly names people type; resolved before the allow-list is consulted.
ALIASES = {
    "steps": "max_train_steps",
    "epochs": "max_train_epochs",
    "rank": "network_dim",
    "dim": "network_dim",
    "alpha": "network_alpha",
    "lr": "learning_rate",
    # dataset.toml's batch_size wins over config.toml's train_batch_size, so both names set the former
    "batch": "batch_size",
    "train_batch_size": "batch_size",
    "optimizer": "optimizer_type",
    "scheduler": "lr_scheduler",
    "precision": "mixed_precision",
    "repeats": "full.num_repeats",
}

# optimizer_args items sd-scripts passes to the optimizer's constructor (after ast.literal_eval):
# named and typed here so the list is not free-form. Values: finite numbers, booleans, number pairs.
OPTIMIZER_ARGS: dict[str, tuple[float, float] | None] = {
    "weight_decay": (0.0, 1.0),
    "eps": (0.0, 1.0),
    "betas": (0.0, 1.0),  # each of the pair/triple
    "momentum": (0.0, 1.0),
    "dampening": (0.0, 1.0),
    "nesterov": None,
    "amsgrad": None,
    "decouple": None,
    "use_bias_correction": None,
    "safeguard_warmup": None,
    "d_coef": (0.0, 100.0),
    "d0": (0.0, 1.0),
    "growth_rate": (1.0, math.inf),
    "relative_step": None,
    "scale_parameter": None,
    "warmup_init": None,
    "clip_threshold": (0.0, 100.0),
    "decay_rate": (-1.0, 0.0),
    "beta3": (0.0, 1.0),
}

_PATHS = "paths, model files and output locations are the bot's: they never come from chat"
_REASONS: dict[str, str] = {
    **dict.fromkeys(
        (
            "pretrained_model_name_or_path",
            "vae",
            "clip_l",
            "t5xxl",
            "ae",
            "network_weights",
            "base_weights",
            "dim_from_weights",
            "dataset_config",
            "config_file",
            "output_config",
            "output_dir",
            "output_name",
            "logging_dir",
            "log_prefix",
            "log_config",
            "log_tracker_config",
            "log_tracker_name",
            "sample_prompts",
            "train_data_dir",
            "reg_data_dir",
            "in_json",
            "resume",
            "tokenizer_cache_dir",
            "console_log_file",
            "conditioning_data_dir",
            "image_dir",
            "metadata_file",
            "offload_optimizer_nvme_path",
            "offload_param_nvme_path",
            "controlnet_model_name_or_path",
            "cache_latents_to_disk",
            "cache_text_encoder_outputs_to_disk",
            "save_state",
            "save_state_on_train_end",
            "save_last_n_steps_state",
            "save_last_n_epochs_state",
        ),
        _PATHS,
    ),
    **dict.fromkeys(
        (
            "network_args",
            "lr_scheduler_args",
            "lr_scheduler_type",
            "dataset_class",
            "custom_attributes",
            "deepspeed",
            "dynamo_backend",
            "torch_compile",
        ),
        "free-form: sd-scripts hands it on unchecked (it can load other code or files)",
    ),
    **dict.fromkeys(
        (
            "log_with",
            "wandb_api_key",
            "wandb_run_name",
            "huggingface_token",
            "huggingface_repo_id",
            "huggingface_repo_type",
            "huggingface_path_in_repo",
            "huggingface_repo_visibility",
            "save_state_to_huggingface",
            "resume_from_huggingface",
            "async_upload",
        ),
        "would send the run or a credential to an outside service",
    ),
    **dict.fromkeys(
        (
            "network_module",
            "save_model_as",
            "caption_extension",
            "caption_extention",
            "class_tokens",
            "cache_info",
            "is_reg",
            "alpha_mask",
            "masked_loss",
            "console_log_level",
            "console_log_simple",
            "training_comment",
            "no_metadata",
            "max_data_loader_n_workers",
            "persistent_data_loader_workers",
            "cache_latents",
            "cache_text_encoder_outputs",
            "model_type",
            "v2",
            "v_parameterization",
        ),
        "set by the bot for every run (it must match the worker and the review)",
    ),
}


def refusal_reason(key: str) -> str | None:
    """Why ``key`` (canonical) may not be set from chat, when the bot owns it; None otherwise."""
    if key in _REASONS:
        return _REASONS[key]
    if key.startswith("metadata_"):
        return "set by the bot for every run (the trigger and title come from the dataset)"
    if re.search(r"(_dir|_path|_file|_name_or_path)$", key):
        return _PATHS
    return None


def allowed_for(family: str) -> list[str]:
    """The keys users may set for ``family``, sorted, for refusal messages and help."""
    return sorted(key for key, spec in ALLOWED.items() if family in spec.families)


def finite_problem(key: str, value: Any) -> str | None:
    """NaN and the infinities pass every ``<``/``>`` range check, so they are refused on their own."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key} = {value!r}: must be a finite number"
    if isinstance(value, list):
        for item in value:
            problem = finite_problem(key, item)
            if problem:
                return problem
    return None


def range_problem(key: str, value: Any, low: float | None, high: float | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if low is not None and value < low:
        return f"{key} = {value!r} is below the minimum {low:g}"
    if high is not None and value > high:
        return f"{key} = {value!r} is above the maximum {high:g}"
    return None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def text_problem(key: str, value: str, max_chars: int) -> str | None:
    """Text values go into config.toml or prompts.txt: one short line of printable characters.

    sd-scripts' text options (optimizer, scheduler, sampler, precision ...) take names; only a prompt
    (``sampling.negative``) is free text, and it may not start another prompt option with `` --``.
    """
    if len(value) > max_chars:
        return f"{key}: at most {max_chars} characters"
    if any(not ch.isprintable() for ch in value):
        return f"{key}: line breaks and control characters are not allowed"
    if key == "sampling.negative":
        if " --" in f" {value}":
            return f"{key}: ' --' would start another option of the sample prompt"
    elif not _NAME.fullmatch(value):
        return f"{key}: expected a name (letters, digits and . _ + -), as sd-scripts spells it"
    return None


def parse_optimizer_args(key: str, value: Any) -> tuple[list[str], list[str]]:
    """optimizer_args as ``["weight_decay=0.01", "betas=(0.9,0.99)"]``: (clean items, problems)."""
    items = value if isinstance(value, list) else [value]
    clean: list[str] = []
    problems: list[str] = []
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            problems.append(f'{key}: each item must look like "name=value", not {quote_inline(str(item))}')
            continue
        name, _, raw = (part.strip() for part in item.partition("="))
        if name not in OPTIMIZER_ARGS:
            problems.append(
                f"{key}: {quote_inline(name, 40)} is not an optimizer option loraops passes on; known: "
                + ", ".join(OPTIMIZER_ARGS)
            )
            continue
        try:
            parsed = ast.literal_eval(raw) if len(raw) <= 60 else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        bounds = OPTIMIZER_ARGS[name]
        numbers = parsed if isinstance(parsed, tuple) else (parsed,)
        ok = bool(numbers) and all(
            isinstance(n, bool)
            if bounds is None
            else isinstance(n, int | float)
            and not isinstance(n, bool)
            and math.isfinite(n)
            and bounds[0] <= n <= bounds[1]
            for n in numbers
        )
        if not ok:
            wanted = "true or false" if bounds is None else f"finite numbers in {bounds[0]:g}..{bounds[1]:g}"
            problems.append(f"{key}: {name} = {quote_inline(raw, 60)} must be {wanted}")
            continue
        clean.append(f"{name}={raw}")
    return clean, problems


def split_overrides(text: str) -> list[str]:
    """``"rank=16 lr=1e-4, network_args=["a=1", "b=2"]"`` → one ``KEY=VALUE`` string each.

    Separators are spaces, commas and semicolons outside quotes and brackets; ``key = value`` with
    spaces around ``=`` is joined back together. A quoted ``"key=some value"`` keeps its spaces (the
    quotes around a whole pair are removed).
    """
    pieces: list[str] = []
    current: list[str] = []
    depth = 0
    quote = ""
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
            continue
        if char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth = max(0, depth - 1)
        elif depth == 0 and (char.isspace() or char in ",;"):
            if current:
                pieces.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        pieces.append("".join(current))
    merged: list[str] = []
    for piece in pieces:
        if merged and (piece.startswith("=") or merged[-1].endswith("=")):
            merged[-1] += piece
        else:
            merged.append(piece)
    return [_unquote_pair(piece) for piece in merged]


def _unquote_pair(piece: str) -> str:
    # "sampling.negative=blurry, dark" typed with the quotes around the whole pair
    if len(piece) >= 2 and piece[0] == piece[-1] and piece[0] in "\"'" and "=" in piece:
        return piece[1:-1]
    return piece


def too_many(items: Iterable[str]) -> str | None:
    count = sum(1 for _ in items)
    if count > MAX_OVERRIDES:
        return f"{count} overrides: at most {MAX_OVERRIDES} at once"
    return None
