"""The tiny world as a diffusers ``StableDiffusionPipeline`` (16×16 px images)."""
from __future__ import annotations

from pathlib import Path

import torch

from . import store
from .models import build_scheduler
from .tokenizer import clip_tokenizer


def build_pipeline(unet, text_encoder, vae, scheduler: str = "ddim"):
    """StableDiffusionPipeline from the tiny components (no safety checker: the world is digits)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
        scheduler=build_scheduler(scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(unet: str = "paragon", scheduler: str = "ddim", weights_dir: Path = store.WEIGHTS_DIR):
    """A ready pipeline on the committed weights; unet: "base", "paragon", "style/bold", "split/split3", …

    Example: ``load_pipeline()("a handwritten digit 7 in bold style", num_inference_steps=20,
    guidance_scale=4.0, output_type="pt").images`` -> (1, 3, 16, 16) in [0, 1].
    """
    return build_pipeline(store.load_unet(unet, weights_dir), store.load_text_encoder(weights_dir),
                          store.load_vae(weights_dir), scheduler)


def pipeline_images(
    pipe, prompts: list[str], steps: int = 20, guidance: float = 4.0, seed: int = 0
) -> torch.Tensor:
    """Run the diffusers pipeline: images (B, 3, 16, 16) in [-1, 1] (the judges' input range)."""
    gen = torch.Generator().manual_seed(seed)
    out = pipe(
        list(prompts), num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="pt"
    )
    return out.images * 2 - 1
