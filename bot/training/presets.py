"""Training presets: TOML data files in ``presets/`` whose comments explain each choice.

A preset file has these tables:

- ``[preset]`` name, family (sd15|sdxl|flux), summary, min_vram_gb, early_stop_patience,
  face_alarm_checkpoint, face_alarm_fraction (when the face alarm judges);
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
the type the target expects. Only the settings of the allow-list (:mod:`bot.training.overrides`, per
preset family, with types and ranges) may be set; a key the bot owns is refused with the reason, an
unknown one with the nearest known names. :func:`check_overrides` is what the commands call first.
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

from bot.errors import NotFoundError
from bot.text import quote_inline
from bot.training import overrides as overrides_mod
from bot.training import sdscripts_schema as schema
from bot.training.overrides import ALIASES, ALLOWED, Allowed

PRESETS_DIR = Path(__file__).with_name("presets")
SUBSET_NAMES = ("full", "face_crops")


class OverrideError(schema.ConfigValidationError):
    """Overrides refused: each problem names the key and says why (one message lists them all).

    A :class:`~bot.training.sdscripts_schema.ConfigValidationError`, so a refusal found while applying
    overrides reads like one found in the rendered files.
    """

    def __init__(self, problems: str | Iterable[str], what: str = "overrides") -> None:
        super().__init__(what, [problems] if isinstance(problems, str) else problems)


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
    def face_alarm(self) -> dict[str, float | int]:
        """When the face alarm judges (bot.review.verdict.AlarmPolicy): checkpoint and share of steps."""
        preset = self.data["preset"]
        return {
            "checkpoint": int(preset.get("face_alarm_checkpoint", 2)),
            "fraction": float(preset.get("face_alarm_fraction", 0.3)),
        }

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
        raise NotFoundError(
            f"no preset named {quote_inline(name, 40)}; known presets: {', '.join(preset_names())}"
        )
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
    problems: list[str] = []
    items = list(items)
    crowd = overrides_mod.too_many(items)
    if crowd:
        raise OverrideError(crowd)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {_shown(item)} must look like KEY=VALUE")
            continue
        out[key.strip()] = value.strip()
    if problems:
        raise OverrideError(problems)
    return out


def parse_override_text(text: str | None) -> dict[str, str]:
    """What people type (``rank=16, lr=1e-4 "sampling.negative=blurry, dark"``) → ``{key: raw value}``."""
    if not text or not text.strip():
        return {}
    return parse_override_strings(overrides_mod.split_overrides(text))


def check_overrides(preset: str, text_or_params: str | Mapping[str, str] | None) -> dict[str, str]:
    """The raw overrides, after checking them against ``preset`` (:func:`apply_overrides`' refusals).

    What the cogs call before deferring, so a refusal is private and comes before any spend. Besides the
    allow-list, each value set is held to the schema's own type and range rules for that key (the same
    functions rendering applies to the whole file), so ``rank=0`` is refused here too; only checks that
    need the whole configuration wait for rendering.
    """
    params = (
        parse_override_text(text_or_params)
        if isinstance(text_or_params, str) or text_or_params is None
        else {str(k): str(v) for k, v in text_or_params.items()}
    )
    chosen = load_preset(preset)
    _, applied = apply_overrides(chosen, params)
    args = schema.arguments(chosen.family)
    general = _dataset_schema_types("general")
    problems: list[str] = []
    for key, value in applied.items():
        section, _, name = key.rpartition(".")
        if section in SUBSET_NAMES or (not section and name in general):
            problem = schema._range_problem(name, value, schema.DATASET_LIMITS)
        elif not section and name in args and ALLOWED[key].kind != "optimizer_args":
            kind = schema._type_problem(args[name], value)
            shown = _shown(value) if isinstance(value, str) else repr(value)
            problem = (
                f"{name} = {shown}: {kind}" if kind else schema._range_problem(name, value, schema.LIMITS)
            )
        else:
            problem = None
        if problem:
            problems.append(problem)
    if problems:
        raise OverrideError(problems)
    return params


def _shown(text: str, limit: int = 60) -> str:
    """User text inside a refusal: an inline code span, cleaned and bounded (bot.text)."""
    return quote_inline(text, limit)


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
        raise OverrideError(f"{key} = {_shown(raw)}: expected true or false")
    if wanted is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise OverrideError(f"{key} = {_shown(raw)}: expected a whole number")
    if wanted is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # a 400-digit integer
                raise OverrideError(f"{key} = {_shown(raw)}: must be a finite number") from None
        raise OverrideError(f"{key} = {_shown(raw)}: expected a number")
    if wanted == (int, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise OverrideError(
            f"{key} = {_shown(raw)}: expected a number (an integer counts steps, a fraction < 1 a ratio)"
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
        raise OverrideError(f"{key} = {_shown(raw)}: expected a size like 1024 or [832, 1216]")
    if kind == "float_pair":
        value = _parse_value(raw)
        if isinstance(value, list) and len(value) == 2:
            return [float(v) for v in value]
        raise OverrideError(f"{key} = {_shown(raw)}: expected [low, high]")
    return _coerce(key, raw, {"float|int": "int_or_float", "dict": None}.get(kind, kind))


def apply_overrides(preset: Preset, overrides: Mapping[str, str]) -> tuple[Preset, dict[str, Any]]:
    """A new preset with ``overrides`` applied, and the typed values that were set (for the job row).

    Only the settings of :data:`bot.training.overrides.ALLOWED` for the preset's family may be set,
    each checked for type, finiteness and range. Raises :class:`OverrideError` listing every problem:
    a key the bot owns (with why), an unknown key (with close matches), a bad value. Checks that need
    the whole configuration (bucket limits, precision combinations) happen when rendering
    (``render.render``), on the final files.
    """
    data = copy.deepcopy(preset.data)
    family = preset.family
    args = schema.arguments(family)
    general_types = _dataset_schema_types("general")
    subset_types = _dataset_schema_types("subset")
    per_subset = {k for sub in preset.subsets.values() for k in sub}
    applied: dict[str, Any] = {}
    problems: list[str] = []
    refused_keys = False
    for raw_key, raw_value in overrides.items():
        key = ALIASES.get(raw_key, raw_key)
        section, _, name = key.rpartition(".")
        try:
            if len(raw_value) > overrides_mod.MAX_VALUE_CHARS:
                raise OverrideError(
                    f"{key}: the value is longer than {overrides_mod.MAX_VALUE_CHARS} characters"
                )
            if not section and name in per_subset:
                raise OverrideError(
                    f"{name} is set per subset in this preset: say "
                    f"{' or '.join(f'{s}.{name}' for s in preset.subsets)}"
                )
            spec = ALLOWED.get(key)
            if spec is None or family not in spec.families:
                why, unknown = _not_allowed(preset, raw_key, key, family, args, general_types, subset_types)
                refused_keys |= unknown
                raise OverrideError(why)
            value = _typed_value(key, raw_value, spec, family, args, general_types, subset_types)
            _check_value(key, value, spec, preset)
            if section in SUBSET_NAMES:
                data.setdefault("subsets", {}).setdefault(section, {})[name] = value
            elif section in ("face", "sampling"):
                data.setdefault(section, {})[name] = value
            elif section == "preset":
                data["preset"][name] = value
            elif name in general_types:
                # dataset.toml wins over config.toml for these, so they must be set there
                data["dataset"][name] = value
            else:
                data["train"][name] = value
            applied[key] = value
        except OverrideError as exc:
            problems.extend(exc.problems)
    if problems:
        if refused_keys:
            problems.append(
                f"settings you can change for {family}: " + ", ".join(overrides_mod.allowed_for(family))
            )
        raise OverrideError(problems)
    return Preset(data), applied


def _not_allowed(
    preset: Preset,
    raw_key: str,
    key: str,
    family: str,
    args: Mapping[str, Any],
    general_types: Mapping[str, str],
    subset_types: Mapping[str, str],
) -> tuple[str, bool]:
    """Why ``key`` may not be set, naming it; and whether to list what may be set instead."""
    shown = _shown(raw_key, 40)
    section, _, name = key.rpartition(".")
    reason = overrides_mod.refusal_reason(name)
    if reason is not None:
        return f"{shown} is refused: {reason}", False
    spec = ALLOWED.get(key)
    if spec is not None:
        others = ", ".join(sorted(spec.families))
        return f"{shown} does not apply to {family} presets (only {others})", False
    known = name in args or name in general_types or (section in SUBSET_NAMES and name in subset_types)
    if section in ("face", "preset", "sampling"):
        options = [
            k.partition(".")[2] for k in overrides_mod.allowed_for(family) if k.startswith(f"{section}.")
        ]
        listed = ", ".join(options)
        if name in preset.data.get(section, {}):
            return f"{shown} cannot be changed from chat; {section} options you can change: {listed}", False
        return f"unknown {section} option {_shown(name, 40)}; known: {listed}", False
    if known:
        return f"{shown} cannot be changed from chat", True
    if section and section not in SUBSET_NAMES:
        return f"unknown override section {_shown(section, 40)} in {shown}", True
    candidates = [k for k, s in ALLOWED.items() if family in s.families] + list(ALIASES)
    return (
        f"unknown key {shown}: not an argument of {schema.script_for(preset_family(family))} "
        f"{schema.release()} nor a dataset key{_near(name, candidates)}",
        True,
    )


def preset_family(family: str) -> schema.Family:
    return cast(schema.Family, family)


def _typed_value(
    key: str,
    raw: str,
    spec: Allowed,
    family: str,
    args: Mapping[str, Any],
    general_types: Mapping[str, str],
    subset_types: Mapping[str, str],
) -> Any:
    section, _, name = key.rpartition(".")
    if spec.kind == "optimizer_args":
        clean, problems = overrides_mod.parse_optimizer_args(key, _parse_value(raw))
        if problems:
            raise OverrideError(problems)
        return clean
    if section in SUBSET_NAMES:
        return _dataset_coerce(key, raw, subset_types[name])
    if not section and name in general_types:
        return _dataset_coerce(key, raw, general_types[name])
    if not section and name in args:
        arg = args[name]
        value = _coerce(key, raw, arg.kind if arg.kind != "store" else arg.type, nargs=arg.nargs)
        if name == "text_encoder_lr" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        return value
    kind = {"int": int, "float": float, "bool": bool, "str": str, "number": (int, float)}[spec.kind]
    return _coerce(key, raw, "int_or_float" if kind == (int, float) else kind)  # type: ignore[arg-type]


def _check_value(key: str, value: Any, spec: Allowed, preset: Preset) -> None:
    """Finiteness, text shape and the allow-list's own ranges.

    sd-scripts arguments and dataset keys are also checked for type, choices and the schema's ranges
    (``LIMITS``, ``DATASET_LIMITS``) when the files are rendered, where those checks have their one home
    and every problem of the whole configuration is listed together — still before anything is rented.
    NaN and the infinities pass any ``<``/``>`` range check, so they are refused here for every key.
    """
    problems: list[str] = []
    finite = overrides_mod.finite_problem(key, value)
    if finite:
        raise OverrideError(finite)
    if isinstance(value, str):
        problem = overrides_mod.text_problem(key, value, spec.max_chars)
        if problem:
            problems.append(problem)
    low = preset.min_vram_gb if key == "preset.min_vram_gb" else spec.low
    problem = overrides_mod.range_problem(key, value, low, spec.high)
    if problem and key == "preset.min_vram_gb" and isinstance(value, int) and value < preset.min_vram_gb:
        problem += f" GB: preset {preset.name} needs at least that much GPU memory"
    if problem:
        problems.append(problem)
    if problems:
        raise OverrideError(problems)


def _near(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.7)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
