"""Soft-prompt attack: K continuous token embeddings δ prepended to the prompt (AdvUnlearn's inner attack).

min_δ ‖ε_θ(x_t, [δ; c]) − target‖² over K steps: "pgd" takes Adam steps (lr 1e-3 in AdvUnlearn),
"fast_at" signed-gradient steps δ ← δ − lr·sign(∇). Gradients are taken for δ alone
(``torch.autograd.grad``), so nothing accumulates in the encoder or across steps.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .denoise import Denoiser
from .esd import match_loss
from .objectives import AttackBatch, Draw
from .prompts import encode_with_prefix, token_embedding

logger = logging.getLogger(__name__)

METHODS = ("pgd", "fast_at")
INITS = ("latest", "random")
GradHook = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SoftAttackConfig:
    tokens: int = 1  # K prepended embeddings (AdvUnlearn: 1)
    steps: int = 30  # attack steps per call
    lr: float = 1e-3
    method: str = "pgd"
    init: str = "latest"  # "latest": warm-start from the previous δ; "random": fresh random vocabulary tokens
    batch: int = 1  # x_t per attack step

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"attack method: expected one of {METHODS}, got {self.method!r}")
        if self.init not in INITS:
            raise ValueError(f"attack init: expected one of {INITS}, got {self.init!r}")
        for name in ("tokens", "steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"attack {name}: expected >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"attack lr: expected > 0, got {self.lr!r}")


@dataclass
class SoftAttackResult:
    delta: torch.Tensor  # (1, K, W)
    losses: list[float] = field(default_factory=list)  # loss before each step


def random_tokens(encoder: torch.nn.Module, k: int, gen: torch.Generator) -> torch.Tensor:
    """Embeddings of k random vocabulary tokens: (1, k, W) (AdvUnlearn's initialisation)."""
    table = token_embedding(encoder).weight
    ids = torch.randint(0, table.shape[0], (k,), generator=gen).to(table.device)
    return table[ids].detach().clone()[None]


def attack_loss(
    encoder: torch.nn.Module, denoiser: Denoiser, batch: AttackBatch, delta: torch.Tensor | None
) -> torch.Tensor:
    """‖ε_θ(x_t, [δ; c]) − target‖² for one batch."""
    cond = encode_with_prefix(encoder, batch.ids, delta)
    return match_loss(denoiser.out(batch.x, batch.t, cond), batch.target)


def soft_prompt_attack(encoder: torch.nn.Module, denoiser: Denoiser, draw: Draw, config: SoftAttackConfig,
                       gen: torch.Generator, delta: torch.Tensor | None = None,
                       grad_hook: GradHook | None = None) -> SoftAttackResult:
    """Optimise δ (1, K, W) against the encoder; ``delta`` warm-starts it when config.init == "latest".

    ``grad_hook`` maps δ's gradient before each step (e.g. the mean over processes).
    """
    if delta is None or config.init == "random":
        delta = random_tokens(encoder, config.tokens, gen)
    delta = delta.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=config.lr) if config.method == "pgd" else None
    was_training = encoder.training
    encoder.eval()
    result = SoftAttackResult(delta)
    try:
        for _ in range(config.steps):
            loss = attack_loss(encoder, denoiser, draw(gen), delta)
            (grad,) = torch.autograd.grad(loss, [delta])
            if grad_hook is not None:
                grad = grad_hook(grad)
            result.losses.append(float(loss.detach()))
            if opt is not None:
                delta.grad = grad
                opt.step()
            else:
                with torch.no_grad():
                    delta -= config.lr * grad.sign()
    finally:
        encoder.train(was_training)
    result.delta = delta.detach()
    return result
