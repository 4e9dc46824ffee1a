"""Contract: what the worker hands sd-scripts is accepted by the REAL v0.10.1 code, for every preset.

Each case is built the way production builds it: the bot renders a preset (with a variant the bot can
produce: face masks on or off, face-crop subset, overrides, user captions), ``build_job_spec`` makes the
worker's job spec, the worker's own code writes config.toml/dataset.toml/prompts.txt into a work
directory, the snapshot zip is unpacked there by the worker's intake, and the worker's ``_command()``
gives the argv. Then ``sdscripts_probe.py`` runs, in sd-scripts' own venv (``scripts/sdscripts-env``),
the real ``setup_parser()``/``parse_args``, ``read_config_from_file``, and ``train()`` up to the
accelerator (argument checks, ConfigSanitizer + BlueprintGenerator + the real dataset on the real
files, ``assert_extra_args``), then sd-scripts' optimizer and scheduler factories. The probe's
docstring lists what it stubs (the tokenizer download, and it stops at ``prepare_accelerator``) and why
no stub can accept what the real code would refuse.

``read_config_from_file`` accepts unknown keys and unconverted values silently, so a case passes only
when the probe also finds no config key that is not a parser option and no value the parser would not
have produced. The negative cases prove each of those checks bites.

The second half compares ``bot/training/sdscripts_args.json`` and the stand-in's argument spec
(``sim/sdscripts/argspec.py``) and dataset schema (``sim/sdscripts/config.py``) with the real parsers
and ``ConfigSanitizer``, so neither can drift from v0.10.1 unnoticed.
"""

from __future__ import annotations

import copy
import json
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.training import sdscripts_schema as schema
from bot.training.presets import load_preset, preset_names
from bot.training.render import TrainingImage, render
from bot.training.snapshots import build_job_spec, build_zip
from sim.sdscripts import argspec
from sim.sdscripts import config as standin_config
from sim.testdata import TESTDATA_FACES
from worker import intake
from worker.job import Job
from worker.settings import WorkerSettings

from .conftest import SdScriptsEnv

# The first test may build sd-scripts' environment (torch & co.): minutes, once per machine.
pytestmark = pytest.mark.timeout(3600)

TRIGGER, CLASS_WORD = "ohwx", "woman"
_RUNTIME = schema.args_data()["runtime_checked"]
FULL_PHOTOS = ("rose_leslie/rose_1.jpg", "rose_leslie/rose_2.jpg", "kit_harington/kit_3.jpg")
CROP_PHOTOS = ("obama/obama_1.jpg", "alex_lacamoire/alex_1.jpg")
SD_SCRIPTS_DIR = "/opt/sd-scripts"  # the image's path; only the argv after the script matters here

# What the bot can produce, per preset: (face boxes known, crops gathered, overrides).
VARIANTS: dict[str, tuple[bool, bool, dict[str, str]]] = {
    # photos without a face analysis yet: no masks, no crops, user captions only
    "plain": (False, False, {}),
    # the curated dataset the presets are made for: face boxes (masks where the preset says) and crops
    "faces": (True, True, {}),
    # face-weighted loss and crops forced on, whatever the preset says
    "masks-on": (
        True,
        True,
        {"face.alpha_mask": "true", "face.crops_subset": "true", "face.background": "0.2"},
    ),
    # both switched off although the dataset has them
    "masks-off": (True, True, {"face.alpha_mask": "false", "face.crops_subset": "false"}),
    # the overrides people use, through aliases and raw names, with every value type
    "overrides": (
        True,
        True,
        {
            "steps": "300",
            "rank": "16",
            "alpha": "8",  # an int for a float option: the bot writes 8.0
            "lr": "2e-4",
            "optimizer": "AdamW",
            "scheduler": "cosine",
            "lr_warmup_steps": "0.1",  # a ratio (float) rather than a step count
            "repeats": "2",
            "face_crops.num_repeats": "3",
            "resolution": "768",
            "batch": "2",
            "gradient_accumulation_steps": "2",
            "save_every_n_steps": "50",
            "sample_every_n_steps": "50",
            "seed": "7",
            "network_dropout": "0.1",
            "max_grad_norm": "0.5",
            "preset.early_stop_patience": "6",
            "sampling.steps": "20",
        },
    ),
    # epochs instead of steps, a rectangular resolution, constant LR without warm-up
    "epochs": (
        True,
        True,
        {
            "max_train_epochs": "3",
            "resolution": "[768, 1024]",
            "scheduler": "constant",
            "lr_warmup_steps": "0",
            "optimizer": "AdamW",
            "network_train_unet_only": "true",
        },
    ),
}


@dataclass
class Case:
    id: str
    script: str
    work_dir: Path
    argv: list[str]
    launcher: list[str]  # what follows "accelerate launch" in the worker's command (script and argv too)


def _photo_set(root: Path) -> dict[str, list[Path]]:
    """Copies of shared test photos; the face crops are real crops (square, around the upper middle)."""
    root.mkdir(parents=True, exist_ok=True)
    full = []
    for name in FULL_PHOTOS:
        target = root / Path(name).name
        shutil.copy(TESTDATA_FACES / name, target)
        full.append(target)
    crops = []
    for name in CROP_PHOTOS:
        with Image.open(TESTDATA_FACES / name) as photo:
            side = min(photo.size) // 2
            left, top = (photo.width - side) // 2, photo.height // 8
            target = root / f"crop_{Path(name).stem}.png"
            photo.convert("RGB").crop((left, top, left + side, top + side)).save(target)
        crops.append(target)
    return {"full": full, "face_crops": crops}


def _images(photos: dict[str, list[Path]], *, boxes: bool, crops: bool) -> list[TrainingImage]:
    images = []
    for index, path in enumerate(photos["full"]):
        with Image.open(path) as photo:
            w, h = photo.size
        box = (w * 0.35, h * 0.12, w * 0.65, h * 0.45) if boxes else None
        # user captions of different shapes: tags, a sentence, only the trigger
        caption = [
            f"{TRIGGER} {CLASS_WORD}, smiling, outdoors",
            f"{TRIGGER} {CLASS_WORD} on a red carpet",
            TRIGGER,
        ][index % 3]
        images.append(TrainingImage(source=path, caption=caption, face_bbox=box))
    if crops:
        for path in photos["face_crops"]:
            images.append(
                TrainingImage(source=path, caption=f"{TRIGGER} {CLASS_WORD}, face", subset="face_crops")
            )
    return images


def _work_dir(result: Any, root: Path) -> tuple[str, list[str], list[str]]:
    """The worker's work directory for a render, laid out by the worker's own code; returns
    (script name, the argv the worker passes to it, the worker's command after "accelerate launch")."""
    archive = build_zip(result)
    spec = build_job_spec(result, dataset_sha256="0" * 64, job_id=1, deadline_unix=0.0)
    settings = WorkerSettings(
        spec=spec, token="t" * 32, work_dir=root, cache_dir=root / "cache", sd_scripts_dir=SD_SCRIPTS_DIR
    )
    job = Job(settings)
    job._write_inputs()  # config.toml, dataset.toml, prompts.txt from the spec; refuses a bad layout
    zip_path = root / "dataset.zip"
    zip_path.write_bytes(archive)
    intake.unpack(zip_path, root / "dataset")
    zip_path.unlink()
    assert intake.check_dataset(spec.dataset_toml, root) > 0
    command = job._command()
    script_path = f"{SD_SCRIPTS_DIR}/{spec.train_script}"
    assert script_path in command, command
    assert command[:2] == ["accelerate", "launch"], command  # the worker's default launcher
    return spec.train_script, command[command.index(script_path) + 1 :], command[2:]


def _edit_toml(path: Path, edit: Callable[[str], str]) -> None:
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")


def _insert_after_header(key_line: str, section: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        marker = f"[{section}]\n"
        assert marker in text, f"no [{section}] table"
        return text.replace(marker, marker + key_line + "\n", 1)

    return edit


def _replace(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"{old!r} not in the file"
        return text.replace(old, new, count)

    return edit


# Drift the contract must catch: (file, edit, what the verdict must mention).
NEGATIVES: dict[str, tuple[str, Callable[[str], str], str]] = {
    # a typo read_config_from_file would keep silently
    "unknown-config-key": (
        "config.toml",
        _insert_after_header("network_dimm = 32", "additional_network_arguments"),
        "network_dimm",
    ),
    # a string where the parser makes an int (sd-scripts would crash much later, on the pod)
    "wrong-type-int-as-string": (
        "config.toml",
        _replace("network_dim = 8", 'network_dim = "8"'),
        "network_dim",
    ),
    # a value argparse would refuse by its choices
    "bad-choice": ("config.toml", _replace('mixed_precision = "fp16"', 'mixed_precision = "fp32"'), "fp32"),
    # a flag given as a string
    "flag-as-string": ("config.toml", _replace("sdpa = true", 'sdpa = "true"'), "sdpa"),
    # mixed int/float array: toml 0.10.2 (what sd-scripts reads with) refuses it, tomllib does not
    "mixed-array": (
        "config.toml",
        _insert_after_header("base_weights_multiplier = [1, 0.5]", "additional_network_arguments"),
        "read_config_from_file",
    ),
    # dataset.toml: an unknown key (voluptuous: extra keys not allowed)
    "unknown-dataset-key": ("dataset.toml", _replace("num_repeats = 1", "num_repeat = 1"), "num_repeat"),
    # dataset.toml: an int where the schema wants a float
    "dataset-wrong-type": (
        "dataset.toml",
        _insert_after_header("validation_split = 0", "general"),
        "validation_split",
    ),
    # dataset.toml: resolution under min_bucket_reso (the dataset's own assert)
    "bucket-assert": (
        "dataset.toml",
        _replace("min_bucket_reso = 256", "min_bucket_reso = 640"),
        "min_bucket_reso",
    ),
    # dataset.toml: a folder with no images ("No data found": train() returns, exit 0, no training)
    "no-images": (
        "dataset.toml",
        _replace('image_dir = "dataset/', 'image_dir = "dataset/nothing_', -1),
        "No data",
    ),
}
# The argv: an option the parser does not have.
ARGV_NEGATIVE = "--console_log_simpler"


def _verdict(result: dict[str, Any]) -> list[str]:
    """Every reason the case is not accepted; [] when the real code accepts it and nothing slipped by."""
    reasons = []
    if not result.get("accepted"):
        reasons.append(f"rejected at {result.get('stage')}: {result.get('error')}")
    reasons += [
        f"config key is no option of {result.get('script')}: {k}" for k in result.get("unknown_keys", [])
    ]
    reasons += [f"config value: {p}" for p in result.get("value_problems", [])]
    return reasons


@pytest.fixture(scope="module")
def contract(sdscripts_env: SdScriptsEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case rendered, laid out and probed in one run of the real code (torch imports once)."""
    root = tmp_path_factory.mktemp("contract")
    photos = _photo_set(root / "photos")
    cases: list[Case] = []
    for name in preset_names():
        for variant, (boxes, crops, overrides) in VARIANTS.items():
            result = render(
                _images(photos, boxes=boxes, crops=crops),
                preset=name,
                trigger=TRIGGER,
                class_word=CLASS_WORD,
                overrides=overrides,
            )
            work = root / f"{name}--{variant}"
            script, argv, launcher = _work_dir(result, work)
            cases.append(Case(f"{name}--{variant}", script, work, argv, launcher))
    # Negative cases start from a good sd15 render and change one thing.
    base = render(
        _images(photos, boxes=True, crops=True), preset="sd15-local", trigger=TRIGGER, class_word=CLASS_WORD
    )
    for negative, (file, edit, _) in NEGATIVES.items():
        work = root / f"negative--{negative}"
        script, argv, launcher = _work_dir(base, work)
        _edit_toml(work / file, edit)
        cases.append(Case(f"negative--{negative}", script, work, argv, launcher))
    work = root / "negative--argv"
    script, argv, launcher = _work_dir(base, work)
    cases.append(Case("negative--argv", script, work, [*argv, ARGV_NEGATIVE], [*launcher, ARGV_NEGATIVE]))
    work = root / "negative--launcher"
    script, argv, launcher = _work_dir(base, work)
    cases.append(
        Case("negative--launcher", script, work, argv, ["--num_cpu_thread_per_process", "1", *launcher])
    )

    request = {
        "mode": "cases",
        "cases": [
            {"id": c.id, "script": c.script, "argv": c.argv, "launcher": c.launcher, "cwd": str(c.work_dir)}
            for c in cases
        ],
    }
    answers = sdscripts_env.probe(request, root / "probe")
    by_id = {answer["id"]: answer for answer in answers}
    assert set(by_id) == {c.id for c in cases}
    return {"results": by_id, "cases": {c.id: c for c in cases}}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("preset", preset_names())
def test_real_sdscripts_accepts_what_the_worker_passes(
    contract: dict[str, Any], preset: str, variant: str
) -> None:
    case_id = f"{preset}--{variant}"
    result = contract["results"][case_id]
    case: Case = contract["cases"][case_id]
    assert _verdict(result) == [], json.dumps(result, indent=1)
    # The case really exercised the variant: the files say so.
    dataset = tomllib.loads((case.work_dir / "dataset.toml").read_text())
    subsets = dataset["datasets"][0]["subsets"]
    preset_face = load_preset(preset).face
    boxes, crops, overrides = VARIANTS[variant]
    masks = {"true": True, "false": False}.get(
        overrides.get("face.alpha_mask", ""), preset_face.get("alpha_mask")
    )
    use_crops = {"true": True, "false": False}.get(
        overrides.get("face.crops_subset", ""), preset_face.get("crops_subset")
    )
    assert [s["image_dir"] for s in subsets] == ["dataset/full"] + (
        ["dataset/face_crops"] if crops and use_crops else []
    )
    assert bool(subsets[0].get("alpha_mask")) == bool(boxes and masks)
    if boxes and masks:
        with Image.open(next((case.work_dir / "dataset" / "full").glob("*.png"))) as masked:
            assert masked.mode == "RGBA"
    # The optimizer was built by sd-scripts, or it is one only bitsandbytes (CUDA) can build.
    if "optimizer_unverified" in result:
        optimizer = str(_flat_config(case).get("optimizer_type"))
        needs = schema.args_data()["runtime_checked"]["optimizer_type"]["needs_package"]
        assert needs.get(optimizer) == "bitsandbytes", result["optimizer_unverified"]
        assert "bitsandbytes" in result["optimizer_unverified"]


def _flat_config(case: Case) -> dict[str, Any]:
    return schema.flatten_config(tomllib.loads((case.work_dir / "config.toml").read_text()))[0]


@pytest.mark.parametrize("negative", [*NEGATIVES, "argv", "launcher"])
def test_contract_catches_drift(contract: dict[str, Any], negative: str) -> None:
    result = contract["results"][f"negative--{negative}"]
    reasons = _verdict(result)
    assert reasons, f"drift {negative!r} went unnoticed: {json.dumps(result, indent=1)}"
    expected = {"argv": ARGV_NEGATIVE, "launcher": "--num_cpu_thread_per_process"}.get(negative) or NEGATIVES[
        negative
    ][2]
    assert any(expected in reason for reason in reasons), reasons


@pytest.mark.parametrize("negative", list(NEGATIVES))
def test_the_bot_refuses_before_renting_what_the_real_code_refuses(
    contract: dict[str, Any], negative: str
) -> None:
    """Each drift above, which the real code refuses (or, for silent keys, the contract does), is refused
    by the bot's own checks too — before a pod is rented, not on it."""
    assert _verdict(contract["results"][f"negative--{negative}"])
    work = contract["cases"][f"negative--{negative}"].work_dir
    config_text, dataset_text = (work / "config.toml").read_text(), (work / "dataset.toml").read_text()
    problems: list[str] = []
    for text, name in ((config_text, "config.toml"), (dataset_text, "dataset.toml")):
        try:
            schema.check_sdscripts_toml(text, name)
        except schema.ConfigValidationError as exc:
            problems += exc.problems
    flat: dict[str, Any] = {}
    try:
        flat = schema.validate_training_config(tomllib.loads(config_text), "sd15")
    except schema.ConfigValidationError as exc:
        problems += exc.problems
    try:
        schema.validate_dataset_config(tomllib.loads(dataset_text), "sd15", training=flat)
    except schema.ConfigValidationError as exc:
        problems += exc.problems
    try:
        intake.check_dataset(dataset_text, work)  # the worker refuses an upload with no images
    except intake.DatasetRejected as exc:
        problems.append(str(exc))
    assert problems, f"the bot would rent a pod for {negative!r}"


def test_render_refuses_a_file_sd_scripts_would_not_read(tmp_path: Path) -> None:
    """tomllib reads a mixed int/float array, sd-scripts' toml 0.10.2 does not: render refuses it."""
    preset = load_preset("sd15-local")
    preset.data["train"]["text_encoder_lr"] = [1, 0.5]  # the bot's types allow an int among floats
    photo = tmp_path / "a.jpg"
    shutil.copy(TESTDATA_FACES / FULL_PHOTOS[0], photo)
    image = TrainingImage(source=photo, caption=f"{TRIGGER} {CLASS_WORD}")
    with pytest.raises(
        schema.ConfigValidationError, match=r"toml 0\.10\.2\) refuses it: Not a homogeneous array"
    ):
        render([image], preset=preset, trigger=TRIGGER, class_word=CLASS_WORD)


def test_negative_base_is_accepted(contract: dict[str, Any]) -> None:
    """The negatives differ from an accepted case by their one edit (else they would prove nothing)."""
    assert _verdict(contract["results"]["sd15-local--faces"]) == []


# ---- the argument specs: sdscripts_args.json and the stand-in's argspec against the real parsers ----


@pytest.fixture(scope="module")
def real_spec(sdscripts_env: SdScriptsEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real parsers, ConfigSanitizer's schemas and a few source facts, from one probe run."""
    return sdscripts_env.probe({"mode": "spec"}, tmp_path_factory.mktemp("spec"))


@pytest.fixture(scope="module")
def real_parsers(real_spec: dict[str, Any]) -> dict[str, Any]:
    return real_spec["parsers"]


@pytest.fixture(scope="module")
def real_dataset_schema(real_spec: dict[str, Any]) -> dict[str, Any]:
    return real_spec["dataset_schema"]


_COMPARED = ("kind", "type", "nargs", "choices", "default")


def options_drift(ours: dict[str, dict[str, Any]], real: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between an option table and the real parser's (missing, extra, or any field)."""
    problems = [f"missing option --{name}" for name in sorted(set(real) - set(ours))]
    problems += [f"option --{name} does not exist in v0.10.1" for name in sorted(set(ours) - set(real))]
    for name in sorted(set(ours) & set(real)):
        for field in _COMPARED:
            mine, theirs = ours[name].get(field), real[name][field]
            if field == "default" and isinstance(mine, int | float) and isinstance(theirs, int | float):
                same = mine == theirs and type(mine) is type(theirs)
            else:
                same = mine == theirs
            if not same:
                problems.append(f"--{name} {field}: ours {mine!r}, v0.10.1 {theirs!r}")
    return problems


def _json_table(family: str) -> dict[str, dict[str, Any]]:
    table = schema.args_data()["families"][family]["arguments"]
    return {
        name: {f: spec[f] if f != "type" or spec["kind"] == "store" else None for f in _COMPARED}
        for name, spec in table.items()
    }


def _standin_table(script: str) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for action in argspec.build_parser(script)._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.const is True and action.nargs == 0
        kind_type = action.type
        type_name = None if flag else ("path" if kind_type is Path else getattr(kind_type, "__name__", None))
        table[action.dest] = {
            "kind": "store_true" if flag else "store",
            "type": type_name,
            "nargs": action.nargs if not flag else 0,
            "choices": list(action.choices) if action.choices is not None else None,
            "default": action.default,
        }
    return table


def _real_table(real: dict[str, Any], script: str) -> dict[str, dict[str, Any]]:
    table = {name: {f: spec[f] for f in _COMPARED} for name, spec in real[script].items()}
    for spec in table.values():
        if spec["kind"] == "store" and spec["type"] is None:
            spec["type"] = "str"  # no type= (e.g. --timestep_sampling): argparse keeps the text, as str does
    return table


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_sdscripts_args_json_matches_the_real_parser(real_parsers: dict[str, Any], family: str) -> None:
    script = schema.script_for(family)  # type: ignore[arg-type]
    real = {
        name: {**spec, "nargs": spec["nargs"] if spec["kind"] == "store" else None}
        for name, spec in _real_table(real_parsers, script).items()
    }
    assert options_drift(_json_table(family), real) == []


@pytest.mark.parametrize("script", list(argspec.SCRIPTS))
def test_standin_argspec_matches_the_real_parser(real_parsers: dict[str, Any], script: str) -> None:
    real = _real_table(real_parsers, script)
    assert all(spec["kind"] in ("store", "store_true") for spec in real.values()), "a new kind of option"
    assert options_drift(_standin_table(script), real) == []


def test_option_comparison_catches_drift(real_parsers: dict[str, Any]) -> None:
    """The comparison is not vacuous: one dropped, one invented and one retyped option are all named."""
    ours = copy.deepcopy(_standin_table("train_network.py"))
    del ours["network_dim"]
    ours["network_dimm"] = {"kind": "store", "type": "int", "nargs": None, "choices": None, "default": None}
    ours["learning_rate"]["type"] = "str"
    ours["network_alpha"]["default"] = 1.0  # the real default is the int 1: ss_network_alpha reads "1"
    problems = options_drift(ours, _real_table(real_parsers, "train_network.py"))
    assert problems == [
        "missing option --network_dim",
        "option --network_dimm does not exist in v0.10.1",
        "--learning_rate type: ours 'str', v0.10.1 'float'",
        "--network_alpha default: ours 1.0, v0.10.1 1",
    ]


# ---- the dataset schema: sdscripts_args.json and the stand-in against ConfigSanitizer ----

_STANDIN_NAMES = {
    "pair_float": "float_pair",
    "int_or_pair_int": "int_or_int_pair",
    "float_or_int": "float|int",
}
_STANDIN_GROUPS = {
    "subset_ascendable": standin_config._SUBSET_ASCENDABLE,
    "dropout_subset_ascendable": standin_config._DROPOUT_ASCENDABLE,
    "dreambooth_subset_ascendable": standin_config._DB_ASCENDABLE,
    "dreambooth_subset_distinct": standin_config._DB_DISTINCT,
    "finetuning_subset_distinct": standin_config._FT_DISTINCT,
    "controlnet_subset_ascendable": standin_config._CN_ASCENDABLE,
    "controlnet_subset_distinct": standin_config._CN_DISTINCT,
    "dataset_ascendable": standin_config._DATASET_ASCENDABLE,
}


def test_dataset_schema_json_matches_config_sanitizer(real_dataset_schema: dict[str, Any]) -> None:
    ours = schema.args_data()["dataset_config"]
    assert ours["groups"] == real_dataset_schema["groups"]
    real_required = {
        "dreambooth_subset": real_dataset_schema["required"]["dreambooth_subset_distinct"],
        "finetuning_subset": real_dataset_schema["required"]["finetuning_subset_distinct"],
        "controlnet_subset": real_dataset_schema["required"]["controlnet_subset_distinct"],
    }
    assert ours["required"] == real_required


def test_standin_dataset_schema_matches_config_sanitizer(real_dataset_schema: dict[str, Any]) -> None:
    ours = {
        group: {key: _STANDIN_NAMES.get(kind, kind) for key, kind in table.items()}
        for group, table in _STANDIN_GROUPS.items()
    }
    assert ours == real_dataset_schema["groups"]
    assert {k: list(v) for k, v in standin_config._REQUIRED.items()} == {
        "db": real_dataset_schema["required"]["dreambooth_subset_distinct"],
        "ft": real_dataset_schema["required"]["finetuning_subset_distinct"],
        "cn": real_dataset_schema["required"]["controlnet_subset_distinct"],
    }


def test_standin_argparse_type_checks_match_config_sanitizer(real_dataset_schema: dict[str, Any]) -> None:
    """The stand-in type-checks every namespace value ConfigSanitizer.argparse_schema checks, alike
    (voluptuous skips None attributes of an object, so "None|int" and "int" behave the same)."""
    ours = {key: _STANDIN_NAMES.get(kind, kind) for key, kind in standin_config.ARGPARSE_SCHEMA.items()}
    real = {key: kind.removeprefix("None|") for key, kind in real_dataset_schema["argparse"].items()}
    assert ours == real


@pytest.fixture(scope="module")
def real_facts(real_spec: dict[str, Any]) -> dict[str, Any]:
    return real_spec["facts"]


def test_standin_follows_the_real_source(real_facts: dict[str, Any]) -> None:
    """Facts of v0.10.1 the stand-in is built on, read off the real code rather than remembered."""
    # Images are found by these exact suffixes (no avif/jxl: their Pillow plug-ins are not installed).
    assert tuple(real_facts["image_extensions"]) == standin_config.IMAGE_EXTENSIONS
    # No caching path the LoRA scripts use looks for NaN (only the legacy one did, and it is not called):
    # a NaN from the VAE or a text encoder is trained on, so the stand-in's SDSTANDIN_NAN_IN_CACHE gives a
    # NaN loss from step 1 rather than an exit before training.
    assert real_facts["nan_check"] == {
        "train_util.cache_batch_latents (legacy)": True,
        "LatentsCachingStrategy._default_cache_batch_latents": False,
        "SdxlTextEncoderOutputsCachingStrategy.cache_batch_outputs": False,
        "FluxTextEncoderOutputsCachingStrategy.cache_batch_outputs": False,
    }
    assert real_facts["scripts_call_legacy_caching"] is False
    # --sample_at_first samples before the steps bar is created.
    assert real_facts["sample_at_first_before_steps_bar"] is True


# ---- runtime facts of sdscripts_args.json: optimizers and LR schedulers, by sd-scripts' own factories ----

# (id, config.toml changes): the bot's verdict on each must equal what get_scheduler_fix does with it.
SCHEDULER_CASES: list[tuple[str, dict[str, Any]]] = [
    *[(f"{name}", {"lr_scheduler": name}) for name in schema.scheduler_names()],
    *[
        (f"{name} (rejected)", {"lr_scheduler": name})
        for name in _RUNTIME["lr_scheduler"]["rejected_at_runtime"]
    ],
    ("constant with warm-up", {"lr_scheduler": "constant", "lr_warmup_steps": 10}),
    ("cosine_with_min_lr ratio", {"lr_scheduler": "cosine_with_min_lr", "lr_scheduler_min_lr_ratio": 0.1}),
    (
        "cosine_with_min_lr min_lr",
        {"lr_scheduler": "cosine_with_min_lr", "lr_scheduler_args": ["min_lr=1e-6"]},
    ),
    (
        "cosine_with_min_lr min_lr_rate arg",
        {"lr_scheduler": "cosine_with_min_lr", "lr_scheduler_args": ["min_lr_rate=0.1"]},
    ),
    (
        "cosine_with_min_lr both",
        {
            "lr_scheduler": "cosine_with_min_lr",
            "lr_scheduler_min_lr_ratio": 0.1,
            "lr_scheduler_args": ["min_lr=1e-6"],
        },
    ),
    (
        "piecewise step_rules",
        {"lr_scheduler": "piecewise_constant", "lr_scheduler_args": ["step_rules='1:10,0.1'"]},
    ),
    (
        "piecewise unquoted",
        {"lr_scheduler": "piecewise_constant", "lr_scheduler_args": ["step_rules=1:10,0.1"]},
    ),
    ("args without =", {"lr_scheduler": "cosine", "lr_scheduler_args": ["num_cycles"]}),
    ("made-up name", {"lr_scheduler": "cosine_forever"}),
]


def _as_argv(changes: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in changes.items():
        argv += [f"--{key}", *(value if isinstance(value, list) else [str(value)])]
    return argv


@pytest.fixture(scope="module")
def real_runtime(sdscripts_env: SdScriptsEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    optimizers = [*schema.optimizer_names(), "adamw", "NotAnOptimizer"]
    schedulers = [{"id": case_id, "argv": _as_argv(changes)} for case_id, changes in SCHEDULER_CASES]
    request = {"mode": "runtime", "optimizers": optimizers, "schedulers": schedulers}
    return sdscripts_env.probe(request, tmp_path_factory.mktemp("runtime"))


def test_every_optimizer_the_bot_allows_is_built_by_sd_scripts(real_runtime: dict[str, Any]) -> None:
    facts = _RUNTIME["optimizer_type"]
    results = real_runtime["optimizers"]
    for name in schema.optimizer_names():
        package = facts["needs_package"].get(name)
        if results[name].startswith("ok: "):
            continue
        # Not buildable here only for want of a package sd-scripts imports for it: bitsandbytes (CUDA,
        # installed in the pod's image) or one requirements.txt does not list (the bot refuses those).
        assert package in ("bitsandbytes", *facts["not_in_requirements"]), (name, results[name])
        assert results[name].startswith("ImportError: No ") and package in results[name], results[name]
    assert results["adamw"] == "ok: AdamW"  # names are compared lower-cased
    assert not results["NotAnOptimizer"].startswith("ok")


@pytest.mark.parametrize(("case_id", "changes"), SCHEDULER_CASES, ids=[c[0] for c in SCHEDULER_CASES])
def test_the_bot_judges_lr_schedulers_as_sd_scripts_does(
    contract: dict[str, Any], real_runtime: dict[str, Any], case_id: str, changes: dict[str, Any]
) -> None:
    real = real_runtime["schedulers"][case_id]
    base = _flat_config(contract["cases"]["sd15-local--plain"])
    try:
        schema.validate_training_config({**base, **changes}, "sd15")
        bot = "accepted"
    except schema.ConfigValidationError as exc:
        bot = "refused: " + "; ".join(exc.problems)
    assert (bot == "accepted") == real.startswith("ok: "), f"bot {bot!r}, sd-scripts {real!r}"
