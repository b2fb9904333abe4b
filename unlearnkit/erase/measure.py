"""Attack success rate of an erased encoder, judged by any concept detector.

An attack *instance* is (prompt naming the concept, seed). It succeeds when the erased model's image
for it — first the plain prompt (pre-attack), then the attacked prompt — shows the erased concept
according to the detector (UnlearnDiffAtk counts both). ASR = successful instances / instances.
A detector is any callable images (B, 3, H, W) in [-1, 1] -> bool (B,), e.g. a classifier judge.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .denoise import Denoiser
from .objectives import OBJECTIVES, denoise_concept, match_original
from .prompt_attack import PromptAttackConfig, prompt_attack
from .prompts import decode, encode_ids, encode_with_prefix, tokenize, with_prefix_tokens
from .soft_attack import SoftAttackConfig, soft_prompt_attack

logger = logging.getLogger(__name__)

METHODS = ("prompt", "soft")
Detector = Callable[[torch.Tensor], torch.Tensor]  # images (B, 3, H, W) in [-1, 1] -> bool (B,)


@dataclass(frozen=True)
class AttackSpec:
    method: str = "prompt"  # "prompt": discrete prefix tokens (UnlearnDiffAtk); "soft": continuous δ
    objective: str = "denoise_concept"  # see objectives.py
    tokens: int = 5
    steps: int = 40
    lr: float | None = None  # default: 0.01 (prompt), 1e-3 (soft)
    check_every: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"attack method: expected one of {METHODS}, got {self.method!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"attack objective: expected one of {OBJECTIVES}, got {self.objective!r}")


@dataclass
class Instance:
    prompt: str
    seed: int
    pre_success: bool | None  # None: no judge
    success: bool | None
    attacked_prompt: str | None = None  # discrete attacks only
    loss_start: float = float("nan")
    loss_end: float = float("nan")


@dataclass
class AttackReport:
    instances: list[Instance] = field(default_factory=list)

    @property
    def asr(self) -> float | None:
        judged = [i.success for i in self.instances if i.success is not None]
        return sum(judged) / len(judged) if judged else None

    @property
    def pre_attack_rate(self) -> float | None:
        judged = [i.pre_success for i in self.instances if i.pre_success is not None]
        return sum(judged) / len(judged) if judged else None


@torch.no_grad()
def generate_latents(
    encoder, denoiser: Denoiser, ids: torch.Tensor, seeds: Sequence[int], delta: torch.Tensor | None = None,
    uncond_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final DDIM latents (B, C, H, W) for prompt ids (B, L), one seed per row, δ optionally prepended."""
    x = torch.cat([denoiser.noise(1, torch.Generator().manual_seed(int(s))) for s in seeds])
    cond = encode_with_prefix(encoder, ids, delta)
    uncond = encode_ids(encoder, uncond_ids) if uncond_ids is not None else torch.zeros_like(cond[:1])
    return denoiser.sample_until(x, cond, uncond, len(denoiser.timesteps))


@torch.no_grad()
def decode_images(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> images (B, 3, H, W) in [-1, 1]."""
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)


class Scorer:
    """Generates with an encoder and asks the detector whether the concept appeared (no detector: never
    judged)."""

    def __init__(self, denoiser: Denoiser, vae, tokenizer, detector: Detector | None) -> None:
        self.denoiser, self.vae, self.tokenizer, self.detector = denoiser, vae, tokenizer, detector
        self.uncond_ids = tokenize(tokenizer, [""])

    def images(
        self, encoder, ids: torch.Tensor, seeds: Sequence[int], delta: torch.Tensor | None = None
    ) -> torch.Tensor:
        return decode_images(
            self.vae, generate_latents(encoder, self.denoiser, ids, seeds, delta, self.uncond_ids)
        )

    def hit(self, encoder, ids: torch.Tensor, seed: int, delta: torch.Tensor | None = None) -> bool | None:
        if self.detector is None:
            return None
        return bool(self.detector(self.images(encoder, ids, [seed], delta))[0])


def attack_instance(
    encoder, original, scorer: Scorer, prompt: str, seed: int, spec: AttackSpec,
    source: Denoiser | None = None,
) -> Instance:
    """Pre-attack check, then one attack on (prompt, seed) against ``encoder``; ``original`` makes the
    target.

    ``source``: the model whose image of the prompt the attack aims at (default: the attacked model's own
    denoiser), e.g. the original model when the attacked one is a composition with a shard dropped.
    """
    den = scorer.denoiser
    ids = tokenize(scorer.tokenizer, [prompt])
    inst = Instance(prompt, seed, pre_success=scorer.hit(encoder, ids, seed), success=None)
    if inst.pre_success:
        inst.success = True
        return inst
    gen = torch.Generator().manual_seed(seed)
    if spec.objective == "denoise_concept":
        x0 = generate_latents(original, source or den, ids, [seed], uncond_ids=scorer.uncond_ids)
        draw = denoise_concept(den, x0, ids)
    else:
        from .denoise import TrajectoryBank

        with torch.no_grad():
            cond_o = encode_ids(original, ids)
            bank = TrajectoryBank(den, cond_o, encode_ids(original, scorer.uncond_ids), 2, gen)
        draw = match_original(den, bank, ids, cond_o)
    if spec.method == "prompt":
        cfg = PromptAttackConfig(
            tokens=spec.tokens, steps=spec.steps, lr=spec.lr or 0.01, check_every=spec.check_every
        )
        judge = None if scorer.detector is None else (lambda adv: bool(scorer.hit(encoder, adv, seed)))
        res = prompt_attack(encoder, den, draw, scorer.tokenizer, cfg, gen, judge=judge, base_ids=ids)
        inst.success, inst.loss_start, inst.loss_end = res.success, res.eval_loss_start, res.eval_loss
        inst.attacked_prompt = decode(scorer.tokenizer, with_prefix_tokens(ids, res.prefix))[0]
    else:
        cfg = SoftAttackConfig(tokens=spec.tokens, steps=spec.steps, lr=spec.lr or 1e-3, init="random")
        res = soft_prompt_attack(encoder, den, draw, cfg, gen)
        inst.success = scorer.hit(encoder, ids, seed, res.delta)
        inst.loss_start, inst.loss_end = res.losses[0], res.losses[-1]
    return inst


def attack_report(encoder, original, scorer: Scorer, prompts: Sequence[str], seeds: Sequence[int],
                  spec: AttackSpec, source: Denoiser | None = None) -> AttackReport:
    """Attack every (prompt, seed) instance (``source``: see attack_instance)."""
    report = AttackReport()
    for prompt in prompts:
        for seed in seeds:
            inst = attack_instance(encoder, original, scorer, prompt, int(seed), spec, source)
            report.instances.append(inst)
            logger.debug("attack %r seed %d: %s", prompt, seed, report.instances[-1])
    logger.info("attack %s/%s: ASR %s (pre-attack %s) over %d instances", spec.method, spec.objective,
                report.asr, report.pre_attack_rate, len(report.instances))
    return report
