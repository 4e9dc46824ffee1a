# pyright: reportMissingImports=false
# (torch, voluptuous and sd-scripts' `library` exist only in sd-scripts' venv, where this file runs.)
"""Probe of the REAL sd-scripts v0.10.1, run by the contract tests inside sd-scripts' own environment.

Usage (with the python of ``scripts/sdscripts-env``'s venv, never the bot's):

    python sdscripts_probe.py <sd-scripts src dir> <request.json> <result.json>

The request is ``{"mode": "parsers"}``, ``{"mode": "dataset_schema"}``, ``{"mode": "facts"}``,
``{"mode": "spec"}`` (those three at once) or ``{"mode": "cases", "cases":
[{"id", "script", "argv", "cwd"}]}``; the answer is written as JSON to ``result.json`` (sd-scripts
prints to stdout itself, so stdout is not ours). This file imports nothing of loraops: it must run
where loraops is not installed, and what it reports comes from sd-scripts' own code.

What runs, per case, is what ``accelerate launch <launcher options> <script> <argv>`` does at v0.10.1,
in the work directory: accelerate's ``launch_command_parser()`` on the launcher's part, then
``setup_parser()``, ``parse_args(argv)``, ``verify_command_line_training_args``,
``read_config_from_file``, then the script's own ``Trainer().train(args)`` — ``verify_training_args``,
``prepare_dataset_args``, the dataset through ``config_util`` (``ConfigSanitizer`` +
``BlueprintGenerator`` + ``generate_dataset_group_by_blueprint``, which scans the real image folders and
makes the buckets), the "no data" and latent-cache checks and the script's ``assert_extra_args`` — up
to ``train_util.prepare_accelerator``, where the probe stops it: everything after that loads the model
weights. Then the optimizer and LR scheduler the config names are built by sd-scripts' own
``get_optimizer``/``get_scheduler_fix`` on a one-parameter model, and the network module is imported.

Stubs, and why none can turn a rejection into an acceptance:
- the tokenize strategy: ``get_tokenize_strategy``/``get_tokenizers`` would download the CLIP/T5
  tokenizers; the probe hands the dataset a ``_Poison`` object instead, whose every use raises, so
  code that needed a tokenizer fails the case rather than passing it (up to prepare_accelerator the
  dataset only stores the strategy);
- ``train_util.prepare_accelerator`` raises ``_Reached``: it is the first thing after all the checks
  above, and a case counts as accepted only when train() got there (returning earlier, e.g. "No data
  found", or raising anything else is a rejection);
- the 8-bit optimizers need bitsandbytes, which needs CUDA and is not installed here: their
  construction is reported as ``optimizer_unverified`` (the test allows that only for names
  sd-scripts itself routes to bitsandbytes), never as accepted.
Nothing of torch, diffusers, transformers or accelerate is stubbed.

On top of sd-scripts, the probe reports what the real code lets through silently: config keys that are
no parser option (``read_config_from_file`` keeps them as stray attributes) and config values that are
not what the parser would have produced for that option (values from a file are never converted or
checked against ``choices``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

TRAINERS = {
    "train_network.py": ("train_network", "NetworkTrainer"),
    "sdxl_train_network.py": ("sdxl_train_network", "SdxlNetworkTrainer"),
    "flux_train_network.py": ("flux_train_network", "FluxNetworkTrainer"),
}
# Where the real code accepts a config value of another shape than the parser produces, with the line
# that proves it (anything else that differs from the parser's conversion is reported as a problem).
SHAPE_EXCEPTIONS = {
    # train_network.py train(): "if args.text_encoder_lr is None or isinstance(..., float) or
    # isinstance(..., int): text_encoder_lr = args.text_encoder_lr" — a scalar is the v0.9 form.
    "text_encoder_lr": "scalar number",
}


class _Reached(Exception):
    """train() got to prepare_accelerator: every check before model loading passed."""


class _Errors(logging.Handler):
    """Collects the ERROR records sd-scripts logs (its Rich handler holds the real stderr, not ours)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _Poison:
    """Stands in for an object the probe cannot build; any use of it fails the case."""

    def __init__(self, what: str) -> None:
        object.__setattr__(self, "_what", what)

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"probe stub {self._what!r} was used (.{name}); the probe cannot decide this case")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"probe stub {self._what!r} was called; the probe cannot decide this case")


def _type_name(kind: Any) -> str | None:
    if kind is None:
        return None
    if kind is Path:
        return "path"
    return getattr(kind, "__name__", repr(kind))


def _action_kind(action: argparse.Action) -> str:
    name = type(action).__name__
    return {
        "_StoreAction": "store",
        "_StoreTrueAction": "store_true",
        "_StoreFalseAction": "store_false",
        "_StoreConstAction": "store_const",
        "_AppendAction": "append",
        "_HelpAction": "help",
        "BooleanOptionalAction": "boolean_optional",
    }.get(name, name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _parser_options(parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for action in parser._actions:
        kind = _action_kind(action)
        if kind == "help":
            continue
        options[action.dest] = {
            "flags": list(action.option_strings),
            "kind": kind,
            "type": _type_name(action.type),
            "nargs": action.nargs,
            "choices": _jsonable(list(action.choices)) if action.choices is not None else None,
            "default": _jsonable(action.default),
            "required": bool(action.required),
        }
    return options


def mode_parsers() -> dict[str, Any]:
    return {script: _parser_options(_module(script).setup_parser()) for script in TRAINERS}


def _schema_name(validator: Any) -> str:
    """A voluptuous validator of config_util as a short name (the names sdscripts_args.json uses)."""
    import voluptuous

    if validator in (bool, int, float, str, dict):
        return validator.__name__
    if isinstance(validator, functools.partial):
        inner = _schema_name(validator.args[0])
        func = validator.func.__name__
        if "scalar_or_twodim" in func:
            return f"{inner}_or_{inner}_pair"
        if "twodim" in func:
            return f"{inner}_pair"
    if isinstance(validator, voluptuous.Any):
        alternatives: list[Any] = getattr(validator, "validators", [])
        return "|".join(_schema_name(v) for v in alternatives)
    if isinstance(validator, list):
        return "list"
    if validator is None:
        return "None"
    return repr(validator)


def mode_dataset_schema() -> dict[str, Any]:
    from library.config_util import ConfigSanitizer

    groups = {
        "subset_ascendable": ConfigSanitizer.SUBSET_ASCENDABLE_SCHEMA,
        "dropout_subset_ascendable": ConfigSanitizer.DO_SUBSET_ASCENDABLE_SCHEMA,
        "dreambooth_subset_ascendable": ConfigSanitizer.DB_SUBSET_ASCENDABLE_SCHEMA,
        "dreambooth_subset_distinct": ConfigSanitizer.DB_SUBSET_DISTINCT_SCHEMA,
        "finetuning_subset_distinct": ConfigSanitizer.FT_SUBSET_DISTINCT_SCHEMA,
        "controlnet_subset_ascendable": ConfigSanitizer.CN_SUBSET_ASCENDABLE_SCHEMA,
        "controlnet_subset_distinct": ConfigSanitizer.CN_SUBSET_DISTINCT_SCHEMA,
        "dataset_ascendable": ConfigSanitizer.DATASET_ASCENDABLE_SCHEMA,
    }
    out: dict[str, Any] = {"groups": {}, "required": {}}
    for name, schema in groups.items():
        out["groups"][name] = {str(key): _schema_name(value) for key, value in schema.items()}
        required = [str(key) for key in schema if type(key).__name__ == "Required"]
        if required:
            out["required"][name] = required
    # What sanitize_argparse_namespace checks on the parsed namespace (as train_network.py builds it).
    sanitizer = ConfigSanitizer(True, True, False, True)
    out["argparse"] = {str(key): _schema_name(value) for key, value in sanitizer.argparse_schema.items()}
    return out


def mode_facts() -> dict[str, Any]:
    """Facts of the real source the stand-in follows (see tests/sim/test_sdscripts_standin_v0101.py)."""
    import inspect

    import train_network
    from library import strategy_base, strategy_flux, strategy_sdxl, train_util

    def checks_nan(function: Any) -> bool:
        return "isnan" in inspect.getsource(function)

    train_source = inspect.getsource(train_network.NetworkTrainer.train)
    scripts = {script: Path(script).read_text(encoding="utf-8") for script in TRAINERS}
    return {
        "image_extensions": list(train_util.IMAGE_EXTENSIONS),
        "nan_check": {
            "train_util.cache_batch_latents (legacy)": checks_nan(train_util.cache_batch_latents),
            "LatentsCachingStrategy._default_cache_batch_latents": checks_nan(
                strategy_base.LatentsCachingStrategy._default_cache_batch_latents
            ),
            "SdxlTextEncoderOutputsCachingStrategy.cache_batch_outputs": checks_nan(
                strategy_sdxl.SdxlTextEncoderOutputsCachingStrategy.cache_batch_outputs
            ),
            "FluxTextEncoderOutputsCachingStrategy.cache_batch_outputs": checks_nan(
                strategy_flux.FluxTextEncoderOutputsCachingStrategy.cache_batch_outputs
            ),
        },
        "scripts_call_legacy_caching": any(
            ".cache_latents(" in text or ".cache_text_encoder_outputs(" in text for text in scripts.values()
        ),
        "sample_at_first_before_steps_bar": train_source.index("self.sample_images(accelerator, args, 0,")
        < train_source.index('desc="steps"'),
    }


def mode_runtime(optimizers: list[str], schedulers: list[dict[str, Any]]) -> dict[str, Any]:
    """sd-scripts' own get_optimizer / get_scheduler_fix for each name (one-parameter model, defaults
    of train_network.py otherwise): "ok: <class>" or the exception it raises."""
    import torch
    from library import train_util

    parser = _module("train_network.py").setup_parser()

    def attempt(build: Any) -> str:
        try:
            return f"ok: {type(build()).__name__}"
        except Exception as exc:
            return _exception_text(exc)

    out: dict[str, Any] = {"optimizers": {}, "schedulers": {}}
    for name in optimizers:
        args = parser.parse_args(["--optimizer_type", name, "--learning_rate", "1e-4"])
        param = torch.nn.Parameter(torch.zeros(4))
        out["optimizers"][name] = attempt(
            lambda args=args, param=param: train_util.get_optimizer(args, [param])[2]
        )
    for case in schedulers:
        args = parser.parse_args(["--max_train_steps", "100", *case["argv"]])
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4))], lr=1e-4)
        out["schedulers"][case["id"]] = attempt(
            lambda args=args, optimizer=optimizer: train_util.get_scheduler_fix(args, optimizer, 1)
        )
    return out


def _module(script: str) -> Any:
    return importlib.import_module(TRAINERS[script][0])


def _flat_config(path: str) -> dict[str, Any]:
    """The config file as read_config_from_file sees it: toml 0.10.2, every table flattened."""
    import toml

    with open(path, encoding="utf-8") as handle:
        data = toml.load(handle)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _value_problem(key: str, value: Any, action: argparse.Action) -> str | None:
    """Why ``value`` from the config file is not what the parser would produce for ``--key``, or None."""
    kind = _action_kind(action)
    if kind in ("store_true", "store_false"):
        return None if isinstance(value, bool) else f"{key} = {value!r}: a flag wants true or false"
    if kind != "store":
        return f"{key}: a {kind} option cannot be set from a config file by loraops"
    items: list[Any]
    if action.nargs in ("*", "+"):
        if not isinstance(value, list):
            if SHAPE_EXCEPTIONS.get(key) == "scalar number" and type(value) in (int, float):
                items = [value]
            else:
                return f"{key} = {value!r}: the option takes a list (nargs={action.nargs!r})"
        else:
            items = value
    elif action.nargs is None:
        items = [value]
    else:
        return f"{key}: nargs={action.nargs!r} is not handled by the probe"
    for item in items:
        if isinstance(item, (dict, list)) or item is None:
            return f"{key} = {value!r}: not a single value"
        convert: Any = action.type or str
        text = str(item).lower() if isinstance(item, bool) else str(item)
        try:
            converted = convert(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            return f"{key} = {value!r}: the parser refuses {text!r} ({exc})"
        if convert is Path:
            # --dataset_config is a Path on the command line; from a file a string works the same.
            if not isinstance(item, str):
                return f"{key} = {value!r}: expected a path string"
            continue
        same_type = type(converted) is type(item) or (type(converted) is float and type(item) is int)
        if not same_type or converted != item:
            return (
                f"{key} = {value!r}: the parser would make {converted!r} ({type(converted).__name__}) "
                f"of it, the file gives {type(item).__name__}"
            )
        if action.choices is not None and item not in action.choices:
            return f"{key} = {value!r}: not one of {list(action.choices)}"
    return None


def _reset_strategies() -> None:
    from library import strategy_base

    for name in (
        "TokenizeStrategy",
        "TextEncodingStrategy",
        "TextEncoderOutputsCachingStrategy",
        "LatentsCachingStrategy",
    ):
        getattr(strategy_base, name)._strategy = None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _exception_text(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}".replace("builtins.", "")


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    from library import train_util

    script = case["script"]
    result: dict[str, Any] = {
        "id": case["id"],
        "script": script,
        "accepted": False,
        "stage": None,
        "error": None,
    }
    os.chdir(case["cwd"])
    # read_config_from_file re-parses with parse_args(namespace=...), i.e. sys.argv[1:]: the script's own.
    sys.argv = [script, *case["argv"]]
    module = _module(script)
    parser = module.setup_parser()
    captured = io.StringIO()

    # 0. the launcher: accelerate's own `launch` parser on what the worker puts after "accelerate launch"
    if case.get("launcher") is not None:
        from accelerate.commands.launch import launch_command_parser

        try:
            with contextlib.redirect_stderr(captured):
                launch = launch_command_parser().parse_args(case["launcher"])
        except SystemExit as exc:
            result.update(
                stage="accelerate_launch", error=f"exit {exc.code}: {_last_line(captured.getvalue())}"
            )
            return result
        ran = (Path(launch.training_script).name, list(launch.training_script_args))
        if ran != (script, case["argv"]):
            result.update(stage="accelerate_launch", error=f"accelerate would run {ran}, not {script}")
            return result

    # 1. the command line the worker runs
    try:
        with contextlib.redirect_stderr(captured):
            args = parser.parse_args(case["argv"])
    except SystemExit as exc:
        result.update(stage="parse_args", error=f"exit {exc.code}: {_last_line(captured.getvalue())}")
        return result
    train_util.verify_command_line_training_args(args)
    config_file = args.config_file

    # 2. --config_file, exactly as the script reads it
    try:
        with contextlib.redirect_stderr(captured):
            args = train_util.read_config_from_file(args, parser)
    except SystemExit as exc:
        result.update(
            stage="read_config_from_file", error=f"exit {exc.code}: {_last_line(captured.getvalue())}"
        )
        return result
    except Exception as exc:  # a TOML file toml 0.10.2 cannot read
        result.update(stage="read_config_from_file", error=_exception_text(exc))
        return result

    # 3. what read_config_from_file lets through without a word
    if not config_file:
        result.update(stage="config_file", error="the command line names no --config_file")
        return result
    flat = _flat_config(config_file if config_file.endswith(".toml") else config_file + ".toml")
    actions = {action.dest: action for action in parser._actions}
    result["unknown_keys"] = sorted(key for key in flat if key not in actions)
    result["value_problems"] = [
        problem
        for key, value in sorted(flat.items())
        if key in actions and (problem := _value_problem(key, value, actions[key])) is not None
    ]

    # 4. train() up to the accelerator
    _reset_strategies()
    trainer_class = getattr(module, TRAINERS[script][1])
    trainer = trainer_class()
    trainer.get_tokenize_strategy = lambda _args: _Poison("tokenize strategy")
    trainer.get_tokenizers = lambda _strategy: []
    real_prepare = train_util.prepare_accelerator

    def stop(_args: argparse.Namespace) -> Any:
        raise _Reached

    train_util.prepare_accelerator = stop
    errors = _Errors()
    # Not on the root logger: train() calls setup_logging(reset=True), which removes the root's handlers.
    watched = [logging.getLogger(name) for name in ("train_network", "library", TRAINERS[script][0])]
    for logger in watched:
        logger.addHandler(errors)
    try:
        with contextlib.redirect_stderr(captured):
            trainer.train(args)
    except _Reached:
        pass
    except SystemExit as exc:
        result.update(stage="train", error=f"exit {exc.code}: {_last_line(captured.getvalue())}")
        return result
    except Exception as exc:
        result.update(stage="train", error=_exception_text(exc), traceback=traceback.format_exc(limit=-3))
        return result
    else:
        said = errors.messages[-1] if errors.messages else _last_line(captured.getvalue())
        result.update(stage="train", error=f"train() returned before preparing the accelerator: {said}")
        return result
    finally:
        train_util.prepare_accelerator = real_prepare
        for logger in watched:
            logger.removeHandler(errors)
    result["resolved"] = {
        "resolution": _jsonable(args.resolution),
        "cache_latents": args.cache_latents,
        "cache_text_encoder_outputs": getattr(args, "cache_text_encoder_outputs", None),
    }

    # 5. optimizer, scheduler and network module, by sd-scripts' own functions
    import torch

    param = torch.nn.Parameter(torch.zeros(4))
    try:
        name, _desc, optimizer = train_util.get_optimizer(args, [param])
        result["optimizer"] = name
    except ImportError as exc:
        result["optimizer_unverified"] = _exception_text(exc)
        optimizer = torch.optim.AdamW([param], lr=args.learning_rate)
    except Exception as exc:
        result.update(stage="get_optimizer", error=_exception_text(exc))
        return result
    try:
        scheduler = train_util.get_scheduler_fix(args, optimizer, 1)
        result["lr_scheduler"] = type(scheduler).__name__
    except Exception as exc:
        result.update(stage="get_scheduler_fix", error=_exception_text(exc))
        return result
    try:
        importlib.import_module(args.network_module)
    except Exception as exc:
        result.update(stage="network_module", error=_exception_text(exc))
        return result
    result.update(stage="prepare_accelerator", accepted=True)
    return result


def main() -> int:
    src, request_path, result_path = sys.argv[1:4]
    sys.path.insert(0, src)
    os.chdir(src)
    request = json.loads(Path(request_path).read_text())
    mode = request["mode"]
    if mode == "parsers":
        answer: Any = mode_parsers()
    elif mode == "dataset_schema":
        answer = mode_dataset_schema()
    elif mode == "facts":
        answer = mode_facts()
    elif mode == "runtime":
        answer = mode_runtime(request["optimizers"], request["schedulers"])
    elif mode == "spec":  # all three in one start of torch & co.
        answer = {"parsers": mode_parsers(), "dataset_schema": mode_dataset_schema(), "facts": mode_facts()}
    elif mode == "cases":
        answer = []
        for case in request["cases"]:
            try:
                answer.append(run_case(case))
            except Exception as exc:  # a probe bug: report it on the case, never as acceptance
                answer.append(
                    {
                        "id": case["id"],
                        "accepted": False,
                        "stage": "probe",
                        "error": _exception_text(exc),
                        "traceback": traceback.format_exc(),
                    }
                )
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    Path(result_path).write_text(json.dumps(answer, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
