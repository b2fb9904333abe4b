"""Load Tiny World (nodes/tinyworld.py) in real ComfyUI, 2024-03 and 0.3.75: ComfyUI's own sampler and
VAE decode on the tiny world make digits its judge recognises."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_harness import Graph, Ref
from suite import suite_fixtures

from unlearnkit.tinyworld import store

PROMPT_DIGIT = 3
UNETS = ["base", "paragon"]


def text(g: Graph, clip: Ref, prompt: str) -> Ref:
    return g.node("CLIPTextEncode", clip=clip, text=prompt)


def digit_graph(unet: str) -> dict:
    g = Graph()
    world = g.node("UnlearnKitLoadTinyWorld", unet=unet)
    model, clip, vae = world, world.out(1), world.out(2)
    latent = g.node(
        "KSampler", model=model, seed=1, steps=20, cfg=4.0, sampler_name="euler", scheduler="normal",
        positive=text(g, clip, f"a handwritten digit {PROMPT_DIGIT}"), negative=text(g, clip, ""),
        latent_image=g.node("EmptyLatentImage", width=64, height=64, batch_size=4), denoise=1.0,
    )
    g.save_latent(latent, "latent")
    g.node("UKTestSaveImage", images=g.node("VAEDecode", samples=latent, vae=vae), key="image")
    return g.prompt()


def images_graph() -> dict:
    g = Graph()
    g.node(
        "UKTestSaveImage",
        images=g.node("UnlearnKitTinyWorldImages", source="style/bold", count=8, seed=0),
        key="bold",
    )
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    graphs = {f"digit_{u}": digit_graph(u) for u in UNETS}
    graphs["images"] = images_graph()
    return graphs


def judge_digits(images: np.ndarray) -> list[int]:
    """The tiny world's digit judge on ComfyUI IMAGEs (B, H, W, 3) in [0, 1]."""
    judge = store.load_judge("digit")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1  # (B, 3, 16, 16) in [-1, 1]
    with torch.no_grad():
        return judge(x).argmax(1).tolist()


@pytest.mark.parametrize("unet", UNETS)
def test_comfyui_samples_the_prompted_digit(comfy_run, unet):
    r = comfy_run[f"digit_{unet}"].assert_ok()
    assert r.latent("latent").shape == (4, 4, 8, 8)
    images = r.latent("image")
    assert images.shape == (4, 16, 16, 3) and np.isfinite(images).all()
    digits = judge_digits(images)
    assert sum(d == PROMPT_DIGIT for d in digits) >= 3, (
        f"judge saw {digits} for 'a handwritten digit {PROMPT_DIGIT}'"
    )


def test_tiny_world_images_are_a_shards_data(comfy_run):
    images = comfy_run["images"].assert_ok().latent("bold")
    assert images.shape == (8, 16, 16, 3) and images.min() >= 0 and images.max() <= 1
    style = store.load_judge("style")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1
    with torch.no_grad():
        assert style(x).argmax(1).tolist() == [1] * 8  # STYLES.index("bold")


world, comfy_run = suite_fixtures(__name__)
