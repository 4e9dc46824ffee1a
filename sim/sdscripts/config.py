"""Config-file semantics of the pinned sd-scripts: ``--config_file`` and ``--dataset_config``.

``--config_file`` (train_util.read_config_from_file): every table's keys are flattened into one
namespace, top-level scalars too; the namespace is then handed to ``parser.parse_args`` so the
precedence is CLI > file > argparse default. Values from the file are neither type-converted nor
checked against ``choices``, and unknown keys are accepted silently. The stand-in reproduces that and
records the ignored keys (``ignored_keys``) so tests and the report can see typos the real one hides.

``--dataset_config`` (config_util): validated strictly (voluptuous, no extra keys) with the schema
below; values fall back subset → dataset → general → argparse namespace → built-in default.

Both files are read with ``toml`` 0.10.2, the parser sd-scripts pins (requirements.txt), not with
``tomllib``: it refuses some documents tomllib accepts (a mixed int/float array is "Not a homogeneous
array"), and a file the bot writes must be read the way the real trainer reads it.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toml

# train_util.IMAGE_EXTENSIONS: exact, case-sensitive suffixes (".Jpg" is not among them). The avif and
# jxl entries are added only when their Pillow plug-ins import, and requirements.txt installs neither.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP")


class ConfigExit(Exception):
    """read_config_from_file's ``exit(code)`` after logging ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def read_config_file(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    argv: list[str],
    log: Callable[[str], None] = lambda _message: None,
) -> tuple[argparse.Namespace, list[str], str | None]:
    """Applies ``--config_file``; returns (args, keys the parser does not know, the path loaded).

    ``log`` gets "Loading settings from ..." before the file is parsed, as the real one logs it; a file
    toml 0.10.2 cannot read raises its ``toml.decoder.TomlDecodeError`` (a traceback, exit 1)."""
    if not args.config_file:
        return args, [], None
    path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
    if args.output_config:
        # Not used by loraops; the real one dumps the CLI args and exits. Refuse to pretend.
        raise ConfigExit(1, "--output_config is not supported by the stand-in")
    if not os.path.exists(path):
        raise ConfigExit(1, f"{path} not found.")
    log(f"Loading settings from {path}...")
    with open(path, encoding="utf-8") as handle:
        data = toml.load(handle)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    known = {action.dest for action in parser._actions}
    ignored = sorted(key for key in flat if key not in known)
    merged = parser.parse_args(argv, namespace=argparse.Namespace(**flat))
    merged.config_file = os.path.splitext(merged.config_file)[0]
    return merged, ignored, path


# ---- dataset config schema (config_util.ConfigSanitizer, DreamBooth + fine-tuning, dropout on) ----

_INT, _BOOL, _STR, _FLOAT, _DICT = "int", "bool", "str", "float", "dict"
_NUM = "float_or_int"
_PAIR_FLOAT = "pair_float"
_INT_OR_PAIR = "int_or_pair_int"

_SUBSET_ASCENDABLE = {
    "color_aug": _BOOL,
    "face_crop_aug_range": _PAIR_FLOAT,
    "flip_aug": _BOOL,
    "num_repeats": _INT,
    "random_crop": _BOOL,
    "shuffle_caption": _BOOL,
    "keep_tokens": _INT,
    "keep_tokens_separator": _STR,
    "secondary_separator": _STR,
    "caption_separator": _STR,
    "enable_wildcard": _BOOL,
    "token_warmup_min": _INT,
    "token_warmup_step": _NUM,
    "caption_prefix": _STR,
    "caption_suffix": _STR,
    "custom_attributes": _DICT,
    "resize_interpolation": _STR,
}
_DROPOUT_ASCENDABLE = {
    "caption_dropout_every_n_epochs": _INT,
    "caption_dropout_rate": _NUM,
    "caption_tag_dropout_rate": _NUM,
}
_DB_ASCENDABLE = {"caption_extension": _STR, "class_tokens": _STR, "cache_info": _BOOL}
_DB_DISTINCT = {"image_dir": _STR, "is_reg": _BOOL, "alpha_mask": _BOOL}
_FT_DISTINCT = {"metadata_file": _STR, "image_dir": _STR, "alpha_mask": _BOOL}
_CN_ASCENDABLE = {"caption_extension": _STR, "cache_info": _BOOL}
_CN_DISTINCT = {"image_dir": _STR, "conditioning_data_dir": _STR}
_DATASET_ASCENDABLE = {
    "batch_size": _INT,
    "bucket_no_upscale": _BOOL,
    "bucket_reso_steps": _INT,
    "enable_bucket": _BOOL,
    "max_bucket_reso": _INT,
    "min_bucket_reso": _INT,
    "validation_seed": _INT,
    "validation_split": _FLOAT,
    "resolution": _INT_OR_PAIR,
    "network_multiplier": _FLOAT,
    "resize_interpolation": _STR,
}

DB_SUBSET = {**_SUBSET_ASCENDABLE, **_DB_DISTINCT, **_DB_ASCENDABLE, **_DROPOUT_ASCENDABLE}
FT_SUBSET = {**_SUBSET_ASCENDABLE, **_FT_DISTINCT, **_DROPOUT_ASCENDABLE}
CN_SUBSET = {**_SUBSET_ASCENDABLE, **_CN_DISTINCT, **_CN_ASCENDABLE, **_DROPOUT_ASCENDABLE}
DB_DATASET = {**_DATASET_ASCENDABLE, **_SUBSET_ASCENDABLE, **_DB_ASCENDABLE, **_DROPOUT_ASCENDABLE}
FT_DATASET = {**_DATASET_ASCENDABLE, **_SUBSET_ASCENDABLE, **_DROPOUT_ASCENDABLE}
CN_DATASET = {**_DATASET_ASCENDABLE, **_SUBSET_ASCENDABLE, **_CN_ASCENDABLE, **_DROPOUT_ASCENDABLE}
GENERAL = {**_DATASET_ASCENDABLE, **_SUBSET_ASCENDABLE, **_DB_ASCENDABLE, **_DROPOUT_ASCENDABLE}
_REQUIRED = {"db": ("image_dir",), "ft": ("metadata_file",), "cn": ("image_dir", "conditioning_data_dir")}
# ConfigSanitizer.argparse_schema: the general schema plus argparse-only options and the two renamed
# ones; checked against every attribute of the parsed namespace (config-file keys included, since
# read_config_from_file makes each of them an attribute), None values skipped.
ARGPARSE_SCHEMA = {
    **GENERAL,
    "debug_dataset": _BOOL,
    "max_token_length": _INT,
    "prior_loss_weight": _NUM,
    "train_batch_size": _INT,
    "dataset_repeats": _INT,
}


class DatasetConfigInvalid(Exception):
    """voluptuous.error.MultipleInvalid: its str() is the first error, as voluptuous prints it."""


def _path(parts: list[str | int]) -> str:
    return "data" + "".join(f"[{part!r}]" for part in parts)


def _type_ok(kind: str, value: Any) -> bool:
    # voluptuous type validators are isinstance checks: True passes as int, 1 fails as float.
    if kind == _INT:
        return isinstance(value, int)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _FLOAT:
        return isinstance(value, float)
    if kind == _NUM:
        return isinstance(value, int | float)
    if kind == _DICT:
        return isinstance(value, dict)
    # ExactSequence takes a list (TOML) or a tuple (what prepare_dataset_args makes of the CLI text).
    if kind == _PAIR_FLOAT:
        pair = isinstance(value, list | tuple) and len(value) == 2
        return pair and all(isinstance(v, float) for v in value)
    if kind == _INT_OR_PAIR:
        if isinstance(value, int):
            return True
        return isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
    raise AssertionError(kind)


def _label(kind: str) -> str:
    return {_NUM: "float", _PAIR_FLOAT: "float", _INT_OR_PAIR: "int"}.get(kind, kind)


def check_argparse_namespace(args: argparse.Namespace) -> None:
    """ConfigSanitizer.sanitize_argparse_namespace: raises ``DatasetConfigInvalid`` at the first
    attribute whose (non-None) value does not have the schema's type, as voluptuous words it."""
    for key, value in vars(args).items():
        kind = ARGPARSE_SCHEMA.get(key)
        if kind is not None and value is not None and not _type_ok(kind, value):
            raise DatasetConfigInvalid(f"expected {_label(kind)} for object value @ data[{key!r}]")


def _check_mapping(
    data: Any, schema: dict[str, str], where: list[str | int], required: tuple[str, ...] = ()
) -> None:
    if not isinstance(data, dict):
        raise DatasetConfigInvalid(f"expected a dictionary @ {_path(where)}")
    for key, value in data.items():
        if key not in schema:
            raise DatasetConfigInvalid(f"extra keys not allowed @ {_path([*where, key])}")
        kind = schema[key]
        if not _type_ok(kind, value):
            where_key = _path([*where, key])
            raise DatasetConfigInvalid(f"expected {_label(kind)} for dictionary value @ {where_key}")
    for key in required:
        if key not in data:
            raise DatasetConfigInvalid(f"required key not provided @ {_path([*where, key])}")


def validate_dataset_config(config: dict[str, Any], *, support_controlnet: bool = False) -> None:
    """Raises ``DatasetConfigInvalid`` where config_util's voluptuous schema would.

    train_network.py builds ``ConfigSanitizer(True, True, args.masked_loss, True)``: the controlnet
    (mask directory) schema exists only with ``--masked_loss``, and then a dataset whose every subset
    has ``conditioning_data_dir`` (vacuously: one with no subsets) is validated with it. Without it,
    ``conditioning_data_dir`` is an extra key of a DreamBooth subset; a dataset without subsets falls
    on the fine-tuning schema (every one of its zero subsets has ``metadata_file``).
    """
    for key in config:
        if key not in ("general", "datasets"):
            raise DatasetConfigInvalid(f"extra keys not allowed @ {_path([key])}")
    if "general" in config:
        _check_mapping(config["general"], GENERAL, ["general"])
    datasets = config.get("datasets", [])
    if not isinstance(datasets, list):
        raise DatasetConfigInvalid(f"expected a list for dictionary value @ {_path(['datasets'])}")
    for index, dataset in enumerate(datasets):
        where: list[str | int] = ["datasets", index]
        if not isinstance(dataset, dict):
            raise DatasetConfigInvalid(f"expected a dictionary @ {_path(where)}")
        subsets = dataset.get("subsets", [])
        if not isinstance(subsets, list):
            raise DatasetConfigInvalid(f"expected a list for dictionary value @ {_path([*where, 'subsets'])}")
        dicts = [s if isinstance(s, dict) else {} for s in subsets]
        if support_controlnet and all("conditioning_data_dir" in s for s in dicts):
            kind, dataset_schema, subset_schema = "cn", CN_DATASET, CN_SUBSET
        elif all("metadata_file" in s for s in dicts):
            kind, dataset_schema, subset_schema = "ft", FT_DATASET, FT_SUBSET
        elif all("metadata_file" not in s for s in dicts):
            kind, dataset_schema, subset_schema = "db", DB_DATASET, DB_SUBSET
        else:
            raise DatasetConfigInvalid(
                "DreamBooth subset and fine tuning subset cannot be mixed in the same dataset. "
                f"Please split them into separate datasets. @ {_path(where)}"
            )
        _check_mapping({k: v for k, v in dataset.items() if k != "subsets"}, dataset_schema, where)
        for sub_index, subset in enumerate(subsets):
            _check_mapping(subset, subset_schema, [*where, "subsets", sub_index], _REQUIRED[kind])


def load_dataset_config(path: str) -> dict[str, Any]:
    """config_util.load_user_config: .toml or .json only; a missing file is a ValueError."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"file not found / ファイルが見つかりません: {file}")
    name = file.name.lower()
    if name.endswith(".toml"):
        return toml.load(file)  # a file toml 0.10.2 cannot read raises (the real one logs, then raises)
    if name.endswith(".json"):
        import json

        return json.loads(file.read_text())
    raise ValueError(f"not supported config file format / 対応していない設定ファイルの形式です: {file}")


# ---- the resolved dataset (BlueprintGenerator fallbacks + DreamBoothDataset image scan) ----

_ARG_TO_CONFIG = {"train_batch_size": "batch_size", "dataset_repeats": "num_repeats"}
_DEFAULTS: dict[str, Any] = {
    "num_repeats": 1,
    "batch_size": 1,
    "enable_bucket": False,
    "min_bucket_reso": 256,
    "max_bucket_reso": 1024,
    "bucket_reso_steps": 64,
    "bucket_no_upscale": False,
    "caption_extension": ".caption",
    "shuffle_caption": False,
    "keep_tokens": 0,
    "color_aug": False,
    "flip_aug": False,
    "random_crop": False,
    "is_reg": False,
    "caption_dropout_rate": 0.0,
    "caption_tag_dropout_rate": 0.0,
    "token_warmup_step": 0,
    "validation_split": 0.0,
}


@dataclass
class Subset:
    image_dir: str
    num_repeats: int
    is_reg: bool
    class_tokens: str | None
    caption_extension: str
    params: dict[str, Any]
    images: list[Path] = field(default_factory=list)
    missing_captions: int = 0


@dataclass
class Dataset:
    resolution: tuple[int, int]
    batch_size: int
    params: dict[str, Any]
    subsets: list[Subset]

    @property
    def num_train_images(self) -> int:
        return sum(s.num_repeats * len(s.images) for s in self.subsets if not s.is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(s.num_repeats * len(s.images) for s in self.subsets if s.is_reg)


def _lookup(name: str, *levels: dict[str, Any], args: argparse.Namespace) -> Any:
    for level in levels:
        if level.get(name) is not None:
            return level[name]
    arg_name = next((a for a, c in _ARG_TO_CONFIG.items() if c == name), name)
    value = getattr(args, arg_name, None)
    if value is not None:
        return value
    return _DEFAULTS.get(name)


def images_in(directory: str) -> list[Path]:
    """train_util.glob_images(dir, "*"): ``*<ext>`` for each exact extension, never recursive.

    Case-sensitive, so ``x.Jpg`` is not an image; ``glob`` skips names starting with a dot, so neither
    is ``.x.png`` (macOS ``._x.jpg`` resource forks included).
    """
    found: set[str] = set()
    for ext in IMAGE_EXTENSIONS:
        found.update(glob.glob(os.path.join(glob.escape(directory), "*" + ext)))
    return [Path(p) for p in sorted(found) if os.path.isfile(p)]


def resolve_datasets(config: dict[str, Any], args: argparse.Namespace) -> list[Dataset]:
    """The datasets with every value resolved by the fallback chain, images not yet scanned."""
    general = config.get("general", {})
    result: list[Dataset] = []
    for dataset in config.get("datasets", []):
        level = {k: v for k, v in dataset.items() if k != "subsets"}
        resolution = _lookup("resolution", level, general, args=args)
        if resolution is None:
            raise AssertionError("resolution is required / resolution（解像度）指定は必須です")
        if isinstance(resolution, int):
            resolution = (resolution, resolution)
        subsets: list[Subset] = []
        for raw in dataset.get("subsets", []):
            ext = _lookup("caption_extension", raw, level, general, args=args)
            if ext and not ext.startswith("."):
                ext = "." + ext
            params = {
                name: _lookup(name, raw, level, general, args=args)
                for name in (
                    "shuffle_caption",
                    "color_aug",
                    "random_crop",
                    "flip_aug",
                    "keep_tokens",
                    "caption_dropout_rate",
                    "caption_tag_dropout_rate",
                    "token_warmup_step",
                )
            }
            subsets.append(
                Subset(
                    image_dir=raw.get("image_dir", ""),
                    num_repeats=_lookup("num_repeats", raw, level, general, args=args),
                    is_reg=bool(raw.get("is_reg", False)),
                    class_tokens=_lookup("class_tokens", raw, level, general, args=args),
                    caption_extension=ext,
                    params=params,
                )
            )
        params = {
            name: _lookup(name, level, general, args=args)
            for name in (
                "enable_bucket",
                "min_bucket_reso",
                "max_bucket_reso",
                "bucket_reso_steps",
                "bucket_no_upscale",
                "validation_split",
            )
        }
        result.append(
            Dataset(
                (resolution[0], resolution[1]),
                _lookup("batch_size", level, general, args=args),
                params,
                subsets,
            )
        )
    return result
