"""``python -m unlearnkit compose …``: sample from a composition of shards, train a gate.

    python -m unlearnkit compose sample --prompt "a handwritten digit 3 in bold style" --gate classifier
    python -m unlearnkit compose sample --shards a=unet_a/ b=b.safetensors --base sd15_pipeline/ --prompt "…"
    python -m unlearnkit compose train-gate --out gate.safetensors            # tiny world's style shards

Without --shards the tiny world's shard set (--shard-set style|split) is used.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from .. import io
from ..compose.attribution import attribution_plot, attribution_report
from ..compose.diffusers_unet import ComposedUNet, load_shard_unet
from ..compose.gate_model import load_gate
from ..compose.gate_registry import GATES, build_gate
from ..compose.gate_training import GateTrainConfig, train_gate
from ..compose.routing import DEFAULT_EPS, DEFAULT_EVALUATE, DEFAULT_MC_SIGMA, EVALUATE, Evaluation
from ..compose.shards import ForgetRecord, Shard, ShardSet, append_forget_log, parse_tags

log = logging.getLogger(__name__)


def parse_shard_args(items: list[str]) -> list[tuple[str, str]]:
    """["name=path", …] -> [(name, path)]; a bare path is named after its file stem."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        out.append((name, path) if sep else (Path(item).stem, item))
    return out


def tinyworld_shards(shard_set: str, scheduler: str = "ddim") -> tuple[ShardSet, object]:
    """The tiny world's shards as a ShardSet (with file hashes) and a pipeline around them."""
    from ..tinyworld import store
    from ..tinyworld.data import shard_names
    from ..tinyworld.pipeline import build_pipeline

    shards = []
    for name in shard_names(shard_set):
        path = store.unet_path(f"{shard_set}/{name}")
        shards.append(
            Shard(name, store.load_unet(f"{shard_set}/{name}"), source=str(path), sha256=io.file_sha256(path))
        )
    pipe = build_pipeline(
        store.load_unet("base"), store.load_text_encoder(), store.load_vae(), scheduler=scheduler
    )
    return ShardSet(tuple(shards)), pipe


def file_shards(items: list[str], base: str) -> tuple[ShardSet, object]:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        base, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    shards = []
    for name, path in parse_shard_args(items):
        sha = io.file_sha256(path) if Path(path).is_file() else ""
        shards.append(Shard(name, load_shard_unet(path, pipe.unet), source=path, sha256=sha))
    return ShardSet(tuple(shards)), pipe


def make_gate(kind: str, shards: ShardSet, gate_file: str | None):
    """The --gate choice over the shard set (a classifier gate reads --gate-file)."""
    net = load_gate(gate_file) if kind == "classifier" and gate_file else None
    return build_gate(kind, shards.names, shards.priors, net, net_input="--gate-file")


def composed_unet(shards: ShardSet, scheduler, args: argparse.Namespace) -> ComposedUNet:
    """The shards as one diffusers UNet: the --gate over them, routed by --evaluate / --prune-eps /
    --fast-sigma, in the scheduler's noise schedule and prediction type."""
    evaluation = Evaluation(args.evaluate, args.prune_eps, args.fast_sigma)
    evaluation.check(("--evaluate", "--prune-eps", "--fast-sigma"))
    gate = make_gate(args.gate, shards, args.gate_file)
    return ComposedUNet([s.model for s in shards], shards.names, gate, scheduler.alphas_cumprod,
                        scheduler.config.prediction_type, evaluation=evaluation)


def select(shards: ShardSet, args: argparse.Namespace) -> tuple[ShardSet, list[ForgetRecord]]:
    """Apply --weights, --rights/--tags and --forget to a shard set."""
    if args.weights:
        if len(args.weights) != len(shards):
            raise ValueError(
                f"--weights: expected {len(shards)} values (shards {shards.names}), got {len(args.weights)}"
            )
        for name, w in zip(shards.names, args.weights):
            shards = shards.with_prior(name, w)
    records = []
    for name in args.forget or []:
        shards, record = shards.forget(name, reason="command line")
        records.append(record)
    if args.rights is not None:
        shards = shards.restrict(parse_tags(args.rights), requested=args.use)
    return shards, records


def run_sample(args: argparse.Namespace) -> int:
    from ..plots import image_grid

    # the SDE form of the density gate needs a stochastic sampler; every other gate works with DDIM
    scheduler = "ddpm" if args.gate == "density" else "ddim"
    shards, pipe = (
        file_shards(args.shards, args.base) if args.shards else tinyworld_shards(args.shard_set, scheduler)
    )
    shards, records = select(shards, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for record in records:
        append_forget_log(out / "forget_log.jsonl", record)
        log.info("forgot %s (sha256 %s)", record.shard, record.sha256[:12])
    pipe.unet = composed_unet(shards, pipe.scheduler, args)
    gen = torch.Generator().manual_seed(args.seed)
    images = pipe([args.prompt] * args.n, num_inference_steps=args.steps, guidance_scale=args.cfg,
                  generator=gen, output_type="pt").images * 2 - 1  # (n, 3, H, W) in [-1, 1]
    image_grid(images, rows=1).save(out / "samples.png")
    report = attribution_report(pipe.unet.composer.history, shards.names)
    attribution_plot(pipe.unet.composer.history, shards.names).save(out / "attribution.png")
    (out / "attribution.json").write_text(
        json.dumps({"prompt": args.prompt, "gate": args.gate, "evaluate": args.evaluate, **report}, indent=1)
    )
    print(json.dumps({"out": str(out), "shards": shards.names, "top_shard": report["top_shard"]}))
    return 0


def run_train_gate(args: argparse.Namespace) -> int:
    from ..tinyworld import store
    from ..tinyworld.data import load_world, shard_names
    from ..tinyworld.stages import latents_of

    world, vae = load_world(), store.load_vae()
    latents = {
        n: latents_of(vae, world.shard_source(args.shard_set, n).images)[0]
        for n in shard_names(args.shard_set)
    }
    cfg = GateTrainConfig(steps=args.steps, batch_size=args.batch, seed=args.seed)
    train_gate(
        latents,
        args.out,
        cfg,
        family="tinyworld",
        checkpoint_path=args.out + ".ckpt",
        overwrite=args.overwrite,
    )
    print(json.dumps({"gate": args.out, "shards": list(latents), "steps": args.steps}))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("compose", help="compose shards (CDM): sample, train a gate")
    csub = p.add_subparsers(dest="compose_command", required=True)
    s = csub.add_parser("sample", help="sample from a composition; writes samples.png, attribution.png/json")
    s.add_argument("--prompt", required=True)
    s.add_argument("--shards", nargs="*", help="name=path of diffusers UNet folders or safetensors files")
    s.add_argument("--base", help="diffusers pipeline folder the shards were fine-tuned from (with --shards)")
    s.add_argument("--shard-set", default="style", choices=("style", "split"), help="tiny world shard set")
    s.add_argument("--weights", nargs="*", type=float, help="slider prior per shard")
    s.add_argument("--gate", default="static", choices=GATES)
    s.add_argument("--gate-file", help="classifier gate (.safetensors)")
    s.add_argument("--evaluate", default=DEFAULT_EVALUATE, choices=EVALUATE,
                   help="which shards run on which samples (fast: per sample + one shard above --fast-sigma)")
    s.add_argument("--prune-eps", type=float, default=DEFAULT_EPS, help="skip a shard below this weight")
    s.add_argument("--fast-sigma", type=float, default=DEFAULT_MC_SIGMA,
                   help="fast: one shard per sample above this noise level")
    s.add_argument(
        "--forget", action="append", help="drop this shard (repeatable); recorded in forget_log.jsonl"
    )
    s.add_argument(
        "--rights", help="access rights (tags) of the principal; shards needing others are refused"
    )
    s.add_argument("--use", nargs="*", help="with --rights: the shards requested")
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--cfg", type=float, default=4.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="unlearnkit-out/compose")
    s.set_defaults(func=run_sample)
    t = csub.add_parser("train-gate", help="train a classifier gate on the tiny world's shard sources")
    t.add_argument("--out", required=True)
    t.add_argument("--shard-set", default="style", choices=("style", "split"))
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=run_train_gate)
