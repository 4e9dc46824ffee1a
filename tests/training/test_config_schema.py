"""The sd-scripts argument data, the config/dataset validators and the override refusals."""

from __future__ import annotations

import tomllib

import pytest

from bot.training import sdscripts_schema as schema
from bot.training.presets import OverrideError, apply_overrides, load_preset, parse_override_strings
from bot.training.render import TrainingImage, render
from sim.testdata import TESTDATA_FACES

FACES = TESTDATA_FACES


def test_argument_data_records_the_pinned_release_facts() -> None:
    assert schema.ARGS_DATA_PATH.name == "sdscripts_args.json" and schema.ARGS_DATA_PATH.is_file()
    assert schema.release() == "v0.10.1"
    sd15, sdxl, flux = (schema.arguments(f) for f in ("sd15", "sdxl", "flux"))
    assert "cache_text_encoder_outputs" not in sd15 and "cache_text_encoder_outputs" in sdxl
    assert "guidance_scale" in flux and "guidance_scale" not in sdxl
    assert sd15["network_alpha"].default == 1 and sd15["learning_rate"].default == 2e-6
    assert sd15["caption_extension"].default == ".caption" and sd15["max_train_steps"].default == 1600
    assert sd15["resolution"].type == "str" and sd15["text_encoder_lr"].nargs == "*"
    assert (
        sd15["mixed_precision"].choices == ("no", "fp16", "bf16") and sd15["mixed_precision"].default == "no"
    )
    assert sd15["gradient_checkpointing"].kind == "store_true"
    assert "text_encoder_lr1" not in sdxl
    assert "dpm++_2m_karras" not in sd15["sample_sampler"].choices


def _base_config() -> dict[str, object]:
    return {
        "model_arguments": {"pretrained_model_name_or_path": "models/base.safetensors"},
        "additional_network_arguments": {
            "network_module": "networks.lora",
            "network_dim": 16,
            "network_alpha": 8.0,
        },
        "training_arguments": {
            "learning_rate": 1e-4,
            "max_train_steps": 100,
            "mixed_precision": "bf16",
            "output_dir": "output",
            "save_model_as": "safetensors",
        },
    }


def test_training_validator_accepts_a_good_config_and_lists_every_problem() -> None:
    schema.validate_training_config(_base_config(), "sdxl")
    bad = _base_config()
    bad["training_arguments"] = {
        **bad["training_arguments"],
        "resolution": 1024,
        "gradient_checkpointing": 1,  # type: ignore[dict-item]
        "lr_scheduler": "constant",
        "lr_warmup_steps": 50,
        "optimizer_args": "x=1",
        "learning_rat": 1e-4,
        "cache_text_encoder_outputs": True,
    }
    with pytest.raises(schema.ConfigValidationError) as info:
        schema.validate_training_config(bad, "sd15")
    text = str(info.value)
    assert "resolution = 1024: must be a string" in text
    assert "gradient_checkpointing = 1: is a flag" in text
    assert "does not require num_warmup_steps" in text
    assert "must be a TOML array" in text
    assert "unknown key 'learning_rat'" in text and "did you mean 'learning_rate'" in text
    assert "exists only for sdxl_train_network.py" in text  # cache_text_encoder_outputs on SD1.5


def test_training_validator_family_rules() -> None:
    flux = _base_config()
    flux["additional_network_arguments"]["network_module"] = "networks.lora_flux"  # type: ignore[index]
    flux["training_arguments"]["mixed_precision"] = "fp16"  # type: ignore[index]
    with pytest.raises(schema.ConfigValidationError, match="Flux needs bf16"):
        schema.validate_training_config(flux, "flux")
    sdxl = _base_config()
    sdxl["training_arguments"]["mixed_precision"] = "fp16"  # type: ignore[index]
    with pytest.raises(schema.ConfigValidationError, match="no_half_vae"):
        schema.validate_training_config(sdxl, "sdxl")
    missing = _base_config()
    del missing["additional_network_arguments"]["network_alpha"]  # type: ignore[attr-defined]
    with pytest.raises(schema.ConfigValidationError, match="network_alpha must be set explicitly"):
        schema.validate_training_config(missing, "sdxl")


def test_dataset_validator_mirrors_config_util() -> None:
    good = {
        "general": {"caption_extension": ".txt"},
        "datasets": [{"resolution": [1024, 1024], "subsets": [{"image_dir": "d", "alpha_mask": True}]}],
    }
    schema.validate_dataset_config(good, "sdxl")
    cases = {
        "extra keys not allowed @ data['datasets'][0]['subsets'][0]['foo']": {
            "datasets": [
                {"resolution": 512, "subsets": [{"image_dir": "d", "foo": 1, "caption_extension": ".txt"}]}
            ]
        },
        "required key not provided @ data['datasets'][0]['subsets'][0]['image_dir']": {
            "datasets": [{"resolution": 512, "subsets": [{"num_repeats": 1, "caption_extension": ".txt"}]}]
        },
        "['validation_split'] = 0: expected float": {
            "general": {"validation_split": 0, "caption_extension": ".txt"},
            "datasets": [{"resolution": 512, "subsets": [{"image_dir": "d"}]}],
        },
        "extra keys not allowed @ data['general']['alpha_mask']":  # subset-only key
        {
            "general": {"alpha_mask": True, "caption_extension": ".txt"},
            "datasets": [{"resolution": 512, "subsets": [{"image_dir": "d"}]}],
        },
        "resolution is required": {
            "datasets": [{"subsets": [{"image_dir": "d", "caption_extension": ".txt"}]}]
        },
        "caption_extension must be '.txt'": {
            "datasets": [{"resolution": 512, "subsets": [{"image_dir": "d"}]}]
        },
        "must be divisible by 64": {
            "datasets": [
                {
                    "resolution": 512,
                    "bucket_reso_steps": 32,
                    "subsets": [{"image_dir": "d", "caption_extension": ".txt"}],
                }
            ]
        },
        "above the bucket limit": {
            "datasets": [
                {
                    "resolution": 1280,
                    "enable_bucket": True,
                    "subsets": [{"image_dir": "d", "caption_extension": ".txt"}],
                }
            ]
        },
        "cannot be mixed": {
            "datasets": [
                {
                    "resolution": 512,
                    "subsets": [{"image_dir": "d", "caption_extension": ".txt"}, {"metadata_file": "m.json"}],
                }
            ]
        },
    }
    for expected, data in cases.items():
        with pytest.raises(schema.ConfigValidationError) as info:
            schema.validate_dataset_config(data, "sd15")
        assert expected in str(info.value), (expected, str(info.value))
    # shuffling with cached text-encoder outputs is an sd-scripts assert
    with pytest.raises(schema.ConfigValidationError, match="cannot be used with cache_text_encoder_outputs"):
        schema.validate_dataset_config(
            {
                "general": {"shuffle_caption": True, "keep_tokens": 1, "caption_extension": ".txt"},
                "datasets": [{"resolution": 1024, "subsets": [{"image_dir": "d"}]}],
            },
            "sdxl",
            training={"cache_text_encoder_outputs": True},
        )


@pytest.fixture
def images() -> list[TrainingImage]:
    return [
        TrainingImage(source=p, caption="ohwx man, photo")
        for p in sorted((FACES / "obama").glob("*.jpg"))[:2]
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rank=0", "network_dim = 0 is below the minimum 1"),
        ("network_dim=0", "network_dim = 0 is below the minimum 1"),
        ("max_train_steps=10000000", "max_train_steps = 10000000 is above the maximum 100000"),
        ("steps=1e7", "max_train_steps = 10000000 is above the maximum"),
        ("resolution=1600", "above the bucket limit max_bucket_reso = 1536"),
        ("resolution=4096", "outside 256..2048"),
        ("lr=0", "learning_rate = 0.0 is below the minimum"),
        ("lr=-1e-4", "learning_rate = -0.0001 is below the minimum"),
        ("optimizer_type=AdamW9bit", "did you mean 'AdamW8bit'"),
        ("lr_scheduler=cosine_annealing", "not a scheduler sd-scripts v0.10.1 knows"),
        ("mixed_precision=fp32", "mixed_precision = 'fp32': must be one of 'no', 'fp16', 'bf16'"),
        ("mixed_precision=fp16", "no_half_vae"),
        ("lr_scheduler=constant", "does not require num_warmup_steps"),
        ("network_alpha=0", "network_alpha = 0.0 is below the minimum"),
        ("sample_sampler=dpm++_2m_karras", "must be one of"),
    ],
)
def test_bad_override_values_are_refused(override: str, message: str, images: list[TrainingImage]) -> None:
    with pytest.raises(schema.ConfigValidationError) as info:
        render(
            images,
            preset="sdxl-face",
            trigger="ohwx",
            class_word="man",
            overrides=parse_override_strings([override]),
        )
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("foo=1", "unknown key `foo`"),
        ("netwrok_dim=8", "did you mean network_dim"),
        ("network_dim=abc", "expected a whole number"),
        ("gradient_checkpointing=maybe", "expected true or false"),
        ("face.colour=1", "unknown face option"),
        ("num_repeats=3", "say full.num_repeats or face_crops.num_repeats"),
        ("image_dir=x", "`image_dir` is refused: paths, model files and output locations are the bot's"),
    ],
)
def test_unknown_or_unparsable_overrides_are_refused(override: str, message: str) -> None:
    with pytest.raises(OverrideError) as info:
        apply_overrides(load_preset("sdxl-face"), parse_override_strings([override]))
    assert message in str(info.value), str(info.value)
    with pytest.raises(OverrideError, match="KEY=VALUE"):
        parse_override_strings(["novalue"])


def test_good_overrides_land_in_the_right_file(images: list[TrainingImage]) -> None:
    result = render(
        images,
        preset="sdxl-face",
        trigger="ohwx",
        class_word="man",
        overrides=parse_override_strings(
            [
                "rank=32",
                "alpha=16",
                "steps=1200",
                "lr=2e-4",
                "resolution=768",
                "face_crops.num_repeats=3",
                'optimizer_args=["weight_decay=0.1"]',
                "preset.early_stop_patience=6",
                "shuffle_caption=false",
            ]
        ),
    )
    assert result.preset.early_stop_patience == 6
    assert "network_dim = 32" in result.config_toml and "network_alpha = 16.0" in result.config_toml
    assert "max_train_steps = 1200" in result.config_toml and "learning_rate = 0.0002" in result.config_toml
    assert 'optimizer_args = [\n    "weight_decay=0.1",\n]' in result.config_toml
    flat, _ = schema.flatten_config(tomllib.loads(result.config_toml))
    assert tomllib.loads(result.dataset_toml)["datasets"][0]["resolution"] == [768, 768]
    assert "resolution" not in flat
    assert result.total_steps == 1200
    assert result.overrides["network_dim"] == 32
