"""`tinyworld train`: re-create every weight of the tiny world from a seed, stage by stage.

Stages (each writes its files; existing files are kept unless --force):
  vae, clip   public sources in all styles (the "pretrained foundation")
  judges      all training sources in all styles (measuring instruments, not generators)
  base        UNet on public sources, plain style only
  style       one shard per non-plain style, fine-tuned from base on that style's private sources only
  split       8 shards, fine-tuned from base on a random 1/8 of the private sources each
  paragon     fine-tuned from base on all private sources together, plus the base's public data
"""
from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import store
from .data import Subset, all_captions, load_world, shard_names
from .loops import train_clip, train_judge, train_unet, train_vae
from .models import CLIP_CONFIG, UNET_CONFIG, JudgeNet, build_clip, build_unet, build_vae, encode_prompts
from .styles import STYLES
from .tokenizer import tokenize

log = logging.getLogger(__name__)

STAGES = ("vae", "clip", "judges", "base", "style", "split", "paragon")


@dataclass(frozen=True)
class Steps:
    vae: int = 400
    clip: int = 1200
    judge: int = 800
    base: int = 1200
    style: int = 300
    split: int = 450  # per shard; 150 left the 8-way composition at 2.6x the paragon's judge-FID
    paragon: int = 1200  # 600 gave digit_acc 0.89, under the 0.90 target
    shard_lr: float = 5e-4
    shard_batch: int = 32  # style and split shards (base and paragon use 64)


QUICK = Steps(vae=3, clip=3, judge=3, base=3, style=2, split=2, paragon=2)


def stage_seed(seed: int, name: str) -> int:
    """A seed for one stage/shard that depends only on the global seed and the stage's name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def needs(path: Path, force: bool) -> bool:
    if path.is_file() and not force:
        log.info("keeping %s (use --force to retrain)", path)
        return False
    return True


def unet_inputs(weights_dir: Path) -> tuple[torch.Tensor, object]:
    """Frozen text states of every training caption and the trained VAE (both as stored, fp16-rounded)."""
    text_states = encode_prompts(store.load_text_encoder(weights_dir), all_captions())
    return text_states, store.load_vae(weights_dir)


@torch.no_grad()
def latents_of(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled posterior (mean, std) of images, (N, 4, 8, 8)."""
    post = vae.encode(images).latent_dist
    sf = vae.config.scaling_factor
    return post.mean * sf, post.std * sf


def fine_tune(name: str, data, steps: int, lr: float, seed: int, weights_dir: Path, inputs, force: bool,
              batch: int = 64) -> None:
    """A UNet fine-tuned from the base on `data` only (its weights depend on base + data + seed alone)."""
    path = store.unet_path(name, weights_dir)
    if not needs(path, force):
        return
    text_states, vae = inputs
    torch.manual_seed(stage_seed(seed, name))
    unet = build_unet() if name == "base" else store.load_unet("base", weights_dir)
    train_unet(
        unet, latents_of(vae, data.images), data, text_states, steps, stage_seed(seed, name), f"unet/{name}",
        batch=batch, lr=lr, p_style=0.5 if name == "base" else 0.8,
    )
    store.save_weights(unet, path)
    if name == "base":  # shards and paragon are built from the base's config
        store.write_config({"unet": dict(UNET_CONFIG)}, weights_dir)


def run_stage(stage: str, steps: Steps, seed: int, weights_dir: Path, force: bool) -> None:
    world = load_world()
    if stage == "vae" and needs(weights_dir / "vae.safetensors", force):
        torch.manual_seed(stage_seed(seed, "vae"))
        vae = build_vae()
        std = train_vae(vae, world.public_set(), steps.vae, stage_seed(seed, "vae"))
        vae.register_to_config(scaling_factor=1.0 / std)
        store.write_config({"vae": dict(vae.config)}, weights_dir)
        store.save_weights(vae, weights_dir / "vae.safetensors")
    elif stage == "clip" and needs(weights_dir / "clip.safetensors", force):
        torch.manual_seed(stage_seed(seed, "clip"))
        clip = build_clip()
        train_clip(clip, world.public_set(), tokenize(all_captions()), steps.clip, stage_seed(seed, "clip"))
        store.save_clip(clip, weights_dir / "clip.safetensors")
        store.write_config({"clip": CLIP_CONFIG}, weights_dir)
    elif stage == "judges":
        train_data = world.all_styles(torch.cat([world.public, world.private]))
        for kind, labels, n in (("digit", train_data.digits, 10), ("style", train_data.styles, len(STYLES))):
            path = weights_dir / "judges" / f"{kind}.safetensors"
            if needs(path, force):
                torch.manual_seed(stage_seed(seed, f"judge/{kind}"))
                judge = JudgeNet(n)
                train_judge(judge, train_data, labels, steps.judge, stage_seed(seed, f"judge/{kind}"))
                store.save_weights(judge, path)
    elif stage in ("base", "style", "split", "paragon"):
        inputs = unet_inputs(weights_dir)
        if stage == "base":
            fine_tune(
                "base", world.public_set(plain_only=True), steps.base, 1e-3, seed, weights_dir, inputs, force
            )
        elif stage == "paragon":
            # the paragon sees everything the shards and the base saw (else it forgets the plain style)
            everything = Subset.concat([world.public_set(plain_only=True), world.private_set()])
            fine_tune("paragon", everything, steps.paragon, steps.shard_lr, seed, weights_dir, inputs, force)
        else:
            for shard in shard_names(stage):
                fine_tune(
                    f"{stage}/{shard}", world.shard_source(stage, shard), getattr(steps, stage),
                    steps.shard_lr, seed, weights_dir, inputs, force, batch=steps.shard_batch,
                )


def train_all(stages: tuple[str, ...] = STAGES, steps: Steps = Steps(), seed: int = 0,
              weights_dir: Path = store.WEIGHTS_DIR, force: bool = False) -> float:
    """Run the stages in order; returns the wall-clock seconds taken."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown {unknown}; expected a subset of {STAGES}")
    if "paragon" in stages or "style" in stages or "split" in stages:
        if "base" not in stages and not store.unet_path("base", weights_dir).is_file():
            raise ValueError(
                "stages: shards and paragon are fine-tuned from the base; train stage 'base' first"
            )
    start = time.perf_counter()
    for stage in stages:
        t0 = time.perf_counter()
        run_stage(stage, steps, seed, weights_dir, force)
        log.info("stage %s done in %.1f s", stage, time.perf_counter() - t0)
    took = time.perf_counter() - start
    manifest = store.read_config(weights_dir).get("training", {})
    manifest.update({"seed": seed, "steps": asdict(steps), f"seconds_{'+'.join(stages)}": round(took, 1),
                     "torch_threads": torch.get_num_threads()})
    store.write_config({"training": manifest}, weights_dir)
    return took
