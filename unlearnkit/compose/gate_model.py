"""The CDM classifier gate: a small time-conditioned classifier on noisy latents (CDM Prop. 3.1).

It reads what a VP-trained UNet sees — x_in = x / sqrt(σ² + 1) and c_noise = ln σ — and returns
logits over shards; the gate's weights are softmax(logits + log λ), forgotten shards masked out.
Saved as safetensors with metadata (shard names, latent shape, model family).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import io
from .gates import Gate, log_priors

FORMAT = "unlearnkit.shard_gate/1"


@dataclass(frozen=True)
class GateConfig:
    names: tuple[str, ...]
    latent_shape: tuple[int, int, int]  # (C, H, W) the gate was trained on
    family: str = "sd1"  # model family of the shards, e.g. "sd1", "sd2", "tinyworld"
    width: int = 32
    time_dim: int = 64
    context_dim: int = 0  # > 0: also reads the prompt (mean of the text encoder's hidden states)

    def check(self) -> None:
        if len(self.names) < 1 or len(set(self.names)) != len(self.names):
            raise ValueError(f"gate names: expected unique shard names, got {list(self.names)}")
        if len(self.latent_shape) != 3 or min(self.latent_shape) < 1:
            raise ValueError(f"gate latent_shape: expected (C, H, W), got {self.latent_shape}")


def noise_embedding(log_sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of c_noise = ln σ: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=log_sigma.device) / half)
    angles = log_sigma[:, None].float() * 4.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class GateNet(nn.Module):
    """conv → FiLM(σ) → conv(stride 2) → FiLM(σ) → global pool → linear: (B, C, H, W), σ -> (B, N)."""

    def __init__(self, config: GateConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        c, w, t = config.latent_shape[0], config.width, config.time_dim
        self.time = nn.Sequential(nn.Linear(t, 2 * w), nn.SiLU(), nn.Linear(2 * w, 4 * w))
        self.conv1 = nn.Conv2d(c, w, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, w)
        self.conv2 = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(8, w)
        self.head = nn.Linear(w, len(config.names))
        if config.context_dim > 0:
            self.context = nn.Sequential(
                nn.Linear(config.context_dim, 2 * w), nn.SiLU(), nn.Linear(2 * w, 4 * w)
            )
            self.register_buffer("null_context", torch.zeros(config.context_dim))  # the empty prompt, pooled

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, N); ``context`` (B, D) is the pooled prompt, required iff the gate reads prompts."""
        x_in = x / torch.sqrt(sigma**2 + 1).view(-1, 1, 1, 1)  # what the UNet sees
        film = self.time(noise_embedding(sigma.clamp_min(1e-5).log(), self.config.time_dim))  # (B, 4w)
        if self.config.context_dim > 0:
            if context is None or context.shape != (x.shape[0], self.config.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ValueError(
                    f"gate context: this gate reads prompts; expected ({x.shape[0]}, "
                    f"{self.config.context_dim}), got {got}"
                )
            film = film + self.context(context.to(film))
        scale1, shift1, scale2, shift2 = film.chunk(4, 1)
        h = nn.functional.silu(
            self.norm1(self.conv1(x_in)) * (1 + scale1[..., None, None]) + shift1[..., None, None]
        )
        h = nn.functional.silu(
            self.norm2(self.conv2(h)) * (1 + scale2[..., None, None]) + shift2[..., None, None]
        )
        return self.head(h.mean(dim=(2, 3)))  # (B, N)


def widen(net: GateNet, names: Sequence[str]) -> GateNet:
    """A gate over ``names`` that keeps net's trunk and its logits for shards it knew (continual learning).

    New shards start with a zero logit row: before any training they get the prior's share at
    every x, so adding a shard never disturbs the known shards' relative weights.
    """
    names = tuple(names)
    config = GateConfig(**{**asdict(net.config), "names": names})
    wide = GateNet(config)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    wide.load_state_dict(state, strict=False)
    with torch.no_grad():
        wide.head.weight.zero_()
        wide.head.bias.zero_()
        for i, name in enumerate(names):
            if name in net.config.names:
                j = net.config.names.index(name)
                wide.head.weight[i] = net.head.weight[j]
                wide.head.bias[i] = net.head.bias[j]
    return wide


def save_gate(path: str, net: GateNet, overwrite: bool = False, extra: dict[str, str] | None = None) -> None:
    meta = {"format": FORMAT, "config": json.dumps(asdict(net.config)), **(extra or {})}
    io.save_safetensors(path, net.state_dict(), meta, overwrite=overwrite)


def load_gate(path: str) -> GateNet:
    """Load a gate file, checking it is one and that its tensors fit its own config."""
    tensors, meta = io.load_state_dict(path)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"gate file {path!r}: not an UnlearnKit shard gate (format {meta.get('format')!r}, expected "
            f"{FORMAT!r})"
        )
    raw = json.loads(meta["config"])
    config = GateConfig(**{**raw, "names": tuple(raw["names"]), "latent_shape": tuple(raw["latent_shape"])})
    io.check_finite(tensors, f"gate file {path!r}")
    net = GateNet(config)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"gate file {path!r}: tensors do not match its config: {exc}") from exc
    return net.eval()


class ClassifierGate(Gate):
    """w = softmax(logits(x, σ) + log λ) over the composed shards; gate outputs of absent shards are
    masked."""

    def __init__(self, net: GateNet, names: Sequence[str], priors: Sequence[float]) -> None:
        unknown = [n for n in names if n not in net.config.names]
        if unknown:
            raise ValueError(
                f"gate: trained for shards {list(net.config.names)}, but the composition has {unknown}; "
                "train the gate with these shards (or extend it with the new one)"
            )
        self.names = list(names)
        self.net = net
        self.index = torch.tensor(
            [net.config.names.index(n) for n in names]
        )  # composition order -> gate logit
        self.log_prior = log_priors(priors, names)

    def check_latent(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.net.config.latent_shape):
            raise ValueError(
                f"gate: trained on latents of shape {tuple(self.net.config.latent_shape)}, "
                f"got {tuple(x.shape[1:])}; train a gate for this resolution/model"
            )

    @property
    def reads_prompt(self) -> bool:
        return self.net.config.context_dim > 0

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weights (B, N); context: the prompt's text-encoder states (B, T, D) or pooled (B, D)."""
        self.check_latent(x)
        p = next(self.net.parameters())
        pooled = None
        if self.reads_prompt:  # no prompt given: the empty prompt, as in unconditional sampling
            pooled = self.net.null_context.expand(x.shape[0], -1) if context is None else context
            pooled = (pooled.mean(dim=1) if pooled.dim() == 3 else pooled).to(p)
        logits = self.net(x.to(p), sigma.to(p), pooled).float()[
            :, self.index.to(x.device)
        ]  # (B, N) composition order
        return torch.softmax(logits + self.log_prior.to(logits.device), dim=1)
