"""``erase train`` and ``erase attack``: train an erased text encoder; attack one and measure ASR.

Multi-process: ``accelerate launch --multi_gpu --num_processes N -m unlearnkit erase train …`` on GPUs,
``torchrun --nproc_per_node N -m unlearnkit erase train … --cpu`` on CPUs (gloo).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def _prompts(values: list[str] | None, file: str | None, name: str) -> tuple[str, ...]:
    out = list(values or [])
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{name} file {file!r}: does not exist")
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple(out)


def _threads(n: int) -> None:
    import torch

    if n < 1:
        raise ValueError(f"--threads: expected >= 1, got {n}")
    torch.set_num_threads(n)


def components(pipeline: str | None, unet: str, text_encoder: str | None = None,
               checkpoint: str | None = None, prediction: str | None = None):
    """A single-file checkpoint's or a diffusers pipeline folder's components, or the tiny world's (with
    UNet ``unet``) when neither is given."""
    if checkpoint is not None:
        if pipeline is not None:
            raise ValueError("--checkpoint and --pipeline: give one of them")
        from .checkpoint_file import checkpoint_components

        return checkpoint_components(checkpoint, prediction, text_encoder)
    if pipeline is None:
        from ..tinyworld.tasks.erase_models import tiny_components

        return tiny_components(unet, text_encoder)
    from ..erase.components import load_components

    return load_components(pipeline, text_encoder)


def _remove_checkpoints(folder: Path) -> None:
    from ..erase import checkpoints

    for _, path in checkpoints.checkpoints(folder):
        path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def run_train(args: argparse.Namespace) -> int:
    from ..erase.advunlearn import EraseConfig, train_erased_encoder
    from ..erase.distributed import make_runtime
    from ..erase.erased_file import check_output, save_erased_encoder

    _threads(args.threads)
    out = check_output(args.out)
    config = EraseConfig(
        concept=_prompts(args.concept, args.concept_file, "concept"),
        retain=_prompts(args.retain, args.retain_file, "retain"), attack=args.attack,
        iterations=args.iterations, warmup=args.warmup, lr=args.lr, eta=args.eta,
        retain_weight=args.retain_weight, retain_batch=args.retain_batch, layers=args.layers,
        attack_steps=args.attack_steps, attack_lr=args.attack_lr, attack_tokens=args.attack_tokens,
        attack_every=args.attack_every, sampler_steps=args.sampler_steps, guidance=args.guidance,
        bank_size=args.bank_size, retain_empty=not args.no_retain_empty, seed=args.seed,
    )
    runtime = make_runtime(cpu=args.cpu)
    comps = components(args.pipeline, args.unet, args.text_encoder, args.checkpoint, args.prediction)
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".checkpoints")
    result = train_erased_encoder(comps, config, folder, args.checkpoint_every, args.resume, runtime,
                                  progress=not args.no_progress)
    if runtime.is_main:
        info = {
            "concept": list(config.concept),
            "mode": "esd" if config.attack == "none" else f"advunlearn-{config.attack}",
            "steps": str(result.steps),
            "base_sha256": result.base_sha256,
            "source": comps.source,
            "layers": config.layers,
            "retain_prompts": str(len(config.retain)),
            "config": config.to_dict(),
        }
        path = save_erased_encoder(out, result.encoder, info)
        if not args.keep_checkpoints:
            _remove_checkpoints(folder)
        print(json.dumps({"out": str(path), "steps": result.steps, "seconds": round(result.seconds, 2),
                          "final_loss": result.losses[-1], "resumed_from": result.resumed_from,
                          "processes": runtime.world, "base_sha256": result.base_sha256}))
    runtime.barrier()
    return 0


def run_attack(args: argparse.Namespace) -> int:
    from ..erase.denoise import Denoiser, SamplerConfig
    from ..erase.measure import AttackSpec, Scorer, attack_report
    from ..erase.prompts import check_prompts

    _threads(args.threads)
    if args.judge and args.pipeline is not None:
        raise ValueError("--judge: judges exist for the tiny world only; leave out --pipeline or --judge")
    model = {"checkpoint": args.checkpoint, "prediction": args.prediction}
    detector = None
    if args.judge:
        from ..tinyworld.tasks import Concept

        detector = Concept.parse(args.judge).detector()
    prompts = _prompts(args.concept, args.concept_file, "concept")
    original = components(args.pipeline, args.unet, **model)
    attacked = components(args.pipeline, args.unet, args.encoder, **model) if args.encoder else original
    check_prompts(original.tokenizer, list(prompts), "concept")
    spec = AttackSpec(args.method, args.objective, args.tokens, args.steps, args.lr, args.check_every)
    denoiser = Denoiser(original.unet, original.scheduler, SamplerConfig(args.sampler_steps, args.guidance))
    scorer = Scorer(denoiser, original.vae, original.tokenizer, detector)
    seeds = range(args.seed, args.seed + args.seeds)
    report = attack_report(attacked.text_encoder, original.text_encoder, scorer, prompts, seeds, spec)
    print(json.dumps({"asr": report.asr, "pre_attack_rate": report.pre_attack_rate, "method": spec.method,
                      "objective": spec.objective, "instances": [vars(i) for i in report.instances]}))
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pipeline", default=None, help="diffusers SD1.x/2.x pipeline folder (default: the tiny world)"
    )
    p.add_argument("--checkpoint", default=None,
                   help="SD1.x/SD2.x single-file .safetensors (as ComfyUI / the webui load), read offline")
    p.add_argument("--prediction", choices=("epsilon", "v_prediction"), default=None,
                   help="the checkpoint's prediction type (SD2: 768-v files are v_prediction, the default)")
    p.add_argument("--unet", default="paragon", help="tiny world UNet: base, paragon, style/<style>, …")
    p.add_argument("--concept", action="append", help="prompt naming the concept (repeatable)")
    p.add_argument("--concept-file", default=None, help="more concept prompts, one per line")
    p.add_argument("--sampler-steps", type=int, default=None, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def add_parsers(sub: argparse._SubParsersAction, guarded) -> None:
    """Register ``train`` and ``attack`` under ``erase``."""
    t = sub.add_parser("train", help="train a concept-erased text encoder (AdvUnlearn; --attack none: ESD)")
    _add_model_args(t)
    t.set_defaults(sampler_steps=50, guidance=3.0)
    t.add_argument("--out", required=True, help="output .safetensors (never overwritten)")
    t.add_argument("--retain", action="append", help="prompt to keep (repeatable)")
    t.add_argument("--retain-file", default=None, help="more retain prompts, one per line")
    t.add_argument("--text-encoder", default=None, help="start from this encoder instead of the pipeline's")
    t.add_argument("--attack", choices=("pgd", "fast_at", "none"), default="pgd")
    t.add_argument("--iterations", type=int, default=1000)
    t.add_argument("--warmup", type=int, default=200, help="iterations without attack")
    t.add_argument(
        "--lr", type=float, default=1e-5, help="Adam lr of the encoder (the tiny world needs ~1e-3)"
    )
    t.add_argument("--eta", type=float, default=1.0, help="negative guidance η of the ESD target")
    t.add_argument("--retain-weight", type=float, default=0.3, help="γ")
    t.add_argument("--retain-batch", type=int, default=5)
    t.add_argument(
        "--no-retain-empty",
        action="store_true",
        help="do not hold the empty prompt's output (AdvUnlearn as published)",
    )
    t.add_argument(
        "--layers", default="all", help="all | last:N | comma list of indices, final_layer_norm, embeddings"
    )
    t.add_argument("--attack-steps", type=int, default=30)
    t.add_argument("--attack-lr", type=float, default=1e-3)
    t.add_argument("--attack-tokens", type=int, default=1)
    t.add_argument("--attack-every", type=int, default=1)
    t.add_argument("--bank-size", type=int, default=4, help="original-model trajectories kept per prompt")
    t.add_argument("--checkpoint-dir", default=None, help="default: OUT.checkpoints")
    t.add_argument("--checkpoint-every", type=int, default=100)
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints after OUT is written")
    t.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=guarded(run_train))

    a = sub.add_parser(
        "attack", help="adversarial-prompt attack on an (erased) encoder; ASR with the tiny world's judge"
    )
    _add_model_args(a)
    a.set_defaults(sampler_steps=20, guidance=4.0)
    a.add_argument(
        "--encoder", default=None, help="erased text encoder to attack (default: the pipeline's own)"
    )
    a.add_argument("--judge", default=None, help="tiny world: digit:N or style:NAME (the erased concept)")
    a.add_argument(
        "--method", choices=("prompt", "soft"), default="prompt", help="discrete tokens or continuous δ"
    )
    a.add_argument("--objective", choices=("denoise_concept", "match_original"), default="denoise_concept")
    a.add_argument("--tokens", type=int, default=5, help="adversarial prefix tokens")
    a.add_argument("--steps", type=int, default=40)
    a.add_argument("--lr", type=float, default=None)
    a.add_argument("--check-every", type=int, default=10, help="judge the attacked prompt every N steps")
    a.add_argument("--seeds", type=int, default=1, help="seeds per prompt (instances = prompts × seeds)")
    a.set_defaults(func=guarded(run_attack))
