"""UnlearnDiffAtk-style discrete attack: K real vocabulary tokens prepended to the concept prompt.

Projected-gradient search in embedding space (as PEZ, Wen et al. 2023): keep continuous
embeddings P (1, K, W); each step projects them to the nearest vocabulary tokens (cosine),
evaluates the loss with the *projected* tokens and moves P by the straight-through gradient.
The prompt returned is the best projection on a fixed evaluation set (never worse than the start),
or the first one the judge accepts when a judge is given (checked every ``check_every`` steps).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .denoise import Denoiser
from .objectives import AttackBatch, Draw
from .prompts import special_ids, token_embedding, with_prefix_tokens
from .soft_attack import attack_loss

logger = logging.getLogger(__name__)

Judge = Callable[[torch.Tensor], bool]  # attacked prompt ids (1, L) -> concept generated?


@dataclass(frozen=True)
class PromptAttackConfig:
    tokens: int = 5  # K prefix tokens (UnlearnDiffAtk: 5)
    steps: int = 40
    lr: float = 0.01  # Adam lr on the continuous embeddings
    batch: int = 1  # draws per step
    eval_draws: int = 4  # fixed draws that rank the projected prompts
    check_every: int = 10  # judge / re-rank every N steps (and at the end)

    def __post_init__(self) -> None:
        for name in ("tokens", "steps", "batch", "eval_draws", "check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"prompt attack {name}: expected >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"prompt attack lr: expected > 0, got {self.lr!r}")


@dataclass
class PromptAttackResult:
    prefix: torch.Tensor  # (K,) token ids
    eval_loss_start: float
    eval_loss: float  # of the returned prefix
    success: bool | None = None  # judge verdict of the returned prefix (None: no judge)
    steps_run: int = 0
    losses: list[float] = field(default_factory=list)


def nearest_tokens(embeds: torch.Tensor, table: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    """argmax_v cos(embeds_k, table_v) over allowed tokens: (K, W) -> (K,)."""
    sims = F.normalize(embeds, dim=-1) @ F.normalize(table, dim=-1).T  # (K, V)
    sims[:, banned] = -float("inf")
    return sims.argmax(dim=-1)


@torch.no_grad()
def eval_loss(encoder, denoiser: Denoiser, batches: list[AttackBatch], prefix: torch.Tensor) -> float:
    """Mean attack loss of a discrete prefix (K,) over fixed batches."""
    table = token_embedding(encoder).weight
    delta = table[prefix.to(table.device)][None]
    return sum(float(attack_loss(encoder, denoiser, b, delta)) for b in batches) / len(batches)


def prompt_attack(
    encoder: torch.nn.Module, denoiser: Denoiser, draw: Draw, tokenizer, config: PromptAttackConfig,
    gen: torch.Generator, judge: Judge | None = None, base_ids: torch.Tensor | None = None,
) -> PromptAttackResult:
    """Search K prefix tokens minimising the attack loss; ``base_ids`` (1, L) is the prompt the judge sees."""
    table = token_embedding(encoder).weight.detach()
    banned = torch.tensor(sorted(special_ids(tokenizer)), device=table.device)
    evals = [draw(gen) for _ in range(config.eval_draws)]
    start = torch.randint(0, table.shape[0], (config.tokens,), generator=gen).to(table.device)
    start = nearest_tokens(table[start], table, banned)
    best, best_loss = start, eval_loss(encoder, denoiser, evals, start)
    result = PromptAttackResult(best, best_loss, best_loss)
    embeds = table[start].clone().requires_grad_(True)  # (K, W)
    opt = torch.optim.Adam([embeds], lr=config.lr)
    was_training = encoder.training
    encoder.eval()
    try:
        for step in range(1, config.steps + 1):
            projected = table[nearest_tokens(embeds.detach(), table, banned)]
            straight = embeds + (projected - embeds).detach()  # forward: tokens; backward: to embeds
            loss = attack_loss(encoder, denoiser, draw(gen), straight[None])
            (embeds.grad,) = torch.autograd.grad(loss, [embeds])
            opt.step()
            result.losses.append(float(loss.detach()))
            if step % config.check_every and step != config.steps:
                continue
            candidate = nearest_tokens(embeds.detach(), table, banned)
            cand_loss = eval_loss(encoder, denoiser, evals, candidate)
            if cand_loss < best_loss:
                best, best_loss = candidate, cand_loss
            result.steps_run = step
            if judge is not None and base_ids is not None and judge(with_prefix_tokens(base_ids, candidate)):
                best, best_loss, result.success = candidate, cand_loss, True
                break
    finally:
        encoder.train(was_training)
    result.prefix, result.eval_loss = best.cpu(), best_loss
    if judge is not None and result.success is None:
        result.success = bool(judge(with_prefix_tokens(base_ids, best))) if base_ids is not None else None
    logger.debug(
        "prompt attack: eval loss %.4f -> %.4f in %d steps",
        result.eval_loss_start,
        best_loss,
        result.steps_run,
    )
    return result
