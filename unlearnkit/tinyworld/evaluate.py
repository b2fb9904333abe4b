"""`tinyworld eval`: the numbers that show the tiny world works (judges, CLIP, generators, shard sets)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from . import store
from .data import caption, load_world
from .judges import accuracy, digit_prompts, judge_fid, predict, style_prompts, zero_shot_accuracy
from .sampling import generate
from .styles import STYLES

log = logging.getLogger(__name__)


def digit_prompt_set(k: int) -> tuple[list[str], torch.Tensor]:
    """k × "a handwritten digit N" for N = 0..9, with labels."""
    digits = torch.arange(10).repeat_interleave(k)
    return [caption(int(d), None, 0) for d in digits], digits


def style_prompt_set(
    k: int, styles: tuple[str, ...] = STYLES
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """k × "a handwritten digit N in S style" for every digit and style, with digit and style labels."""
    pairs = [(d, STYLES.index(s)) for d in range(10) for s in styles for _ in range(k)]
    prompts = [caption(d, STYLES[s], 0) for d, s in pairs]
    return prompts, torch.tensor([d for d, _ in pairs]), torch.tensor([s for _, s in pairs])


def generator_scores(unets, text_encoder, vae, judges: dict, real: torch.Tensor, k: int, steps: int,
                     guidance: float, seed: int, styles: tuple[str, ...] = STYLES) -> dict[str, float]:
    """digit_acc (plain prompts), style_acc and digit_acc_styled (styled prompts), judge_fid (styled vs
    real)."""
    prompts, digits = digit_prompt_set(k)
    img = generate(unets, text_encoder, vae, prompts, steps, guidance, seed)
    out = {"digit_acc": accuracy(judges["digit"], img, digits)}
    prompts, digits, styles_ = style_prompt_set(max(1, k // 2), styles)
    img = generate(unets, text_encoder, vae, prompts, steps, guidance, seed + 1)
    out["style_acc"] = accuracy(judges["style"], img, styles_)
    out["digit_acc_styled"] = accuracy(judges["digit"], img, digits)
    out["judge_fid"] = judge_fid(judges["digit"], img, real)
    return {key: round(v, 4) for key, v in out.items()}


def evaluate(k: int = 20, steps: int = 20, guidance: float = 6.0, seed: int = 0,
             weights_dir: Path = store.WEIGHTS_DIR, shard_sets: tuple[str, ...] = ("style", "split")) -> dict:
    """All figures; generated sets use k samples per digit (k/2 per digit×style)."""
    if k < 2:
        raise ValueError(f"k: expected >= 2 samples per prompt, got {k}")
    world = load_world()
    held = world.held_out_set()
    judges = {
        "digit": store.load_judge("digit", weights_dir),
        "style": store.load_judge("style", weights_dir),
    }
    clip, text_encoder, vae = (
        store.load_clip(weights_dir),
        store.load_text_encoder(weights_dir),
        store.load_vae(weights_dir),
    )
    res: dict = {
        "judge_digit_acc_real": round(accuracy(judges["digit"], held.images, held.digits), 4),
        "judge_style_acc_real": round(accuracy(judges["style"], held.images, held.styles), 4),
        "clip_zeroshot_digit_acc": round(
            zero_shot_accuracy(clip, held.images, held.digits, digit_prompts()), 4
        ),
        "clip_zeroshot_style_acc": round(
            zero_shot_accuracy(clip, held.images, held.styles, style_prompts()), 4
        ),
        "steps": steps,
        "guidance": guidance,
        "samples_per_digit": k,
    }
    with torch.no_grad():
        recon = vae.decode(vae.encode(held.images).latent_dist.mean).sample.clamp(-1, 1)
    res["vae_psnr_db"] = round(float(10 * torch.log10(4 / (recon - held.images).pow(2).mean())), 2)
    log.info("judges and CLIP: %s", res)
    paragon = store.load_unet("paragon", weights_dir)
    res.update(generator_scores(paragon, text_encoder, vae, judges, held.images, k, steps, guidance, seed))
    res["base"] = generator_scores(
        store.load_unet("base", weights_dir), text_encoder, vae, judges,
        world.rendered(world.held_out, "plain").images, k, steps, guidance, seed, styles=("plain",),
    )
    for shard_set in shard_sets:
        shards = store.load_shards(shard_set, weights_dir)
        k_set = max(2, k // 2)  # a mixture costs one UNet call per shard: half the samples
        res[f"shards_{shard_set}"] = {
            "mixture": "uniform x0 (naive averaging)",
            "samples_per_digit": k_set,
            **generator_scores(
                list(shards.values()), text_encoder, vae, judges, held.images, k_set, steps, guidance, seed
            ),
        }
        log.info("shards_%s: %s", shard_set, res[f"shards_{shard_set}"])
    if "style" in shard_sets:
        res["shards_style"]["own_style_acc"] = own_style_accuracy(
            text_encoder, vae, judges, k, steps, guidance, seed, weights_dir
        )
    return res


def own_style_accuracy(
    text_encoder, vae, judges, k: int, steps: int, guidance: float, seed: int, weights_dir: Path
) -> float:
    """Each style shard alone on prompts of its own style: style judge accuracy, averaged over shards."""
    scores = []
    for name, unet in store.load_shards("style", weights_dir).items():
        prompts, _, styles = style_prompt_set(max(1, k // 2), (name,))
        scores.append(
            accuracy(
                judges["style"], generate(unet, text_encoder, vae, prompts, steps, guidance, seed), styles
            )
        )
    return round(sum(scores) / len(scores), 4)


__all__ = ["evaluate", "generator_scores", "digit_prompt_set", "style_prompt_set", "predict"]
