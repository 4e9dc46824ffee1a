"""Render dataset + preset into what sd-scripts reads: kohya folder, dataset.toml, config.toml, prompts.txt.

Work-directory contract (shared with the worker, see ``worker.protocol``): the worker builds one
directory (the spec's three files, the base model, the zip unpacked into ``dataset/``), ``cd``s there
and runs::

    accelerate launch ... <script> --config_file config.toml --dataset_config dataset.toml \\
        --console_log_simple

so every path in config.toml and dataset.toml is *relative to that directory*:

- ``dataset/full/<name>.<ext>`` + ``<name>.txt``  — the images and their captions (one ``.txt`` each);
- ``dataset/face_crops/...``                         — the face-crop subset, when the preset uses it;
- ``config.toml``, ``dataset.toml``, ``prompts.txt``;
- ``models/<local_name>`` — NOT in the zip: the worker fetches each file of :func:`base_model_source`
  and names it by its ``BaseModelSource.local_name`` (the HF filename, or the URL's last segment), so
  config.toml says ``pretrained_model_name_or_path = "models/<base.local_name>"`` and, for Flux,
  ``clip_l``/``t5xxl``/``ae`` = ``models/<extra[i].local_name>`` (extra in the order clip_l, t5xxl, ae);
- ``output/`` (checkpoints, ``output/sample/``) and ``logs/`` — written by sd-scripts.

The same layout is ``worker.protocol``'s (its module docstring is the contract), and each input has one
source: the job spec carries config.toml, dataset.toml and prompts.txt as text, and the snapshot zip
(:meth:`RenderResult.dataset_files`) carries only what goes *inside* ``dataset/`` — entries named
``full/...`` and ``face_crops/...``, because the worker unpacks the zip into ``dataset/``.
:meth:`RenderResult.write` lays out the whole directory for local runs (``loraops render-config``).

Face-weighted loss: sd-scripts offers two mask routes. ``--masked_loss`` with ``conditioning_data_dir``
needs controlnet-style subsets (one mask image per image, red channel); a subset with ``alpha_mask = true``
instead reads the image's own alpha channel as a per-pixel loss weight (0..1, resized with the latents,
cached with them). We use ``alpha_mask``: one file per image, no second directory to keep in step, and it
works the same for SD1.5, SDXL and Flux. A full image with a face box is written as an RGBA PNG whose
RGB is the upright picture and whose alpha is 1.0 on the (grown, feathered) face ellipse and the
preset's ``background`` weight elsewhere. Face crops get no mask (they are mostly face already).

sd-scripts ignores EXIF orientation, so any image with an EXIF rotation is also written upright (PNG).
Face boxes are in the upright image's pixels, as the face analysis reports them.

Every rendered key and value is checked by :mod:`bot.training.sdscripts_schema` before anything is
returned: a bad override stops here, before a pod is rented.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any

import tomli_w

from bot.errors import InvalidInputError
from bot.training import captions as captions_mod
from bot.training import sdscripts_schema as schema
from bot.training.presets import Preset, apply_overrides, load_preset
from bot.training.triggers import check_trigger
from worker.protocol import (
    MODEL_PATH_KEYS,
    WORK_CONFIG_FILE,
    WORK_DATASET_CONFIG_FILE,
    WORK_DATASET_DIR,
    WORK_LOGGING_DIR,
    WORK_OUTPUT_DIR,
    WORK_PROMPTS_FILE,
    BaseModelSource,
)

FLUX_COMPONENT_ROLES = ("clip_l", "t5xxl", "ae")  # the order of BaseModelSource.extra for Flux
DATASET_DIR = WORK_DATASET_DIR
CONFIG_FILE = WORK_CONFIG_FILE
DATASET_CONFIG_FILE = WORK_DATASET_CONFIG_FILE
PROMPTS_FILE = WORK_PROMPTS_FILE
OUTPUT_DIR = WORK_OUTPUT_DIR
LOGGING_DIR = WORK_LOGGING_DIR
CAPTION_EXTENSION = ".txt"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # what sd-scripts picks up (lower case)
SUBSETS = ("full", "face_crops")
_MASK_SCALE = 8

# config.toml sections (sd-scripts flattens them; the names follow the kohya GUI convention for readers).
_SECTIONS: dict[str, tuple[str, ...]] = {
    "model_arguments": (
        "pretrained_model_name_or_path",
        "clip_l",
        "t5xxl",
        "ae",
        "model_type",
        "vae",
        "v2",
        "v_parameterization",
    ),
    "additional_network_arguments": (
        "network_module",
        "network_dim",
        "network_alpha",
        "network_args",
        "network_dropout",
        "network_train_unet_only",
        "network_train_text_encoder_only",
        "network_weights",
    ),
    "optimizer_arguments": (
        "optimizer_type",
        "optimizer_args",
        "learning_rate",
        "unet_lr",
        "text_encoder_lr",
        "lr_scheduler",
        "lr_scheduler_num_cycles",
        "lr_scheduler_power",
        "lr_warmup_steps",
        "max_grad_norm",
    ),
    "sample_prompt_arguments": (
        "sample_prompts",
        "sample_every_n_steps",
        "sample_every_n_epochs",
        "sample_sampler",
        "sample_at_first",
    ),
    "saving_arguments": (
        "output_dir",
        "output_name",
        "save_model_as",
        "save_precision",
        "save_every_n_steps",
        "save_every_n_epochs",
        "save_last_n_steps",
        "save_state",
    ),
    "logging_arguments": ("logging_dir", "log_with", "log_prefix"),
}
_SECTION_OF = {key: section for section, keys in _SECTIONS.items() for key in keys}
_DATASET_LEVEL = frozenset(schema.args_data()["dataset_config"]["groups"]["dataset_ascendable"])


class RenderError(InvalidInputError):
    pass


@dataclass(frozen=True)
class TrainingImage:
    """One image to train on. ``face_bbox`` = [x0, y0, x1, y1] in pixels of the upright image."""

    source: Path
    caption: str
    subset: str = "full"
    face_bbox: tuple[float, float, float, float] | None = None
    name: str | None = None  # file stem in the kohya folder; default: the source's stem, made unique
    sha256: str | None = None  # of the source bytes; computed when missing


@dataclass(frozen=True)
class RenderedFile:
    """A file of the work directory: its relative path and either its bytes or a file to copy."""

    path: str
    data: bytes | None = None
    source: Path | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()


@dataclass(frozen=True)
class RenderResult:
    preset: Preset
    overrides: dict[str, Any]
    trigger: str
    class_word: str
    output_name: str
    config_toml: str
    dataset_toml: str
    prompts_txt: str
    files: tuple[RenderedFile, ...]  # images (or masked PNGs) and captions under dataset/
    images: tuple[dict[str, Any], ...]  # per image: subset, file, source sha256, caption, masked
    total_steps: int
    base_model: BaseModelSource  # what the worker fetches; config.toml names its files (model_paths)
    warnings: tuple[str, ...] = field(default=())

    @property
    def family(self) -> schema.Family:
        return self.preset.family

    @property
    def script(self) -> str:
        return schema.script_for(self.family)

    @property
    def model_paths(self) -> dict[str, str]:
        """config.toml key → base-model file in the work dir (``models/<local_name>``), fetch order."""
        return model_paths(self.base_model, self.family)

    def dataset_files(self) -> Iterator[RenderedFile]:
        """The snapshot zip's entries: the files under ``dataset/``, named relative to it, sorted."""
        prefix = f"{DATASET_DIR}/"
        for item in sorted(self.files, key=lambda f: f.path):
            if not item.path.startswith(prefix):
                raise RenderError(f"{item.path} is outside {DATASET_DIR}/ and cannot go in the snapshot")
            yield RenderedFile(item.path.removeprefix(prefix), item.data, item.source)

    def all_files(self) -> Iterator[RenderedFile]:
        """Every file of the work directory but the base model, sorted by path (local runs)."""
        extra = [
            RenderedFile(CONFIG_FILE, self.config_toml.encode()),
            RenderedFile(DATASET_CONFIG_FILE, self.dataset_toml.encode()),
            RenderedFile(PROMPTS_FILE, self.prompts_txt.encode()),
        ]
        yield from sorted([*self.files, *extra], key=lambda f: f.path)

    def write(self, out_dir: Path, *, overwrite: bool = False) -> None:
        """Write the work directory. An existing ``dataset/`` is replaced only with ``overwrite``:
        sd-scripts trains on every image in a subset folder, so stale files must never linger."""
        out_dir = Path(out_dir)
        dataset_dir = out_dir / DATASET_DIR
        if dataset_dir.exists() and any(dataset_dir.iterdir()):
            if not overwrite:
                raise RenderError(f"{dataset_dir} already has files: choose an empty --out or pass --force")
            shutil.rmtree(dataset_dir)
        for item in self.all_files():
            target = out_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if item.data is None and item.source is not None:
                shutil.copyfile(item.source, target)
            else:
                target.write_bytes(item.read())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_stem(text: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"
    return stem[:80]


def make_face_mask(
    size: tuple[int, int], bbox: Sequence[float], *, background: float, margin: float, feather: float
) -> Any:
    """An 8-bit "L" mask: 255 on the face ellipse (bbox grown by ``margin``), ``background`` elsewhere,
    edges blurred by ``feather`` x face size.

    Drawn and blurred at 1/8 scale, then resized: sd-scripts shrinks the mask to the latent grid (1/8)
    before weighting the loss, so finer detail would be thrown away — and a large blur is slow.
    """
    from PIL import Image, ImageDraw, ImageFilter

    width, height = size
    scale = _MASK_SCALE
    small = (max(1, ceil(width / scale)), max(1, ceil(height / scale)))
    x0, y0, x1, y1 = (float(v) / scale for v in bbox)
    bw, bh = max(1.0 / scale, x1 - x0), max(1.0 / scale, y1 - y0)
    grown = (x0 - margin * bw, y0 - margin * bh, x1 + margin * bw, y1 + margin * bh)
    level = max(0, min(255, round(background * 255)))
    mask = Image.new("L", small, level)
    ImageDraw.Draw(mask).ellipse(grown, fill=255)
    radius = feather * max(bw, bh)
    if radius >= 0.5:
        mask = mask.filter(ImageFilter.GaussianBlur(radius))
    return mask.resize((width, height), Image.Resampling.BILINEAR)


def _prepare_image(
    image: TrainingImage, stem: str, *, mask: dict[str, float] | None
) -> tuple[RenderedFile, bool]:
    """The file to put in the subset folder, and whether it carries a face mask."""
    from PIL import Image, ImageOps

    ext = image.source.suffix.lower()
    with Image.open(image.source) as img:
        orientation = img.getexif().get(0x0112, 1)
        needs_mask = mask is not None and image.face_bbox is not None
        if not needs_mask and orientation in (1, None) and ext in IMAGE_EXTENSIONS:
            return RenderedFile(f"{stem}{ext}", source=image.source), False
        upright = ImageOps.exif_transpose(img)
        upright = upright.convert("RGB") if upright.mode != "RGB" else upright
        if needs_mask:
            assert mask is not None and image.face_bbox is not None
            alpha = make_face_mask(
                upright.size,
                image.face_bbox,
                background=mask["background"],
                margin=mask["margin"],
                feather=mask["feather"],
            )
            upright = upright.copy()
            upright.putalpha(alpha)
        buffer = io.BytesIO()
        upright.save(buffer, format="PNG", compress_level=1)  # speed over size: the zip is transient
    return RenderedFile(f"{stem}.png", data=buffer.getvalue()), needs_mask


def _sectioned(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(flat):
        out.setdefault(_SECTION_OF.get(key, "training_arguments"), {})[key] = flat[key]
    order = [*_SECTIONS, "training_arguments"]
    return {section: out[section] for section in order if section in out}


def _prompt_line(
    text: str,
    *,
    negative: str,
    width: int,
    height: int,
    seed: int,
    cfg: float,
    steps: int,
    guidance: float | None,
) -> str:
    parts = [text]
    if negative:
        parts.append(f"--n {negative}")
    parts += [f"--w {width}", f"--h {height}", f"--d {seed}", f"--l {cfg:g}", f"--s {steps}"]
    if guidance is not None:
        parts.append(f"--g {guidance:g}")
    return " ".join(parts)


def render_prompts(preset: Preset, trigger: str, class_word: str) -> str:
    """prompts.txt: one prompt per line with fixed seeds (``#`` lines are comments to sd-scripts)."""
    sampling = preset.sampling
    lines = [f"# loraops sample prompts, preset {preset.name}: " + ", ".join(p.kind for p in preset.prompts)]
    for prompt in preset.prompts:
        text = captions_mod.tidy(prompt.text.replace("{trigger}", trigger).replace("{class}", class_word))
        negative = str(sampling.get("negative", ""))
        for piece in (text, negative):
            if " --" in piece or "\n" in piece:
                raise RenderError(f"sample prompt {piece!r} may not contain ' --' or a line break")
        lines.append(
            _prompt_line(
                text,
                negative=negative,
                width=int(prompt.width or sampling["width"]),
                height=int(prompt.height or sampling["height"]),
                seed=prompt.seed,
                cfg=float(sampling["cfg"]),
                steps=int(sampling["steps"]),
                guidance=float(sampling["guidance"])
                if preset.family == "flux" and "guidance" in sampling
                else None,
            )
        )
    return "\n".join(lines) + "\n"


def _header(preset: Preset, what: str, overrides: Mapping[str, Any]) -> str:
    lines = [
        f"# {what} rendered by loraops: preset {preset.name} ({preset.family}), for "
        f"{schema.script_for(preset.family)} of sd-scripts {schema.release()}.",
        "# Paths are relative to the work directory the worker runs in.",
    ]
    if overrides:
        lines.append("# Overrides: " + ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items())))
    return "\n".join(lines) + "\n\n"


def render(
    images: Sequence[TrainingImage],
    *,
    preset: Preset | str,
    trigger: str,
    class_word: str,
    overrides: Mapping[str, str] | None = None,
    output_name: str | None = None,
) -> RenderResult:
    """Everything the trainer needs, validated. Raises :class:`RenderError` / ``ConfigValidationError`` /
    ``OverrideError`` with every problem listed; warnings (weak trigger, unused crops) are returned."""
    base = load_preset(preset) if isinstance(preset, str) else preset
    chosen, applied = apply_overrides(base, overrides or {})
    family = chosen.family
    trigger = trigger.strip()
    class_word = class_word.strip()
    if not re.fullmatch(r"[A-Za-z0-9]+", trigger):
        raise RenderError(f"trigger {trigger!r} must be one word of letters and digits")
    output_name = _safe_stem(output_name or f"{trigger}_{chosen.name}")
    warnings = [f"trigger: {w}" for w in check_trigger(trigger, suggest=0).warnings]

    face = chosen.face
    use_crops = bool(face.get("crops_subset"))
    by_subset: dict[str, list[TrainingImage]] = {s: [] for s in SUBSETS}
    for image in images:
        if image.subset not in by_subset:
            raise RenderError(
                f"unknown subset {image.subset!r} for {image.source}; expected full or face_crops"
            )
        by_subset[image.subset].append(image)
    if by_subset["face_crops"] and not use_crops:
        warnings.append(
            f"{len(by_subset['face_crops'])} face crops not used: preset {chosen.name} trains "
            "the full images only"
        )
        by_subset["face_crops"] = []
    if not by_subset["full"] and not by_subset["face_crops"]:
        raise RenderError("no images to train on (sd-scripts would exit 0 without training)")

    problems = captions_mod.check_captions(
        {
            f"{img.subset}/{img.name or img.source.name}": img.caption
            for sub in by_subset.values()
            for img in sub
        },
        trigger,
        keep_tokens=int(chosen.dataset.get("keep_tokens", 0)),
        shuffle=bool(chosen.dataset.get("shuffle_caption")),
    )
    if problems:
        raise RenderError("captions refused:\n" + "\n".join(f"  - {p}" for p in problems))

    mask_opts = None
    if face.get("alpha_mask"):
        mask_opts = {
            "background": float(face.get("background", 0.35)),
            "margin": float(face.get("margin", 0.3)),
            "feather": float(face.get("feather", 0.12)),
        }
        if not 0.0 <= mask_opts["background"] <= 1.0:
            raise RenderError(f"face.background = {mask_opts['background']} must be between 0 and 1")

    files: list[RenderedFile] = []
    manifest: list[dict[str, Any]] = []
    subsets_toml: list[dict[str, Any]] = []
    for subset, members in by_subset.items():
        if not members:
            continue
        folder = f"{DATASET_DIR}/{subset}"
        used: set[str] = set()
        any_mask = False
        for image in members:
            stem = _safe_stem(image.name or image.source.stem)
            candidate, n = stem, 2
            while candidate.lower() in used:
                candidate, n = f"{stem}_{n}", n + 1
            used.add(candidate.lower())
            prepared, masked = _prepare_image(image, candidate, mask=mask_opts if subset == "full" else None)
            any_mask |= masked
            files.append(RenderedFile(f"{folder}/{prepared.path}", prepared.data, prepared.source))
            caption = captions_mod.tidy(image.caption)
            files.append(RenderedFile(f"{folder}/{candidate}{CAPTION_EXTENSION}", (caption + "\n").encode()))
            manifest.append(
                {
                    "subset": subset,
                    "file": f"{folder}/{prepared.path}",
                    "caption": caption,
                    "sha256": image.sha256 or _sha256_file(image.source),
                    "masked": masked,
                }
            )
        entry: dict[str, Any] = {
            "image_dir": folder,
            **chosen.subsets.get(subset, {}),
            "class_tokens": f"{trigger} {class_word}".strip(),
            "caption_extension": CAPTION_EXTENSION,
        }
        if any_mask:
            entry["alpha_mask"] = True
        subsets_toml.append(entry)

    dataset_settings = chosen.dataset
    general = {k: v for k, v in dataset_settings.items() if k not in _DATASET_LEVEL}
    general["caption_extension"] = CAPTION_EXTENSION
    dataset_table = {k: v for k, v in dataset_settings.items() if k in _DATASET_LEVEL}
    resolution = schema.parse_resolution(dataset_table.get("resolution"))
    if resolution is not None:
        dataset_table["resolution"] = list(resolution)
    dataset_doc = {"general": general, "datasets": [{**dataset_table, "subsets": subsets_toml}]}

    source = base_model_source(chosen)
    train = chosen.train
    train.update(
        {
            **model_paths(source, family),
            "output_dir": OUTPUT_DIR,
            "output_name": output_name,
            "logging_dir": LOGGING_DIR,
            "sample_prompts": PROMPTS_FILE,
            "metadata_trigger_phrase": f"{trigger} {class_word}".strip(),
            "metadata_title": output_name,
            "training_comment": f"loraops preset {chosen.name}",
        }
    )
    if "train_batch_size" in train and "batch_size" in dataset_table:
        # dataset.toml's batch_size wins over config.toml's; keep one source of truth
        train["train_batch_size"] = dataset_table["batch_size"]
    if "network_alpha" in train and isinstance(train["network_alpha"], int):
        train["network_alpha"] = float(train["network_alpha"])

    # Both files are checked before either refusal is raised, so one message lists every problem.
    found: list[str] = []
    flat: dict[str, Any] = schema.flatten_config(train)[0]
    try:
        flat = schema.validate_training_config(train, family)
    except schema.ConfigValidationError as exc:
        found += [f"config.toml: {p}" for p in exc.problems]
    try:
        schema.validate_dataset_config(dataset_doc, family, training=flat)
    except schema.ConfigValidationError as exc:
        found += [f"dataset.toml: {p}" for p in exc.problems]
    if found:
        raise schema.ConfigValidationError(f"training configuration for {schema.script_for(family)}", found)

    config_toml = _header(chosen, "config.toml", applied) + tomli_w.dumps(_sectioned(flat))
    dataset_toml = _header(chosen, "dataset.toml", applied) + tomli_w.dumps(dataset_doc)
    prompts_txt = render_prompts(chosen, trigger, class_word)
    # Round-trip: what we wrote parses back to what we validated, and reads the same to sd-scripts.
    schema.check_sdscripts_toml(config_toml, CONFIG_FILE)
    schema.check_sdscripts_toml(dataset_toml, DATASET_CONFIG_FILE)
    assert schema.flatten_config(tomllib.loads(config_toml))[0] == flat
    assert tomllib.loads(dataset_toml) == dataset_doc

    counts: dict[str, int] = {}
    for row in manifest:
        counts[row["subset"]] = counts.get(row["subset"], 0) + 1
    total_steps = _total_steps(flat, dataset_doc, counts)
    return RenderResult(
        preset=chosen,
        overrides=applied,
        trigger=trigger,
        class_word=class_word,
        output_name=output_name,
        config_toml=config_toml,
        dataset_toml=dataset_toml,
        prompts_txt=prompts_txt,
        files=tuple(files),
        images=tuple(manifest),
        total_steps=total_steps,
        base_model=source,
        warnings=tuple(warnings),
    )


def _total_steps(flat: Mapping[str, Any], dataset_doc: Mapping[str, Any], counts: Mapping[str, int]) -> int:
    """Optimizer steps sd-scripts will run: max_train_steps, or epochs x batches when max_train_epochs is set
    (bucketing can add a few batches; this counts one bucket)."""
    epochs = flat.get("max_train_epochs")
    if not epochs:
        return int(flat["max_train_steps"])
    dataset = dataset_doc["datasets"][0]
    batch = int(dataset.get("batch_size", 1))
    with_repeats = 0
    for subset in dataset["subsets"]:
        count = counts.get(str(subset["image_dir"]).rsplit("/", 1)[-1], 0)
        with_repeats += count * int(subset.get("num_repeats", 1))
    batches = ceil(max(with_repeats, 1) / batch)
    return int(epochs) * ceil(batches / int(flat.get("gradient_accumulation_steps", 1)))


def model_paths(source: BaseModelSource, family: schema.Family) -> dict[str, str]:
    """config.toml's model keys for ``source``: ``models/<local_name>`` of the base model and, for Flux,
    of each extra (clip_l, t5xxl, ae) — exactly where the worker puts the files it fetches."""
    keys = MODEL_PATH_KEYS[family]
    files = source.files()
    if len(files) != len(keys):
        raise RenderError(
            f"{family} needs {len(keys)} base-model files ({', '.join(keys)}), the preset names {len(files)}"
        )
    return {key: item.work_path for key, item in zip(keys, files, strict=True)}


def describe_source(source: BaseModelSource) -> str:
    """Where a base-model file comes from, for people: its download URL (Hugging Face or plain)."""
    if source.kind == "hf":
        return f"https://huggingface.co/{source.repo}/resolve/main/{source.filename}"
    return source.url


def base_model_source(preset: Preset) -> BaseModelSource:
    """The worker's :class:`~worker.protocol.BaseModelSource` for ``preset``.

    For Flux, ``extra`` holds CLIP-L, T5-XXL and the autoencoder in the order of
    :data:`FLUX_COMPONENT_ROLES`. Each file lands at ``models/<local_name>`` (:func:`model_paths`), so
    the local names must be distinct.
    """
    data = preset.base_model
    extras = {item["role"]: item for item in data.get("extra", [])}
    ordered: list[BaseModelSource] = []
    if preset.family == "flux":
        missing = [role for role in FLUX_COMPONENT_ROLES if role not in extras]
        if missing:
            raise RenderError(f"preset {preset.name} lacks base_model.extra for {', '.join(missing)}")
        ordered = [_source(extras[role]) for role in FLUX_COMPONENT_ROLES]
    main = _source(data)
    source = BaseModelSource(
        kind=main.kind,
        repo=main.repo,
        filename=main.filename,
        url=main.url,
        sha256=main.sha256,
        extra=tuple(ordered),
    )
    names = [item.local_name for item in source.files()]
    if len(set(names)) != len(names):
        raise RenderError(
            f"preset {preset.name}: base-model files would overwrite each other in models/ "
            f"({', '.join(names)})"
        )
    return source


def _source(item: Mapping[str, Any]) -> BaseModelSource:
    kind = item.get("kind", "hf")
    if kind not in ("hf", "url"):
        raise RenderError(f"base model kind must be hf or url, not {kind!r}")
    source = BaseModelSource(
        kind=kind,
        repo=str(item.get("repo", "")),
        filename=str(item.get("filename", "")),
        url=str(item.get("url", "")),
        sha256=item.get("sha256"),
    )
    if kind == "hf" and not (source.repo and source.filename):
        raise RenderError("a base model from Hugging Face needs repo and filename")
    if not source.local_name or source.local_name in (".", ".."):
        raise RenderError(f"base model {source.url or source.filename!r} has no file name")
    return source
