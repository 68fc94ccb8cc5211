"""A tiny random-weight Stable Diffusion pipeline (real diffusers components, a few MB).

``gateway models make-tiny DIR`` writes one so generation runs end to end on a laptop's
CPU, and the tests build theirs with the same function and load it back through the
production loader. Its pictures are noise-like: the weights are random, the code path is
the real one (UNet, VAE, CLIP text encoder and tokenizer, scheduler).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

TINY_SPEC = {
    "kind": "text-to-image", "description": "Tiny random-weight Stable Diffusion pipeline "
    "for development and tests (noise-like pictures, real code path).",
    "defaultSteps": 4, "minSteps": 1, "maxSteps": 50,
    "allowedWidths": [32, 64, 96, 128, 256], "allowedHeights": [32, 64, 96, 128, 256],
    "maxResolution": 256 * 256, "defaultResolution": [64, 64],
    "samplers": ["DPM++ 2M Karras", "DPM++ 2M", "Euler a", "Euler", "DDIM", "UniPC"],
    "defaultSampler": "DPM++ 2M Karras", "maxBatchSize": 4, "maxFrames": 16,
}


def _tokenizer_files(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary: every lower-case word still tokenizes."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def make_tiny(directory, *, seed: int = 0, sample_size: int = 32) -> Path:
    """Write the pipeline to ``directory`` (``from_pretrained``-loadable) and return it."""
    return save_random_pipeline(
        directory, seed=seed,
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size,
                  cross_attention_dim=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
        vae=dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2),
        text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                  num_hidden_layers=2))


def save_random_pipeline(directory, *, seed, unet, vae, text, dtype=None) -> Path:
    """A Stable Diffusion pipeline of real diffusers components with random weights, from
    the UNet, VAE and CLIP text-encoder configurations given, with the character-level
    tokenizer; saved with ``save_pretrained``. The benchmark builds its SD 1.5-shaped
    model with it too."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from jobs.gpu.loader import _quiet_libraries

    _quiet_libraries()
    directory = Path(directory)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, norm_num_groups=32, **unet)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
                        **vae)
    tokenizer_dir = directory / ".tokenizer-src"
    _tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"),
                              str(tokenizer_dir / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, layer_norm_eps=1e-5,
        vocab_size=len(tokenizer), **text))
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012,
                                            beta_schedule="scaled_linear",
                                            use_karras_sigmas=True, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if dtype is not None:
        pipe.to(dtype)
    pipe.save_pretrained(directory)
    for path in tokenizer_dir.iterdir():
        path.unlink()
    tokenizer_dir.rmdir()
    return directory


def catalogue_entry(model_id: str, directory) -> dict:
    """The ``models.json`` entry that serves the tiny pipeline written to ``directory``."""
    return {"id": model_id, "name": f"Tiny SD ({model_id})", "path": str(Path(directory)),
            **TINY_SPEC}
