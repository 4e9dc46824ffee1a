"""A Stable Diffusion 1.5 base model with random weights, and the CLIP tokenizer, made offline.

Run by ``scripts/sd15-random-model`` with the python of the real sd-scripts environment
(``scripts/sdscripts-env``: torch, diffusers, transformers, and sd-scripts' ``library`` package).

What it writes into OUT:

- ``diffusers/``: the model in diffusers layout (``model_index.json``, ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``), fp16 safetensors. The architectures are the real
  SD1.5 ones (UNet 320/640/1280/1280 with 768-d cross attention, the 4-level KL VAE, CLIP ViT-L/14's
  text tower), so sd-scripts' own loaders accept it; only the weights are random (seed 0).
- ``sd15-random.safetensors``: the same weights as one checkpoint in the original (LDM) key layout,
  written by sd-scripts' own ``model_util.save_stable_diffusion_checkpoint``. This is the form the
  worker fetches for the ``sd15`` presets (one ``v1-5-pruned-emaonly.safetensors``-like file), so the
  real run loads it through ``model_util.load_models_from_stable_diffusion_checkpoint`` as a pod would.
- ``tokenizers/openai_clip-vit-large-patch14/``: a CLIPTokenizer folder (``vocab.json``,
  ``merges.txt``, configs) for sd-scripts' ``--tokenizer_cache_dir`` (``strategy_base._load_tokenizer``
  looks for ``<dir>/openai_clip-vit-large-patch14``). The BPE merges are the ones the open_clip package
  ships (``bpe_simple_vocab_16e6.txt.gz``, the same 16e6 BPE the CLIP tokenizer uses); the vocabulary is
  derived from them the way the CLIP tokenizer defines it: the 256 byte symbols, the same with
  ``</w>``, one entry per merge, then the two special tokens (49408 entries).

Usage: python sd15_random_model.py VOCAB_GZ OUT
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

# The CLIP text tower keeps 49152 - 256 - 2 merges of the 16e6 BPE file (the first line is a header).
_MERGES_KEPT = 49152 - 256 - 2
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"

UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 768,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level BPE alphabet: every byte as one printable character, in byte order of
    the printable ones first, then the rest mapped past 255 (so no symbol is whitespace/control)."""
    ranges = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
    printable = [code for first, last in ranges for code in range(ord(first), ord(last) + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tokenizer(vocab_gz: Path, out: Path) -> None:
    lines = gzip.decompress(vocab_gz.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGES_KEPT + 1]]
    if len(merges) != _MERGES_KEPT or any(len(m) != 2 for m in merges):
        raise SystemExit(f"{vocab_gz}: not the CLIP 16e6 BPE file ({len(merges)} merges)")
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), _BOS, _EOS]
    if len(vocab) != TEXT_CONFIG["vocab_size"] or len(set(vocab)) != len(vocab):
        raise SystemExit(f"vocabulary has {len(vocab)} entries ({len(set(vocab))} distinct), expected 49408")
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": TEXT_CONFIG["max_position_embeddings"],
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def check_tokenizer(folder: Path) -> None:
    """The built tokenizer must tokenize like CLIP: known ids of a known sentence, 77-token padding."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    ids = tokenizer("a photo of a cat").input_ids
    # <|startoftext|> a photo of a cat <|endoftext|> in the CLIP vocabulary.
    expected = [49406, 320, 1125, 539, 320, 2368, 49407]
    if ids != expected:
        raise SystemExit(f"tokenizer check failed: {ids} != {expected}")
    padded = tokenizer("ohwx woman", padding="max_length", max_length=77).input_ids
    if len(padded) != 77 or padded[-1] != 49407:
        raise SystemExit(f"tokenizer padding check failed: {padded[:5]}... ({len(padded)})")


def write_model(out: Path, tokenizer_dir: Path) -> None:
    import shutil

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from library import model_util  # sd-scripts' own converter to the single-file layout
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    started = time.monotonic()
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    params = sum(p.numel() for m in (unet, vae, text_encoder) for p in m.parameters())
    print(f"sd15-random-model: {params / 1e6:.0f}M random parameters in {time.monotonic() - started:.0f} s")

    layout = out / "diffusers"
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.to(torch.float16).save_pretrained(str(layout / name), safe_serialization=True)
    shutil.copytree(tokenizer_dir, layout / "tokenizer", dirs_exist_ok=True)
    (layout / "scheduler").mkdir(parents=True, exist_ok=True)
    (layout / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=1))
    (layout / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "feature_extractor": [None, None],
                "safety_checker": [None, None],
                "requires_safety_checker": False,
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            indent=1,
        )
    )
    keys = model_util.save_stable_diffusion_checkpoint(
        False,
        str(out / "sd15-random.safetensors"),
        text_encoder,
        unet,
        None,
        0,
        0,
        {"loraops": "random-weight SD1.5 for tests; not a usable model"},
        torch.float16,
        vae,
    )
    print(f"sd15-random-model: wrote {keys} tensors in {time.monotonic() - started:.0f} s")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    vocab_gz, out = Path(argv[0]), Path(argv[1])
    tokenizer_dir = out / "tokenizers" / "openai_clip-vit-large-patch14"
    write_tokenizer(vocab_gz, tokenizer_dir)
    check_tokenizer(tokenizer_dir)
    write_model(out, tokenizer_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
