"""Train the classifier gate: cross-entropy on (noised latent of shard i's data at a random t, label i).

Noise is drawn exactly as in SD training: t ~ U{0..T-1}, x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε with
SD's scaled-linear betas. The gate sees the equivalent VE pair (x = x_t / sqrt(ᾱ_t), σ_t).
Checkpoints every ``checkpoint_every`` steps; a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import io
from .gate_model import GateConfig, GateNet, save_gate, widen

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateTrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    checkpoint_every: int = 250


def sd_alphas_cumprod(cfg: GateTrainConfig) -> torch.Tensor:
    """ᾱ_t of SD's scaled-linear schedule: betas = linspace(√β0, √β1, T)²."""
    betas = (
        torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps, dtype=torch.float64)
        ** 2
    )
    return torch.cumprod(1 - betas, dim=0).float()


def check_shard_latents(latents: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
    """Raise unless every shard has ≥ 1 finite latent of one common (C, H, W); return that shape."""
    if len(latents) < 2:
        raise ValueError(f"shard latents: a gate needs at least two shards, got {list(latents)}")
    shapes = {}
    for name, z in latents.items():
        if z.dim() != 4 or z.shape[0] == 0:
            raise ValueError(
                f"latents of shard {name!r}: expected a non-empty (B, C, H, W) batch, got {tuple(z.shape)}"
            )
        if not torch.isfinite(z).all():
            raise ValueError(f"latents of shard {name!r}: contain NaN or inf")
        shapes[name] = tuple(z.shape[1:])
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shard latents: expected one latent shape for all shards, got {shapes}")
    return next(iter(shapes.values()))


def check_contexts(
    contexts: Mapping[str, torch.Tensor] | None,
    null_context: torch.Tensor | None,
    latents: Mapping[str, torch.Tensor],
) -> list[torch.Tensor] | None:
    """Per-shard pooled prompts aligned with the latents, in shard order; None when not given."""
    if contexts is None:
        return None
    if null_context is None or null_context.dim() != 1:
        raise ValueError(
            "null_context: a prompt-reading gate needs the empty prompt's pooled context, shape (D,)"
        )
    out = []
    for name, z in latents.items():
        c = contexts.get(name)
        if c is None or c.dim() != 2 or c.shape[0] != z.shape[0] or c.shape[1] != null_context.shape[0]:
            got = None if c is None else tuple(c.shape)
            raise ValueError(
                f"contexts of shard {name!r}: expected ({z.shape[0]}, {null_context.shape[0]}), got {got}"
            )
        out.append(c.float())
    return out


def noised_batch(
    latents: list[torch.Tensor],
    alphas_cumprod: torch.Tensor,
    batch: int,
    g: torch.Generator,
    contexts: list[torch.Tensor] | None = None,
    null_context: torch.Tensor | None = None,
    p_uncond: float = 0.1,
) -> tuple[torch.Tensor, ...]:
    """Class-balanced (x, σ, label[, context]): x = x0 + σ ε (VE form of the VP noising at a uniform t).

    With per-latent ``contexts`` (pooled prompt of each image), a share p_uncond gets the empty
    prompt's context instead, so the gate also learns P(shard | x_t) for unprompted sampling.
    """
    labels = torch.randint(0, len(latents), (batch,), generator=g)
    picks = [int(torch.randint(0, latents[k].shape[0], (1,), generator=g)) for k in labels.tolist()]
    x0 = torch.stack([latents[k][j] for k, j in zip(labels.tolist(), picks)])
    t = torch.randint(0, alphas_cumprod.shape[0], (batch,), generator=g)
    sigma = ((1 - alphas_cumprod[t]) / alphas_cumprod[t]).sqrt()
    x = x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=g)
    if contexts is None:
        return x, sigma, labels
    ctx = torch.stack([contexts[k][j] for k, j in zip(labels.tolist(), picks)])  # (B, D)
    drop = torch.rand(batch, generator=g) < p_uncond
    ctx[drop] = null_context.to(ctx)
    return x, sigma, labels, ctx


def _save_checkpoint(
    path: str, net: GateNet, opt: torch.optim.Optimizer, step: int, g: torch.Generator
) -> None:
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "rng": g.get_state()}
    io.save_checkpoint(path, state)


def initial_net(names: tuple[str, ...], shape: tuple[int, int, int], family: str, context_dim: int,
                init: GateNet | None) -> GateNet:
    """A fresh gate, or ``init`` (trained on some of these shards) widened to ``names``."""
    if init is None:
        return GateNet(GateConfig(names=names, latent_shape=shape, family=family, context_dim=context_dim))
    if tuple(init.config.latent_shape) != shape:
        raise ValueError(f"init gate: trained on latents {init.config.latent_shape}, these are {shape}")
    if init.config.context_dim != context_dim:
        raise ValueError(
            f"init gate: reads prompts of width {init.config.context_dim}, these have {context_dim}"
        )
    return widen(init, names)


def _resume(path: str, net: GateNet, opt: torch.optim.Optimizer, g: torch.Generator) -> int:
    """Load a training checkpoint if one exists; the step to start from."""
    if not os.path.exists(path):
        return 0
    state = io.load_checkpoint(path)
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    g.set_state(state["rng"])
    return int(state["step"])


def train_gate(
    latents: Mapping[str, torch.Tensor],
    out_path: str,
    cfg: GateTrainConfig = GateTrainConfig(),
    family: str = "sd1",
    checkpoint_path: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    init: GateNet | None = None,
    contexts: Mapping[str, torch.Tensor] | None = None,
    null_context: torch.Tensor | None = None,
) -> GateNet:
    """Train a gate over ``latents`` {shard name: scaled latents (B, C, H, W)} and save it to out_path.

    With ``init`` (a gate trained on some of these shards) training starts from it, widened to
    the new shard list: how a composition learns a new source without starting over.
    With ``contexts`` {shard: (B, D) pooled prompt per latent} and ``null_context`` (D,) the gate
    reads the prompt too: it learns P(shard | x_t, prompt), so "… in bold style" picks the bold shard.
    """
    shape = check_shard_latents(latents)
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(f"gate output {out_path!r}: already exists; choose another name or overwrite")
    names = tuple(latents)
    data = [latents[n].float() for n in names]
    ctx = check_contexts(contexts, null_context, latents)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = initial_net(names, shape, family, 0 if ctx is None else ctx[0].shape[1], init)
    if ctx is not None:
        net.null_context.copy_(null_context)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    start = _resume(checkpoint_path, net, opt, g) if checkpoint_path else 0
    if start:
        logger.info("resuming gate training at step %d of %d", start, cfg.steps)
    acp = sd_alphas_cumprod(cfg)
    net.train()
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train shard gate"):
        if ctx is None:
            x, sigma, labels = noised_batch(data, acp, cfg.batch_size, g)
            logits = net(x, sigma)
        else:
            x, sigma, labels, c = noised_batch(data, acp, cfg.batch_size, g, ctx, null_context)
            logits = net(x, sigma, c)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, cfg.steps)
        if checkpoint_path and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _save_checkpoint(checkpoint_path, net, opt, step + 1, g)
    net.eval()
    save_gate(out_path, net, overwrite=overwrite, extra={"train_steps": str(cfg.steps)})
    if checkpoint_path and os.path.exists(checkpoint_path):
        os.unlink(checkpoint_path)
    return net


@torch.no_grad()
def gate_accuracy(net: GateNet, latents: Mapping[str, torch.Tensor], sigma: float) -> float:
    """Share of held-out latents, noised to σ, that the gate assigns to their own shard."""
    hits, total = 0, 0
    g = torch.Generator().manual_seed(1234)
    for k, name in enumerate(net.config.names):
        z = latents[name].float()
        x = z + sigma * torch.randn(z.shape, generator=g)
        pred = net(x, torch.full((z.shape[0],), sigma)).argmax(1)
        hits += int((pred == k).sum())
        total += z.shape[0]
    return hits / total
