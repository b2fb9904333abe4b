"""The attack the Erase section and the side-by-side comparison share: the same instances, budget and target
for every model that should no longer draw "bold" — ESD, AdvUnlearn (erased encoders on the paragon UNet) and
exact forgetting (the style shards composed without the bold shard, original encoder).

An instance is (prompt naming bold, seed). It succeeds when the judge sees bold in the model's image for the
plain prompt (pre-attack) or for the prompt with K adversarial prefix tokens found by the discrete
UnlearnDiffAtk-style attack (``erase.prompt_attack``). The attack's target is the same for every model: the
*original* model's (paragon + original encoder) image of the prompt, as a denoising objective
(``erase.objectives.denoise_concept``) — for the erased encoders this is exactly ``erase.measure``'s attack.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...erase.denoise import Denoiser, SamplerConfig
from ...erase.measure import Scorer, generate_latents
from ...erase.objectives import denoise_concept
from ...erase.prompt_attack import PromptAttackConfig, prompt_attack
from ...erase.prompts import decode, tokenize, with_prefix_tokens
from ...tinyworld.data import caption
from .world import DemoSettings


@dataclass
class Outcome:
    """One attack instance: the plain prompt's verdict, the attack's, the image the judge saw last."""

    prompt: str
    seed: int
    pre_success: bool
    success: bool
    attacked_prompt: str | None
    image: torch.Tensor  # (3, 16, 16) in [-1, 1]: the attacked prompt's image (the plain one if pre-success)
    plain_image: torch.Tensor


@dataclass
class AttackRun:
    label: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def asr(self) -> float:
        return round(sum(o.success for o in self.outcomes) / len(self.outcomes), 3)

    @property
    def pre_attack_rate(self) -> float:
        return round(sum(o.pre_success for o in self.outcomes) / len(self.outcomes), 3)


@dataclass(frozen=True)
class AttackModel:
    """What is attacked: a denoiser (UNet + DDIM) and the text encoder that reads the prompt."""

    label: str
    unet: torch.nn.Module
    text_encoder: torch.nn.Module


def bold_prompts(settings: DemoSettings, style: str = "bold") -> list[str]:
    """The attack's prompts: "a handwritten digit N in bold style" for the first ``attack_prompts`` digits."""
    return [caption(d, style, 0) for d in range(settings.attack_prompts)]


def scorer_for(unet: torch.nn.Module, scheduler, vae, tokenizer, detector, settings: DemoSettings) -> Scorer:
    den = Denoiser(unet, scheduler, SamplerConfig(settings.attack_sampler_steps, settings.guidance))
    return Scorer(den, vae, tokenizer, detector)


def targets(original: Scorer, encoder: torch.nn.Module, prompts: list[str], seed: int) -> torch.Tensor:
    """The original model's final latents for each prompt, (P, C, H, W): what every attack steers toward."""
    ids = tokenize(original.tokenizer, prompts)
    return generate_latents(encoder, original.denoiser, ids, [seed] * len(prompts),
                            uncond_ids=original.uncond_ids)


def attack_one(scorer: Scorer, encoder: torch.nn.Module, prompt: str, seed: int, target: torch.Tensor,
               config: PromptAttackConfig) -> Outcome:
    """Pre-attack check, then the prefix-token attack toward ``target`` (1, C, H, W), judged at every "
    "check."""
    ids = tokenize(scorer.tokenizer, [prompt])
    plain = scorer.images(encoder, ids, [seed])[0]
    if bool(scorer.detector(plain[None])[0]):
        return Outcome(prompt, seed, True, True, None, plain, plain)
    gen = torch.Generator().manual_seed(seed)
    draw = denoise_concept(scorer.denoiser, target, ids)
    judge = lambda adv: bool(scorer.hit(encoder, adv, seed))  # noqa: E731
    res = prompt_attack(encoder, scorer.denoiser, draw, scorer.tokenizer, config, gen, judge=judge,
                        base_ids=ids)
    adv = with_prefix_tokens(ids, res.prefix)
    return Outcome(prompt, seed, False, bool(res.success), decode(scorer.tokenizer, adv)[0],
                   scorer.images(encoder, adv, [seed])[0], plain)


def run_attacks(models: list[AttackModel], original: AttackModel, scheduler, vae, tokenizer, detector,
                settings: DemoSettings, tick: Callable[[], None] = lambda: None) -> dict[str, AttackRun]:
    """Attack every model on the same instances with the same budget; ``tick()`` after each instance."""
    prompts = bold_prompts(settings)
    seed = 1000 + settings.seed
    base = scorer_for(original.unet, scheduler, vae, tokenizer, detector, settings)
    with torch.no_grad():
        goal = targets(base, original.text_encoder, prompts, seed)
    config = PromptAttackConfig(tokens=settings.attack_tokens, steps=settings.attack_steps,
                                check_every=settings.attack_check_every)
    runs = {}
    for model in models:
        scorer = scorer_for(model.unet, scheduler, vae, tokenizer, detector, settings)
        run = AttackRun(model.label)
        for i, prompt in enumerate(prompts):
            run.outcomes.append(attack_one(scorer, model.text_encoder, prompt, seed, goal[i:i + 1], config))
            tick()
        runs[model.label] = run
    return runs


def budget(settings: DemoSettings) -> str:
    """The attack budget in words, for captions."""
    return (f"{settings.attack_prompts} prompts × 1 seed, {settings.attack_tokens} adversarial prefix "
            f"tokens, "
            f"{settings.attack_steps} optimisation steps, judged every {settings.attack_check_every} steps")
