"""Graph pieces the Compose test modules (and bench/compose_comfy.py) share: shard chains, Compose Shards with
its gate and evaluate inputs, samplers, gate training, attribution read-outs."""
from __future__ import annotations

from comfy_harness import Graph, Ref

STYLE_SHARDS = ("bold", "slanted", "inverted", "outlined")
EXACT = {"evaluate": "every-shard", "prune_eps": 0.0}  # the exact mixture: every shard on every sample


def shard_chain(g: Graph, *entries: tuple) -> Ref:
    """Chain Shard nodes: entries are (model, name, weight) or (model, name, weight, access_tags)."""
    chain = None
    for model, name, weight, *tags in entries:
        inputs = {"model": model, "name": name, "weight": weight, "access_tags": tags[0] if tags else ""}
        chain = g.node("UnlearnKitShard", **inputs, **({"shards": chain} if chain is not None else {}))
    return chain


def compose(g: Graph, shards: Ref, gate: str = "static", shard_gate: Ref | None = None, **evaluate) -> Ref:
    """Compose Shards; ``evaluate``: its evaluate / prune_eps / fast_sigma inputs (defaults if absent)."""
    extra = {"shard_gate": shard_gate} if shard_gate is not None else {}
    return g.node("UnlearnKitComposeShards", shards=shards, gate=gate, **evaluate, **extra)


def compose_models(g: Graph, *entries: tuple, **evaluate) -> Ref:
    """Compose Shards (static gate) over (model, name, weight) entries; the exact mixture unless told."""
    return compose(g, shard_chain(g, *entries), **{**EXACT, **evaluate})


def style_shards(g: Graph, names=STYLE_SHARDS) -> tuple[Ref, list[Ref]]:
    """(shard chain, loaders) of the tiny world's style shards at weight 1."""
    loaders = [g.node("UnlearnKitLoadTinyWorld", unet=f"style/{s}") for s in names]
    return shard_chain(g, *[(loader, s, 1.0) for loader, s in zip(loaders, names)]), loaders


def small_latent(g: Graph, batch: int = 2) -> Ref:
    return g.empty_latent(size=64, batch=batch)  # 8x8 latents: the tiny world's shape


def sde_sample(g: Graph, model: Ref, seed: int, latent: Ref, steps: int) -> Ref:
    """SamplerCustom with euler_ancestral (a stochastic sampler: the density gate's exact case)."""
    return g.node(
        "SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=3.0, positive=g.conditioning(1),
        negative=g.conditioning(2), sampler=g.node("KSamplerSelect", sampler_name="euler_ancestral"),
        sigmas=g.node("BasicScheduler", model=model, scheduler="karras", steps=steps, denoise=1.0),
        latent_image=latent,
    )


def advanced_sample(g: Graph, model: Ref, seed: int, latent: Ref, steps: int, sampler: str) -> Ref:
    """SamplerCustomAdvanced (ComfyUI 0.3.x): RandomNoise + CFGGuider + KSamplerSelect + BasicScheduler."""
    guider = g.node("CFGGuider", model=model, positive=g.conditioning(1), negative=g.conditioning(2), cfg=3.0)
    return g.node(
        "SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=seed), guider=guider,
        sampler=g.node("KSamplerSelect", sampler_name=sampler),
        sigmas=g.node("BasicScheduler", model=model, scheduler="karras", steps=steps, denoise=1.0),
        latent_image=latent,
    )


def train_gate(g: Graph, shards: Ref, filename: str, images: dict, steps: int, batch_size: int = 32,
               if_exists: str = "retrain", **prompts) -> Ref:
    """Train Shard Gate on ``images`` {images_k: IMAGE} with the tiny world's VAE; ``prompts``: prompt_k and
    empty_prompt."""
    vae = g.node("UnlearnKitLoadTinyWorld", unet="base").out(2)
    return g.node("UnlearnKitTrainShardGate", shards=shards, vae=vae, filename=filename, steps=steps,
                  batch_size=batch_size, learning_rate=2e-3, seed=0, if_exists=if_exists, **images, **prompts)


def style_images(styles: tuple[str, ...], g: Graph, count: int, seed: int = 0) -> dict:
    """{images_k: Tiny World Images of style k}."""
    return {f"images_{k}": g.node("UnlearnKitTinyWorldImages", source=f"style/{s}", count=count, seed=seed)
            for k, s in enumerate(styles, start=1)}


def attribution(g: Graph, model: Ref, latent: Ref, key: str) -> Ref:
    """Shard Attribution after ``latent``; its report saved as <key>.txt and its plot as <key>_plot."""
    node = g.node("UnlearnKitShardAttribution", model=model, latent=latent, max_samples=2, filename_prefix="")
    g.node("UKTestSaveText", text=node.out(1), key=key)
    g.node("UKTestSaveImage", images=node, key=f"{key}_plot")
    return node


def built(build) -> dict:
    """The prompt of a graph that ``build(g)`` fills."""
    g = Graph()
    build(g)
    return g.prompt()
