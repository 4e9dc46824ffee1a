"""What the pinned sd-scripts release accepts, as data, and the checks loraops runs before spending money.

sd-scripts reads ``--config_file`` by flattening its tables into an argparse namespace: unknown keys are
ignored silently, values are neither type-converted nor checked against ``choices``, and bad optimizer
or scheduler names only fail once the pod is paid for (reference/sd_scripts.md §1.4, §4.7). So every
config.toml and dataset.toml we render is checked here first, against:

- ``sdscripts_args.json`` (:data:`ARGS_DATA_PATH`): each training script's arguments (kind, type, nargs,
  choices, default) read from the argparse definitions of the pinned release, the names sd-scripts only
  checks at run time (optimizers, schedulers), and the ``--dataset_config`` schema of
  ``library/config_util.py`` (voluptuous, extra keys refused) written as data;
- :data:`LIMITS`: loraops policy (not sd-scripts facts): ranges outside which a run is certainly a
  mistake (rank 0, ten million steps, a learning rate of 0 ...).

Every problem found is collected, so one refusal lists them all.
"""

from __future__ import annotations

import ast
import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

import toml

from bot.errors import InvalidInputError

ARGS_DATA_PATH = Path(__file__).with_name("sdscripts_args.json")
"""The argument data file (shared with the sd-scripts stand-in's tests as a cross-check)."""

Family = Literal["sd15", "sdxl", "flux"]
FAMILIES: tuple[Family, ...] = ("sd15", "sdxl", "flux")

# loraops policy: (min, max) inclusive; None = unbounded on that side. Chosen so that anything outside is
# a typo or a misunderstanding, never a legitimate LoRA run.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "network_dim": (1, 1024),
    "network_alpha": (1e-6, 1024),  # 0 silently means alpha = dim in sd-scripts: say the number instead
    "max_train_steps": (1, 100_000),
    "max_train_epochs": (1, 10_000),
    "learning_rate": (1e-8, 1.0),  # > 0; D-Adaptation/Prodigy want ~1.0, nothing wants more
    "unet_lr": (1e-8, 1.0),
    "train_batch_size": (1, 64),
    "gradient_accumulation_steps": (1, 256),
    "lr_scheduler_num_cycles": (1, 1000),
    "save_every_n_steps": (1, 100_000),
    "save_every_n_epochs": (1, 10_000),
    "sample_every_n_steps": (1, 100_000),
    "sample_every_n_epochs": (1, 10_000),
    "max_grad_norm": (0, 1000),
    "network_dropout": (0, 1),
    "seed": (0, 2**32 - 1),
    "max_data_loader_n_workers": (0, 64),
    "vae_batch_size": (1, 64),
    "blocks_to_swap": (0, 57),
    "guidance_scale": (0, 100),
    "min_snr_gamma": (0, 100),
    "noise_offset": (0, 1),
}
DATASET_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "num_repeats": (1, 1000),
    "batch_size": (1, 64),
    "keep_tokens": (0, 75),
    "min_bucket_reso": (64, 4096),
    "max_bucket_reso": (64, 4096),
    "bucket_reso_steps": (8, 512),
}
MAX_RESOLUTION = 2048  # loraops policy: larger than any base model was trained for
MIN_RESOLUTION = 256
NETWORK_MODULE: dict[Family, str] = {
    "sd15": "networks.lora",
    "sdxl": "networks.lora",
    "flux": "networks.lora_flux",
}
BUCKET_STEP_MULTIPLE: dict[Family, int] = {"sd15": 64, "sdxl": 32, "flux": 64}


class ConfigValidationError(InvalidInputError):
    """A rendered configuration sd-scripts would misread or fail on. ``problems`` lists every finding."""

    def __init__(self, what: str, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{what} refused ({len(self.problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


@dataclass(frozen=True)
class ArgSpec:
    """One argparse argument of a training script."""

    name: str
    kind: Literal["store", "store_true", "store_false"]
    type: str | None  # str | int | float | int_or_float | path (None for flags)
    nargs: str | int | None
    choices: tuple[Any, ...] | None
    default: Any


@cache
def args_data() -> dict[str, Any]:
    """The parsed argument data file."""
    return json.loads(ARGS_DATA_PATH.read_text(encoding="utf-8"))


def release() -> str:
    """The sd-scripts release the data describes (e.g. ``v0.10.1``)."""
    return str(args_data()["release"])


def script_for(family: Family) -> str:
    return str(args_data()["families"][family]["script"])


@cache
def arguments(family: Family) -> dict[str, ArgSpec]:
    """Every argument the family's training script accepts, by config-file key (= argparse dest)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    table = args_data()["families"][family]["arguments"]
    return {
        name: ArgSpec(
            name=name,
            kind=row["kind"],
            type=row["type"],
            nargs=row["nargs"],
            choices=tuple(row["choices"]) if row["choices"] is not None else None,
            default=row["default"],
        )
        for name, row in table.items()
    }


def optimizer_names() -> list[str]:
    return list(args_data()["runtime_checked"]["optimizer_type"]["values"])


def scheduler_names() -> list[str]:
    return list(args_data()["runtime_checked"]["lr_scheduler"]["values"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.75)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _type_problem(spec: ArgSpec, value: Any) -> str | None:
    """Why ``value`` (as parsed from TOML) is not what the script's code expects, or None."""
    if spec.kind in ("store_true", "store_false"):
        return None if isinstance(value, bool) else "is a flag: write true or false"
    if spec.nargs in ("*", "+") or isinstance(spec.nargs, int):
        # text_encoder_lr is the one list argument train_network.py also accepts as a single number.
        if spec.name == "text_encoder_lr" and _is_number(value):
            return None
        if not isinstance(value, list):
            return "must be a TOML array (a single string would be read letter by letter)"
        for item in cast(list[Any], value):
            problem = _scalar_problem(spec, item)
            if problem:
                return f"item {item!r} {problem}"
        return None
    return _scalar_problem(spec, value)


def _scalar_problem(spec: ArgSpec, value: Any) -> str | None:
    kind = spec.type
    if kind in ("str", "path"):
        if not isinstance(value, str):
            return f"must be a string, not {type(value).__name__} (sd-scripts does not convert config values)"
    elif kind == "int":
        if not _is_int(value):
            return f"must be an integer, not {type(value).__name__}"
    elif kind in ("float", "int_or_float") and not _is_number(value):
        return f"must be a number, not {type(value).__name__}"
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(repr(c) for c in spec.choices if c is not None)
        return f"must be one of {allowed}"
    return None


def _range_problem(
    name: str, value: Any, limits: Mapping[str, tuple[float | None, float | None]]
) -> str | None:
    if name not in limits or not _is_number(value):
        return None
    low, high = limits[name]
    if low is not None and value < low:
        return f"{name} = {value!r} is below the minimum {low:g}"
    if high is not None and value > high:
        return f"{name} = {value!r} is above the maximum {high:g}"
    return None


def check_sdscripts_toml(text: str, what: str) -> None:
    """Refuses a TOML document sd-scripts would not read as written.

    sd-scripts reads ``--config_file`` and ``--dataset_config`` with ``toml`` 0.10.2 (its
    requirements.txt), an older parser than the standard's: it refuses an array that mixes integers and
    floats (``[1, 0.5]``) and reads ``-0.0`` as ``0.0``. A file the bot writes must mean the same to it
    as to ``tomllib``, or the run fails on the pod after the rent has started.
    """
    try:
        theirs = toml.loads(text)
    except toml.TomlDecodeError as exc:
        problem = f"sd-scripts' TOML reader (toml 0.10.2) refuses it: {exc}"
        raise ConfigValidationError(what, [problem]) from None
    # repr: tells -0.0 from 0.0 and compares NaN with NaN
    if repr(theirs) != repr(tomllib.loads(text)):
        raise ConfigValidationError(
            what, ["sd-scripts' TOML reader (toml 0.10.2) would read other values than were written"]
        )


def parse_resolution(value: Any) -> tuple[int, int] | None:
    """``512``, ``[832, 1216]`` or ``"1024,1024"`` → (width, height); None when malformed."""
    if _is_int(value):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) in (1, 2) and all(p.isdigit() for p in parts):
            nums = [int(p) for p in parts]
            return (nums[0], nums[-1])
    return None


def flatten_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Flatten like ``read_config_from_file``: every table's keys (and top-level scalars) into one dict.

    sd-scripts lets a later section silently overwrite an earlier one; we report duplicates instead.
    """
    flat: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in config.items():
        items = value.items() if isinstance(value, Mapping) else [(key, value)]
        for name, item in cast(Iterable[tuple[str, Any]], items):
            if name in flat:
                problems.append(f"{name} is set twice (sd-scripts keeps the last one silently)")
            flat[name] = item
    return flat, problems


def validate_training_config(config: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """Check a config.toml's contents (as parsed) for ``family``'s script; return the flat arguments.

    Raises :class:`ConfigValidationError` listing every unknown key, wrongly typed value, value out of
    choices or policy range, and known-bad combination.
    """
    specs = arguments(family)
    flat, problems = flatten_config(config)
    script = script_for(family)
    for name, value in flat.items():
        spec = specs.get(name)
        if spec is None:
            others = [script_for(fam) for fam in FAMILIES if name in arguments(fam)]
            where = f"; it exists only for {', '.join(others)}" if others else ""
            problems.append(
                f"unknown key {name!r} for {script} {release()} (sd-scripts would ignore it silently)"
                f"{_suggest(name, specs)}{where}"
            )
            continue
        problem = _type_problem(spec, value)
        if problem:
            problems.append(f"{name} = {value!r}: {problem}")
            continue
        problem = _range_problem(name, value, LIMITS)
        if problem:
            problems.append(problem)
    problems.extend(_semantic_problems(flat, family))
    if problems:
        raise ConfigValidationError(f"config.toml for {script}", problems)
    return flat


def _semantic_problems(flat: Mapping[str, Any], family: Family) -> list[str]:
    problems: list[str] = []
    runtime = args_data()["runtime_checked"]

    for required in (
        "network_module",
        "network_dim",
        "network_alpha",
        "learning_rate",
        "max_train_steps",
        "mixed_precision",
        "output_dir",
        "pretrained_model_name_or_path",
        "save_model_as",
    ):
        if required not in flat:
            problems.append(f"{required} must be set explicitly (the sd-scripts default is a trap here)")
    module = flat.get("network_module")
    if module is not None and module != NETWORK_MODULE[family]:
        problems.append(f"network_module = {module!r}: {family} needs {NETWORK_MODULE[family]!r}")

    optimizer = flat.get("optimizer_type")
    if isinstance(optimizer, str) and optimizer:
        known = {name.lower(): name for name in runtime["optimizer_type"]["values"]}
        if optimizer.lower() not in known:
            near = difflib.get_close_matches(optimizer.lower(), list(known), n=2, cutoff=0.7)
            hint = f" (did you mean {' or '.join(repr(known[n]) for n in near)}?)" if near else ""
            problems.append(
                f"optimizer_type = {optimizer!r} is not an optimizer sd-scripts {release()} knows{hint}"
            )
        elif known[optimizer.lower()] in runtime["optimizer_type"].get("not_in_requirements", []):
            problems.append(f"optimizer_type = {optimizer!r} needs a package sd-scripts does not install")
    for flag in ("use_8bit_adam", "use_lion_optimizer"):
        if flat.get(flag):
            problems.append(f"{flag} is deprecated: set optimizer_type instead")

    scheduler = flat.get("lr_scheduler")
    warmup = flat.get("lr_warmup_steps", 0)
    if isinstance(scheduler, str):
        sched = runtime["lr_scheduler"]
        prefixes = tuple(sched["prefix_values"])
        if scheduler in sched["rejected_at_runtime"]:
            problems.append(
                f"lr_scheduler = {scheduler!r} fails at run time: {sched['rejected_at_runtime'][scheduler]}"
            )
        elif scheduler not in sched["values"] and not scheduler.startswith(prefixes):
            problems.append(
                f"lr_scheduler = {scheduler!r} is not a scheduler sd-scripts {release()} knows"
                f"{_suggest(scheduler, sched['values'])}"
            )
        if (scheduler == "constant" or scheduler.startswith("adafactor")) and warmup not in (0, 0.0, None):
            problems.append(
                f"lr_warmup_steps = {warmup!r} with lr_scheduler = {scheduler!r}: sd-scripts raises "
                "'does not require num_warmup_steps' (use constant_with_warmup)"
            )
        problems.extend(_scheduler_args_problems(scheduler, flat))
    steps = flat.get("max_train_steps")
    if isinstance(warmup, int | float) and isinstance(steps, int):
        if isinstance(warmup, float) and not 0 <= warmup < 1:
            problems.append(
                f"lr_warmup_steps = {warmup!r}: a float is a fraction of the steps and must be in [0, 1)"
            )
        if _is_int(warmup) and not 0 <= warmup < steps:
            problems.append(f"lr_warmup_steps = {warmup!r} must be between 0 and max_train_steps ({steps})")

    precision = flat.get("mixed_precision")
    if family == "flux" and precision is not None and precision != "bf16":
        problems.append(f"mixed_precision = {precision!r}: Flux needs bf16 (fp16 gives NaN or an empty LoRA)")
    if family == "sdxl" and precision == "fp16" and not flat.get("no_half_vae"):
        problems.append(
            "mixed_precision = 'fp16' on SDXL needs no_half_vae = true (the SDXL VAE overflows in fp16)"
        )
    if flat.get("full_bf16") and precision != "bf16":
        problems.append("full_bf16 needs mixed_precision = 'bf16'")
    if flat.get("full_fp16") and precision != "fp16":
        problems.append("full_fp16 needs mixed_precision = 'fp16'")
    if (flat.get("fp8_base") or flat.get("fp8_base_unet")) and precision in (None, "no"):
        problems.append("fp8_base needs mixed_precision fp16 or bf16")

    caching_te = flat.get("cache_text_encoder_outputs") or flat.get("cache_text_encoder_outputs_to_disk")
    if caching_te and family in ("sdxl", "flux") and not flat.get("network_train_unet_only"):
        problems.append(
            "cache_text_encoder_outputs needs network_train_unet_only = true "
            "(the text encoder's LoRA cannot train on cached outputs)"
        )
    if flat.get("blocks_to_swap") and flat.get("cpu_offload_checkpointing"):
        problems.append("blocks_to_swap cannot be combined with cpu_offload_checkpointing")
    if flat.get("adaptive_noise_scale") is not None and flat.get("noise_offset") is None:
        problems.append("adaptive_noise_scale needs noise_offset")

    sample_steps, sample_epochs = flat.get("sample_every_n_steps"), flat.get("sample_every_n_epochs")
    if (sample_steps or sample_epochs or flat.get("sample_at_first")) and not flat.get("sample_prompts"):
        problems.append("sampling is on but sample_prompts is not set (sd-scripts crashes with a TypeError)")
    if sample_steps and sample_epochs:
        problems.append(
            "sample_every_n_steps and sample_every_n_epochs both set: sd-scripts ignores the steps one"
        )
    if "resolution" in flat and parse_resolution(flat["resolution"]) is None:
        problems.append(f'resolution = {flat["resolution"]!r} must be a string like "1024,1024"')
    if flat.get("xformers"):
        problems.append("xformers is not installed with sd-scripts' requirements: use sdpa = true")
    if family == "flux":
        for key in ("min_snr_gamma", "noise_offset"):
            if flat.get(key) is not None:
                problems.append(f"{key} has no effect on Flux in sd-scripts {release()}: remove it")
    return problems


def _scheduler_args_problems(scheduler: str, flat: Mapping[str, Any]) -> list[str]:
    """What train_util.get_scheduler_fix needs beside the name (``runtime_checked.lr_scheduler.needs_args``):
    it splits each ``lr_scheduler_args`` item on "=" and reads the value with ``ast.literal_eval``."""
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    items = flat.get("lr_scheduler_args")
    for item in cast(list[Any], items) if isinstance(items, list) else []:
        key, sep, text = str(item).partition("=")
        if not sep or "=" in text:
            problems.append(f"lr_scheduler_args item {item!r} must be exactly one key=value")
            continue
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            problems.append(
                f"lr_scheduler_args item {item!r}: sd-scripts reads the value as a Python literal "
                "(quote text: step_rules='1:100,0.1')"
            )
    name = repr(scheduler)
    if scheduler == "cosine_with_min_lr":
        ratio = flat.get("lr_scheduler_min_lr_ratio")
        if "min_lr_rate" in kwargs:
            problems.append(
                f"lr_scheduler = {name}: min_lr_rate in lr_scheduler_args is passed twice by sd-scripts "
                "(TypeError); set lr_scheduler_min_lr_ratio instead"
            )
        elif ratio is None and "min_lr" not in kwargs:
            problems.append(
                f"lr_scheduler = {name} needs lr_scheduler_min_lr_ratio (or min_lr=<lr> in lr_scheduler_args)"
            )
        elif ratio is not None and "min_lr" in kwargs:
            problems.append(f"lr_scheduler = {name}: set lr_scheduler_min_lr_ratio or min_lr, not both")
    if scheduler == "piecewise_constant" and not isinstance(kwargs.get("step_rules"), str):
        problems.append(
            f"lr_scheduler = {name} needs step_rules='<mult>:<steps>,...,<mult>' (quoted) "
            "in lr_scheduler_args"
        )
    return problems


# --- dataset config --------------------------------------------------------------------------------------


def _dataset_type_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":  # voluptuous checks isinstance(value, int), which a bool passes
        return isinstance(value, int)
    if kind == "float":  # a TOML integer fails voluptuous' float check
        return isinstance(value, float)
    if kind == "float|int":
        return isinstance(value, float | int)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "int_or_int_pair":
        return isinstance(value, int) or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)
        )
    if kind == "float_pair":
        return isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
    raise ValueError(f"unknown schema type {kind!r}")


def _merge(groups: Iterable[str]) -> dict[str, str]:
    table = args_data()["dataset_config"]["groups"]
    merged: dict[str, str] = {}
    for group in groups:
        merged.update(table[group])
    return merged


def _check_table(
    table: Any,
    schema: Mapping[str, str],
    where: str,
    problems: list[str],
    required: Iterable[str] = (),
    nested: Mapping[str, str] | None = None,
) -> None:
    if not isinstance(table, dict):
        problems.append(f"{where} must be a table")
        return
    nested = nested or {}
    for key, value in cast(dict[str, Any], table).items():
        if key in nested:
            continue
        if key not in schema:
            problems.append(f"extra keys not allowed @ {where}[{key!r}]{_suggest(key, schema)}")
        elif not _dataset_type_ok(schema[key], value):
            problems.append(f"{where}[{key!r}] = {value!r}: expected {schema[key]}")
        else:
            problem = _range_problem(key, value, DATASET_LIMITS)
            if problem:
                problems.append(f"{where}: {problem}")
    for key in required:
        if key not in table:
            problems.append(f"required key not provided @ {where}[{key!r}]")


def validate_dataset_config(
    data: Mapping[str, Any],
    family: Family,
    *,
    masked_loss: bool = False,
    training: Mapping[str, Any] | None = None,
) -> None:
    """Check a dataset.toml the way ``config_util.ConfigSanitizer`` would, then its run-time asserts.

    ``training`` is the flat config.toml arguments (for the fallbacks and cross checks); ``masked_loss``
    mirrors ``--masked_loss`` (it allows controlnet-style ``conditioning_data_dir`` subsets).
    """
    problems: list[str] = []
    training = training or {}
    sub_asc = ["subset_ascendable", "dreambooth_subset_ascendable", "dropout_subset_ascendable"]
    general_schema = _merge(
        ["dataset_ascendable", *sub_asc] + (["controlnet_subset_ascendable"] if masked_loss else [])
    )
    db_subset = _merge(
        [
            "subset_ascendable",
            "dreambooth_subset_distinct",
            "dreambooth_subset_ascendable",
            "dropout_subset_ascendable",
        ]
    )
    ft_subset = _merge(["subset_ascendable", "finetuning_subset_distinct", "dropout_subset_ascendable"])
    cn_subset = _merge(
        [
            "subset_ascendable",
            "controlnet_subset_distinct",
            "controlnet_subset_ascendable",
            "dropout_subset_ascendable",
        ]
    )
    db_dataset = _merge(["dataset_ascendable", *sub_asc])
    ft_dataset = _merge(["dataset_ascendable", "subset_ascendable", "dropout_subset_ascendable"])
    cn_dataset = _merge(
        [
            "dataset_ascendable",
            "subset_ascendable",
            "controlnet_subset_ascendable",
            "dropout_subset_ascendable",
        ]
    )

    for key in data:
        if key not in ("general", "datasets"):
            problems.append(f"extra keys not allowed @ data[{key!r}]")
    general = data.get("general", {})
    _check_table(general, general_schema, "data['general']", problems)
    datasets = data.get("datasets", [])
    if not isinstance(datasets, list) or not datasets:
        problems.append("datasets must be a non-empty array of tables ([[datasets]])")
        datasets = []
    for d_index, dataset in enumerate(cast(list[Any], datasets)):
        where = f"data['datasets'][{d_index}]"
        subsets = dataset.get("subsets", []) if isinstance(dataset, dict) else []
        if not isinstance(subsets, list) or not subsets:
            problems.append(f"{where} has no subsets ([[datasets.subsets]])")
            subsets = []
        if masked_loss and subsets and all("conditioning_data_dir" in s for s in subsets):
            d_schema, s_schema, required = cn_dataset, cn_subset, ("image_dir", "conditioning_data_dir")
        elif subsets and all("metadata_file" in s for s in subsets):
            d_schema, s_schema, required = ft_dataset, ft_subset, ("metadata_file",)
        elif all("metadata_file" not in s for s in subsets):
            d_schema, s_schema, required = db_dataset, db_subset, ("image_dir",)
        else:
            problems.append(f"{where}: DreamBooth and fine-tuning subsets cannot be mixed in one dataset")
            continue
        _check_table(dataset, d_schema, where, problems, nested={"subsets": "list"})
        for s_index, subset in enumerate(cast(list[Any], subsets)):
            _check_table(subset, s_schema, f"{where}['subsets'][{s_index}]", problems, required=required)
        if isinstance(dataset, dict):
            problems.extend(
                _dataset_runtime_problems(cast(dict[str, Any], dataset), general, training, family, where)
            )
    if problems:
        raise ConfigValidationError("dataset.toml", problems)


def _lookup(
    key: str,
    subset: Mapping[str, Any],
    dataset: Mapping[str, Any],
    general: Mapping[str, Any],
    training: Mapping[str, Any],
) -> Any:
    """subset → dataset → general → argparse value → config_util default (first non-None wins)."""
    arg_name = {"batch_size": "train_batch_size", "num_repeats": "dataset_repeats"}.get(key, key)
    for level in (subset, dataset, general):
        if isinstance(level, Mapping) and level.get(key) is not None:
            return level[key]
    if training.get(arg_name) is not None:
        return training[arg_name]
    return args_data()["dataset_config"]["defaults"].get(key)


def _dataset_runtime_problems(
    dataset: Mapping[str, Any],
    general: Mapping[str, Any],
    training: Mapping[str, Any],
    family: Family,
    where: str,
) -> list[str]:
    problems: list[str] = []
    empty: dict[str, Any] = {}
    raw_resolution = _lookup("resolution", empty, dataset, general, training)
    resolution = parse_resolution(raw_resolution) if raw_resolution is not None else None
    if resolution is None:
        problems.append(f"{where}: resolution is required (sd-scripts asserts 'resolution is required')")
    else:
        if max(resolution) > MAX_RESOLUTION or min(resolution) < MIN_RESOLUTION:
            problems.append(f"{where}: resolution {resolution} outside {MIN_RESOLUTION}..{MAX_RESOLUTION}")
        if _lookup("enable_bucket", empty, dataset, general, training):
            min_b = _lookup("min_bucket_reso", empty, dataset, general, training)
            max_b = _lookup("max_bucket_reso", empty, dataset, general, training)
            if isinstance(max_b, int) and max(resolution) > max_b:
                problems.append(
                    f"{where}: resolution {max(resolution)} is above the bucket limit max_bucket_reso = "
                    f"{max_b} (sd-scripts asserts 'max_bucket_reso must be equal or greater than resolution')"
                )
            if isinstance(min_b, int) and min(resolution) < min_b:
                problems.append(f"{where}: resolution {min(resolution)} is below min_bucket_reso = {min_b}")
    steps = _lookup("bucket_reso_steps", empty, dataset, general, training)
    multiple = BUCKET_STEP_MULTIPLE[family]
    if isinstance(steps, int) and steps % multiple:
        problems.append(
            f"{where}: bucket_reso_steps = {steps} must be divisible by {multiple} for {script_for(family)}"
        )
    caching_latents = training.get("cache_latents") or training.get("cache_latents_to_disk")
    caching_te = training.get("cache_text_encoder_outputs") or training.get(
        "cache_text_encoder_outputs_to_disk"
    )
    for s_index, subset in enumerate(cast(list[Mapping[str, Any]], dataset.get("subsets", []))):
        at = f"{where}['subsets'][{s_index}]"
        if _lookup("caption_extension", subset, dataset, general, training) != ".txt":
            problems.append(
                f"{at}: caption_extension must be '.txt' (sd-scripts defaults to '.caption' and then "
                "trains without captions, with only a warning)"
            )
        if caching_latents and (
            _lookup("color_aug", subset, dataset, general, training)
            or _lookup("random_crop", subset, dataset, general, training)
        ):
            problems.append(f"{at}: color_aug / random_crop cannot be used with cache_latents")
        if caching_te:
            for key in (
                "shuffle_caption",
                "caption_dropout_rate",
                "caption_tag_dropout_rate",
                "token_warmup_step",
            ):
                if _lookup(key, subset, dataset, general, training):
                    problems.append(f"{at}: {key} cannot be used with cache_text_encoder_outputs")
        if _lookup("shuffle_caption", subset, dataset, general, training):
            keep = _lookup("keep_tokens", subset, dataset, general, training)
            separator = _lookup("keep_tokens_separator", subset, dataset, general, empty)
            if not keep and not separator:
                problems.append(f"{at}: shuffle_caption without keep_tokens would move the trigger word")
    return problems
