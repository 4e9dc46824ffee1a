"""The command-line surface of the pinned sd-scripts (tag v0.10.1, ae72efb) as data.

Each entry is one ``--option`` with its argparse behaviour: value type, default, ``choices`` and
``nargs``. The table was read off the three entry scripts' ``setup_parser()`` (train_network.py, plus
the SDXL and FLUX additions) so the stand-in accepts exactly the options the real scripts accept and
rejects the rest with argparse's own ``unrecognized arguments`` error (exit 2). Every option is
optional in the real scripts (no ``required=True``), and every ``store_true`` defaults to False.

Facts worth remembering (see /work/shared/reference/sd_scripts.md §1.3):
- ``--network_alpha`` defaults to the *int* 1 while its type is float, so ``ss_network_alpha`` reads
  "1" when left alone and "16.0" when given.
- ``--resolution`` is a *string* ("512" or "1024,1024"); the scripts split it themselves.
- ``--cache_text_encoder_outputs`` exists for SDXL and FLUX only.
- ``--text_encoder_lr`` takes any number of floats; there is no ``--text_encoder_lr1/2``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

FLAG = "flag"  # action="store_true"
STR = "str"
INT = "int"
FLOAT = "float"
INT_OR_FLOAT = "int_or_float"  # sd-scripts' own converter: "0.05" -> 0.05, "100" -> 100
PATH = "path"  # pathlib.Path


class A(NamedTuple):
    """One option: ``--{name}``."""

    name: str
    kind: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    nargs: str | None = None


TRAIN_NETWORK: tuple[A, ...] = (
    A("console_log_level", STR, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    A("console_log_file", STR),
    A("console_log_simple", FLAG),
    A("v2", FLAG),
    A("v_parameterization", FLAG),
    A("pretrained_model_name_or_path", STR),
    A("tokenizer_cache_dir", STR),
    A("metadata_title", STR),
    A("metadata_author", STR),
    A("metadata_description", STR),
    A("metadata_license", STR),
    A("metadata_tags", STR),
    A("metadata_usage_hint", STR),
    A("metadata_thumbnail", STR),
    A("metadata_merged_from", STR),
    A("metadata_trigger_phrase", STR),
    A("metadata_preprocessor", STR),
    A("metadata_is_negative_embedding", STR),
    A("train_data_dir", STR),
    A("cache_info", FLAG),
    A("shuffle_caption", FLAG),
    A("caption_separator", STR, default=","),
    A("caption_extension", STR, default=".caption"),
    A("caption_extention", STR),
    A("keep_tokens", INT, default=0),
    A("keep_tokens_separator", STR, default=""),
    A("secondary_separator", STR),
    A("enable_wildcard", FLAG),
    A("caption_prefix", STR),
    A("caption_suffix", STR),
    A("color_aug", FLAG),
    A("flip_aug", FLAG),
    A("face_crop_aug_range", STR),
    A("random_crop", FLAG),
    A("debug_dataset", FLAG),
    A("resolution", STR),
    A("cache_latents", FLAG),
    A("vae_batch_size", INT, default=1),
    A("cache_latents_to_disk", FLAG),
    A("skip_cache_check", FLAG),
    A("enable_bucket", FLAG),
    A("min_bucket_reso", INT, default=256),
    A("max_bucket_reso", INT, default=1024),
    A("bucket_reso_steps", INT, default=64),
    A("bucket_no_upscale", FLAG),
    A(
        "resize_interpolation",
        STR,
        choices=("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area"),
    ),
    A("token_warmup_min", INT, default=1),
    A("token_warmup_step", FLOAT, default=0),
    A("alpha_mask", FLAG),
    A("dataset_class", STR),
    A("caption_dropout_rate", FLOAT, default=0.0),
    A("caption_dropout_every_n_epochs", INT, default=0),
    A("caption_tag_dropout_rate", FLOAT, default=0.0),
    A("reg_data_dir", STR),
    A("in_json", STR),
    A("dataset_repeats", INT, default=1),
    A("output_dir", STR),
    A("output_name", STR),
    A("huggingface_repo_id", STR),
    A("huggingface_repo_type", STR),
    A("huggingface_path_in_repo", STR),
    A("huggingface_token", STR),
    A("huggingface_repo_visibility", STR),
    A("save_state_to_huggingface", FLAG),
    A("resume_from_huggingface", FLAG),
    A("async_upload", FLAG),
    A("save_precision", STR, choices=(None, "float", "fp16", "bf16")),
    A("save_every_n_epochs", INT),
    A("save_every_n_steps", INT),
    A("save_n_epoch_ratio", INT),
    A("save_last_n_epochs", INT),
    A("save_last_n_epochs_state", INT),
    A("save_last_n_steps", INT),
    A("save_last_n_steps_state", INT),
    A("save_state", FLAG),
    A("save_state_on_train_end", FLAG),
    A("resume", STR),
    A("train_batch_size", INT, default=1),
    A("max_token_length", INT, choices=(None, 150, 225)),
    A("mem_eff_attn", FLAG),
    A("torch_compile", FLAG),
    A(
        "dynamo_backend",
        STR,
        default="inductor",
        choices=(
            "eager",
            "aot_eager",
            "inductor",
            "aot_ts_nvfuser",
            "nvprims_nvfuser",
            "cudagraphs",
            "ofi",
            "fx2trt",
            "onnxrt",
            "tensort",
            "ipex",
            "tvm",
        ),
    ),
    A("xformers", FLAG),
    A("sdpa", FLAG),
    A("vae", STR),
    A("max_train_steps", INT, default=1600),
    A("max_train_epochs", INT),
    A("max_data_loader_n_workers", INT, default=8),
    A("persistent_data_loader_workers", FLAG),
    A("seed", INT),
    A("gradient_checkpointing", FLAG),
    A("gradient_accumulation_steps", INT, default=1),
    A("mixed_precision", STR, default="no", choices=("no", "fp16", "bf16")),
    A("full_fp16", FLAG),
    A("full_bf16", FLAG),
    A("fp8_base", FLAG),
    A("ddp_timeout", INT),
    A("ddp_gradient_as_bucket_view", FLAG),
    A("ddp_static_graph", FLAG),
    A("clip_skip", INT),
    A("logging_dir", STR),
    A("log_with", STR, choices=("tensorboard", "wandb", "all")),
    A("log_prefix", STR),
    A("log_tracker_name", STR),
    A("wandb_run_name", STR),
    A("log_tracker_config", STR),
    A("wandb_api_key", STR),
    A("log_config", FLAG),
    A("noise_offset", FLOAT),
    A("noise_offset_random_strength", FLAG),
    A("multires_noise_iterations", INT),
    A("ip_noise_gamma", FLOAT),
    A("ip_noise_gamma_random_strength", FLAG),
    A("multires_noise_discount", FLOAT, default=0.3),
    A("adaptive_noise_scale", FLOAT),
    A("zero_terminal_snr", FLAG),
    A("min_timestep", INT),
    A("max_timestep", INT),
    A("loss_type", STR, default="l2", choices=("l1", "l2", "huber", "smooth_l1")),
    A("huber_schedule", STR, default="snr", choices=("constant", "exponential", "snr")),
    A("huber_c", FLOAT, default=0.1),
    A("huber_scale", FLOAT, default=1.0),
    A("lowram", FLAG),
    A("highvram", FLAG),
    A("sample_every_n_steps", INT),
    A("sample_at_first", FLAG),
    A("sample_every_n_epochs", INT),
    A("sample_prompts", STR),
    A(
        "sample_sampler",
        STR,
        default="ddim",
        choices=(
            "ddim",
            "pndm",
            "lms",
            "euler",
            "euler_a",
            "heun",
            "dpm_2",
            "dpm_2_a",
            "dpmsolver",
            "dpmsolver++",
            "dpmsingle",
            "k_lms",
            "k_euler",
            "k_euler_a",
            "k_dpm_2",
            "k_dpm_2_a",
        ),
    ),
    A("config_file", STR),
    A("output_config", FLAG),
    A("prior_loss_weight", FLOAT, default=1.0),
    A("conditioning_data_dir", STR),
    A("masked_loss", FLAG),
    A("deepspeed", FLAG),
    A("zero_stage", INT, default=2, choices=(0, 1, 2, 3)),
    A("offload_optimizer_device", STR, choices=(None, "cpu", "nvme")),
    A("offload_optimizer_nvme_path", STR),
    A("offload_param_device", STR, choices=(None, "cpu", "nvme")),
    A("offload_param_nvme_path", STR),
    A("zero3_init_flag", FLAG),
    A("zero3_save_16bit_model", FLAG),
    A("fp16_master_weights_and_gradients", FLAG),
    A("optimizer_type", STR, default=""),
    A("use_8bit_adam", FLAG),
    A("use_lion_optimizer", FLAG),
    A("learning_rate", FLOAT, default=2e-06),
    A("max_grad_norm", FLOAT, default=1.0),
    A("optimizer_args", STR, nargs="*"),
    A("lr_scheduler_type", STR, default=""),
    A("lr_scheduler_args", STR, nargs="*"),
    A("lr_scheduler", STR, default="constant"),
    A("lr_warmup_steps", INT_OR_FLOAT, default=0),
    A("lr_decay_steps", INT_OR_FLOAT, default=0),
    A("lr_scheduler_num_cycles", INT, default=1),
    A("lr_scheduler_power", FLOAT, default=1),
    A("fused_backward_pass", FLAG),
    A("lr_scheduler_timescale", INT),
    A("lr_scheduler_min_lr_ratio", FLOAT),
    A("dataset_config", PATH),
    A("min_snr_gamma", FLOAT),
    A("scale_v_pred_loss_like_noise_pred", FLAG),
    A("v_pred_like_loss", FLOAT),
    A("debiased_estimation_loss", FLAG),
    A("weighted_captions", FLAG),
    A("cpu_offload_checkpointing", FLAG),
    A("no_metadata", FLAG),
    A("save_model_as", STR, default="safetensors", choices=(None, "ckpt", "pt", "safetensors")),
    A("unet_lr", FLOAT),
    A("text_encoder_lr", FLOAT, nargs="*"),
    A("fp8_base_unet", FLAG),
    A("network_weights", STR),
    A("network_module", STR),
    A("network_dim", INT),
    A("network_alpha", FLOAT, default=1),
    A("network_dropout", FLOAT),
    A("network_args", STR, nargs="*"),
    A("network_train_unet_only", FLAG),
    A("network_train_text_encoder_only", FLAG),
    A("training_comment", STR),
    A("dim_from_weights", FLAG),
    A("scale_weight_norms", FLOAT),
    A("base_weights", STR, nargs="*"),
    A("base_weights_multiplier", FLOAT, nargs="*"),
    A("no_half_vae", FLAG),
    A("skip_until_initial_step", FLAG),
    A("initial_epoch", INT),
    A("initial_step", INT),
    A("validation_seed", INT),
    A("validation_split", FLOAT, default=0.0),
    A("validate_every_n_steps", INT),
    A("validate_every_n_epochs", INT),
    A("max_validation_steps", INT),
)

SDXL_EXTRA: tuple[A, ...] = (
    A("cache_text_encoder_outputs", FLAG),
    A("cache_text_encoder_outputs_to_disk", FLAG),
    A("disable_mmap_load_safetensors", FLAG),
)

FLUX_EXTRA: tuple[A, ...] = (
    A("cache_text_encoder_outputs", FLAG),
    A("cache_text_encoder_outputs_to_disk", FLAG),
    A("text_encoder_batch_size", INT),
    A("disable_mmap_load_safetensors", FLAG),
    A(
        "weighting_scheme",
        STR,
        default="uniform",
        choices=("sigma_sqrt", "logit_normal", "mode", "cosmap", "none", "uniform"),
    ),
    A("logit_mean", FLOAT, default=0.0),
    A("logit_std", FLOAT, default=1.0),
    A("mode_scale", FLOAT, default=1.29),
    A("blocks_to_swap", INT),
    A("clip_l", STR),
    A("t5xxl", STR),
    A("ae", STR),
    A("controlnet_model_name_or_path", STR),
    A("t5xxl_max_token_length", INT),
    A("apply_t5_attn_mask", FLAG),
    A("guidance_scale", FLOAT, default=3.5),
    A(
        "timestep_sampling",
        STR,
        default="sigma",
        choices=("sigma", "uniform", "sigmoid", "shift", "flux_shift"),
    ),
    A("sigmoid_scale", FLOAT, default=1.0),
    A("model_prediction_type", STR, default="sigma_scaled", choices=("raw", "additive", "sigma_scaled")),
    A("discrete_flow_shift", FLOAT, default=3.0),
    A("model_type", STR, default="flux", choices=("flux", "chroma")),
    A("split_mode", FLAG),
)
SCRIPTS: dict[str, tuple[A, ...]] = {
    "train_network.py": TRAIN_NETWORK,
    "sdxl_train_network.py": TRAIN_NETWORK + SDXL_EXTRA,
    "flux_train_network.py": TRAIN_NETWORK + FLUX_EXTRA,
}


def _int_or_float(value: str) -> int | float:
    # Same contract as sd-scripts' nested helper: "5%" -> 0.05, a value >= 1 must be an int (so
    # "1.5" is refused by int()), a value below 1 is a ratio.
    if value.endswith("%"):
        try:
            return float(value[:-1]) / 100.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"Value '{value}' is not a valid percentage") from None
    try:
        number = float(value)
        return int(value) if number >= 1 else number
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an int or float") from None


_int_or_float.__name__ = "int_or_float"  # argparse prints the converter's name in "invalid ... value"

_CONVERTERS: dict[str, Any] = {STR: str, INT: int, FLOAT: float, INT_OR_FLOAT: _int_or_float, PATH: Path}


def build_parser(script: str) -> argparse.ArgumentParser:
    """The argparse parser of ``script`` (one of ``SCRIPTS``), with the script's name as ``prog``."""
    parser = argparse.ArgumentParser(prog=script)
    for arg in SCRIPTS[script]:
        flag = f"--{arg.name}"
        if arg.kind == FLAG:
            parser.add_argument(flag, action="store_true")
            continue
        kwargs: dict[str, Any] = {"type": _CONVERTERS[arg.kind], "default": arg.default}
        if arg.choices is not None:
            kwargs["choices"] = arg.choices
        if arg.nargs is not None:
            kwargs["nargs"] = arg.nargs
        parser.add_argument(flag, **kwargs)
    return parser
