"""Training presets: TOML data files in ``presets/`` whose comments explain each choice.

A preset file has these tables:

- ``[preset]`` name, family (sd15|sdxl|flux), summary, min_vram_gb, early_stop_patience;
- ``[base_model]`` where the pod fetches the base checkpoint (Hugging Face repo + file; Flux lists its
  CLIP-L, T5-XXL and autoencoder as ``[[base_model.extra]]`` with a ``role``);
- ``[speed_s_per_it]`` seconds per optimizer step per RunPod GPU type id, for the estimator;
- ``[face]`` crops_subset, alpha_mask (face-weighted loss) and the mask shape;
- ``[subsets.full]`` / ``[subsets.face_crops]`` per-subset dataset.toml keys (num_repeats ...);
- ``[dataset]`` dataset.toml keys (general + dataset level);
- ``[train]`` config.toml keys: sd-scripts argument names, verbatim;
- ``[sampling]`` sample size/steps/CFG/negative and ``[[sampling.prompts]]`` (kind, text, fixed seed).

Per-run overrides are ``KEY=VALUE`` strings (:func:`apply_overrides`): an sd-scripts argument name
(``network_dim=32``), a dataset key (``resolution=768``), ``face_crops.num_repeats=3``,
``face.background=0.2``, ``preset.early_stop_patience=5``, or a friendly alias (steps, rank, dim, alpha,
lr). Values are parsed as TOML (``1e-4``, ``true``, ``["a=1"]``), else taken as text, then converted to
the type the target expects; anything unknown is refused with the nearest known names.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from bot.errors import InvalidInputError, NotFoundError
from bot.training import sdscripts_schema as schema

PRESETS_DIR = Path(__file__).with_name("presets")
SUBSET_NAMES = ("full", "face_crops")
ALIASES = {
    "steps": "max_train_steps",
    "rank": "network_dim",
    "dim": "network_dim",
    "alpha": "network_alpha",
    "lr": "learning_rate",
    "batch": "train_batch_size",
    "optimizer": "optimizer_type",
    "scheduler": "lr_scheduler",
    "precision": "mixed_precision",
    "repeats": "full.num_repeats",
}
FACE_KEYS: dict[str, type] = {
    "crops_subset": bool,
    "alpha_mask": bool,
    "background": float,
    "margin": float,
    "feather": float,
}
PRESET_KEYS: dict[str, type] = {"early_stop_patience": int, "min_vram_gb": int}
SAMPLING_KEYS: dict[str, type] = {
    "width": int,
    "height": int,
    "steps": int,
    "cfg": float,
    "guidance": float,
    "negative": str,
}


class OverrideError(InvalidInputError):
    """A ``KEY=VALUE`` override that names nothing or cannot have that value."""


@dataclass(frozen=True)
class SamplePrompt:
    kind: str
    text: str  # with {trigger} and {class} placeholders
    seed: int
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Preset:
    """One preset, as loaded (and possibly overridden). ``data`` is the whole TOML document."""

    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["preset"]["name"])

    @property
    def family(self) -> schema.Family:
        return cast(schema.Family, self.data["preset"]["family"])

    @property
    def summary(self) -> str:
        return str(self.data["preset"].get("summary", ""))

    @property
    def min_vram_gb(self) -> int:
        return int(self.data["preset"]["min_vram_gb"])

    @property
    def early_stop_patience(self) -> int:
        return int(self.data["preset"]["early_stop_patience"])

    @property
    def base_model(self) -> dict[str, Any]:
        return dict(self.data["base_model"])

    @property
    def speed_s_per_it(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.data.get("speed_s_per_it", {}).items()}

    @property
    def train(self) -> dict[str, Any]:
        return dict(self.data["train"])

    @property
    def dataset(self) -> dict[str, Any]:
        return dict(self.data["dataset"])

    @property
    def face(self) -> dict[str, Any]:
        return dict(self.data.get("face", {}))

    @property
    def subsets(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.data.get("subsets", {}).items()}

    @property
    def max_train_steps(self) -> int:
        return int(self.train["max_train_steps"])

    @property
    def checkpoint_every_n_steps(self) -> int | None:
        return self.train.get("save_every_n_steps")

    @property
    def sample_every_n_steps(self) -> int | None:
        return self.train.get("sample_every_n_steps")

    @property
    def sampling(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.get("sampling", {}).items() if k != "prompts"}

    @property
    def prompts(self) -> list[SamplePrompt]:
        return [
            SamplePrompt(
                kind=p["kind"],
                text=p["text"],
                seed=int(p["seed"]),
                width=p.get("width"),
                height=p.get("height"),
            )
            for p in self.data.get("sampling", {}).get("prompts", [])
        ]

    def speed_for(self, gpu_type_id: str) -> float | None:
        """Seconds per step on ``gpu_type_id`` (a RunPod GPU type id), or None when unknown."""
        return self.speed_s_per_it.get(gpu_type_id)


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.toml"


@cache
def _load_raw(name: str) -> dict[str, Any]:
    path = preset_path(name)
    if not path.is_file():
        raise NotFoundError(f"no preset named {name!r}; known presets: {', '.join(preset_names())}")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if data.get("preset", {}).get("name") != name:
        raise ValueError(f"{path}: [preset] name must be {name!r}")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name: str) -> Preset:
    """The named preset (a fresh copy: callers may override it freely)."""
    return Preset(copy.deepcopy(_load_raw(name)))


def all_presets() -> list[Preset]:
    return [load_preset(name) for name in preset_names()]


def parse_override_strings(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b = x"]`` → ``{"a": "1", "b": "x"}``; a string without ``=`` is refused."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"override {item!r} must look like KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(key: str, raw: str, kind: str | type | None, *, nargs: Any = None) -> Any:
    """``raw`` converted to ``kind`` (an sd-scripts arg type name, or a Python type)."""
    value = _parse_value(raw)
    wanted = (
        {
            "str": str,
            "path": str,
            "int": int,
            "float": float,
            "int_or_float": (int, float),
            "bool": bool,
            "store_true": bool,
        }.get(kind, kind)
        if isinstance(kind, str)
        else kind
    )
    if nargs is not None:
        items = value if isinstance(value, list) else [v for v in str(raw).split() if v]
        return [_coerce(key, str(v) if not isinstance(v, str) else f'"{v}"', kind) for v in items]
    if wanted is bool:
        if isinstance(value, bool):
            return value
        lowered = str(raw).lower()
        if lowered in ("yes", "on", "1", "true"):
            return True
        if lowered in ("no", "off", "0", "false"):
            return False
        raise OverrideError(f"{key}={raw}: expected true or false")
    if wanted is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise OverrideError(f"{key}={raw}: expected a whole number")
    if wanted is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise OverrideError(f"{key}={raw}: expected a number")
    if wanted == (int, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise OverrideError(
            f"{key}={raw}: expected a number (an integer counts steps, a fraction < 1 a ratio)"
        )
    if wanted is str:
        return value if isinstance(value, str) else raw
    return value


def _dataset_schema_types(level: str) -> dict[str, str]:
    """dataset.toml keys and their schema types at ``general`` or ``subset`` level."""
    groups = schema.args_data()["dataset_config"]["groups"]
    names = (
        [
            "dataset_ascendable",
            "subset_ascendable",
            "dreambooth_subset_ascendable",
            "dropout_subset_ascendable",
        ]
        if level == "general"
        else [
            "subset_ascendable",
            "dreambooth_subset_distinct",
            "dreambooth_subset_ascendable",
            "dropout_subset_ascendable",
        ]
    )
    merged: dict[str, str] = {}
    for group in names:
        merged.update(groups[group])
    return merged


def _dataset_coerce(key: str, raw: str, kind: str) -> Any:
    if kind == "int_or_int_pair":
        value = _parse_value(raw)
        if isinstance(value, str) and "," in value:
            value = [_parse_value(v) for v in value.split(",")]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return value
        raise OverrideError(f"{key}={raw}: expected a size like 1024 or [832, 1216]")
    if kind == "float_pair":
        value = _parse_value(raw)
        if isinstance(value, list) and len(value) == 2:
            return [float(v) for v in value]
        raise OverrideError(f"{key}={raw}: expected [low, high]")
    return _coerce(key, raw, {"float|int": "int_or_float", "dict": None}.get(kind, kind))


def apply_overrides(preset: Preset, overrides: Mapping[str, str]) -> tuple[Preset, dict[str, Any]]:
    """A new preset with ``overrides`` applied, and the typed values that were set (for the job row).

    Raises :class:`OverrideError` naming every unknown key (with close matches) or unparsable value.
    Range and combination checks happen when rendering (``render.render``), on the final files.
    """
    data = copy.deepcopy(preset.data)
    args = schema.arguments(preset.family)
    general_types = _dataset_schema_types("general")
    subset_types = _dataset_schema_types("subset")
    per_subset = {k for sub in preset.subsets.values() for k in sub}
    applied: dict[str, Any] = {}
    problems: list[str] = []
    for raw_key, raw_value in overrides.items():
        key = ALIASES.get(raw_key, raw_key)
        try:
            section, _, name = key.rpartition(".")
            if section in SUBSET_NAMES:
                if name not in subset_types:
                    raise OverrideError(f"unknown subset key {name!r}{_near(name, subset_types)}")
                value = _dataset_coerce(key, raw_value, subset_types[name])
                data.setdefault("subsets", {}).setdefault(section, {})[name] = value
            elif section == "face":
                if name not in FACE_KEYS:
                    raise OverrideError(f"unknown face option {name!r}; known: {', '.join(FACE_KEYS)}")
                value = _coerce(key, raw_value, FACE_KEYS[name])
                data.setdefault("face", {})[name] = value
            elif section == "preset":
                if name not in PRESET_KEYS:
                    raise OverrideError(
                        f"preset.{name} cannot be overridden; known: {', '.join(PRESET_KEYS)}"
                    )
                value = _coerce(key, raw_value, PRESET_KEYS[name])
                data["preset"][name] = value
            elif section == "sampling":
                if name not in SAMPLING_KEYS:
                    raise OverrideError(
                        f"unknown sampling option {name!r}; known: {', '.join(SAMPLING_KEYS)}"
                    )
                value = _coerce(key, raw_value, SAMPLING_KEYS[name])
                data.setdefault("sampling", {})[name] = value
            elif section:
                raise OverrideError(f"unknown override section {section!r} in {raw_key!r}")
            elif name in per_subset:
                raise OverrideError(
                    f"{name} is set per subset in this preset: say "
                    f"{' or '.join(f'{s}.{name}' for s in preset.subsets)}"
                )
            elif name in general_types:
                # dataset.toml wins over config.toml for these, so they must be set there
                value = _dataset_coerce(key, raw_value, general_types[name])
                data["dataset"][name] = value
            elif name in args:
                spec = args[name]
                kind = spec.kind if spec.kind != "store" else spec.type
                value = _coerce(key, raw_value, kind, nargs=spec.nargs)
                if name == "text_encoder_lr" and isinstance(value, list) and len(value) == 1:
                    value = value[0]
                data["train"][name] = value
            else:
                raise OverrideError(
                    f"unknown key {raw_key!r}: not an argument of {schema.script_for(preset.family)} "
                    f"{schema.release()} nor a dataset key{_near(name, [*args, *general_types, *ALIASES])}"
                )
            applied[key] = value
        except OverrideError as exc:
            problems.append(str(exc))
    if problems:
        raise OverrideError("overrides refused:\n" + "\n".join(f"  - {p}" for p in problems))
    return Preset(data), applied


def _near(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.7)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
