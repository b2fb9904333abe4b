"""One composed model evaluation: gate → prune → evaluate active shards → convex mix of x0.

Host-free: the host supplies ``evaluate(i, x, sigma) -> x0`` for shard i over the full batch
(cond and uncond chunks of a CFG batch stacked along dim 0, all chunks holding the same
samples). Weights come from the first chunk and are repeated, so cond and uncond agree.

Routing (ours, measured in bench/compose.py):
- ``route="batch"``: a shard is skipped when its weight is below ε for every sample.
- ``route="sample"``: each shard runs only on the rows where its weight reaches ε; the host's
  evaluate then takes a fourth argument, the row indices (R',) it is given x and sigma for.
- ``mc_sigma``: above this noise level each sample uses ONE shard drawn from its weights, an
  unbiased estimate of the mix at one model's cost (early steps, where shards still agree).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .density import DensityGate
from .gates import Gate
from .mixture import mix_x0

ShardEval = Callable[..., torch.Tensor]


def prune(weights: torch.Tensor, eps: float) -> list[int]:
    """Shards whose weight reaches eps for at least one sample; the rest need not be evaluated."""
    if eps <= 0:
        return list(range(weights.shape[1]))
    keep = (weights >= eps).any(dim=0)
    keep[weights.max(dim=0).values.argmax()] = True  # never prune everything
    return keep.nonzero().flatten().tolist()


def renormalise(weights: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
    """Weights restricted to the active shards, rows summing to 1 again: (B, len(active))."""
    w = weights[:, list(active)]
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


def sample_mask(weights: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, N) bool: which (sample, shard) pairs to evaluate — weight ≥ ε, and always each row's argmax."""
    mask = weights >= eps if eps > 0 else torch.ones_like(weights, dtype=torch.bool)
    mask[torch.arange(weights.shape[0]), weights.argmax(dim=1)] = True
    return mask


def draw_one_hot(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B, N) one-hot: one shard per sample drawn from its weights (an unbiased estimate of the mix)."""
    idx = torch.multinomial(weights.cpu().double(), 1, generator=generator).flatten()
    return torch.nn.functional.one_hot(idx, weights.shape[1]).to(weights)


@dataclass
class StepRecord:
    sigma: float
    weights: torch.Tensor  # (B, N) gate weights before pruning
    active: list[int]
    evaluated: int = 0  # sample-evaluations of shards in this call (cost: one model = B)


@dataclass
class Composer:
    """Callable x0 = Σ_i w_i(x, σ) x0_i(x, σ) over ``names`` with a gate and optional pruning."""

    names: list[str]
    gate: Gate
    prune_eps: float = 0.0
    route: str = "batch"
    mc_sigma: float = math.inf
    generator: torch.Generator | None = None
    history: list[StepRecord] = field(default_factory=list)
    record: bool = True

    def __post_init__(self) -> None:
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if self.route not in ("batch", "sample"):
            raise ValueError(f"route: expected 'batch' or 'sample', got {self.route!r}")
        if isinstance(self.gate, DensityGate) and math.isfinite(self.mc_sigma):
            raise ValueError(
                "mc_sigma: the density gate needs every shard's score; use it with the static or classifier "
                "gate"
            )

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        evaluate: ShardEval,
        chunks: int = 1,
        score_chunk: int | None = 0,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x0 mix for a batch of ``chunks`` stacked copies.

        ``score_chunk``: the cond chunk (None if the call holds none) — it feeds the density gate and
        gives a prompt-reading gate its prompt; ``context`` (R, T, D): the rows' text-encoder states.
        """
        rows = x.shape[0]
        if chunks < 1 or rows % chunks:
            raise ValueError(f"chunks: batch of {rows} rows cannot be split into {chunks} equal chunks")
        b = rows // chunks
        weights = self._weights(x[:b], sigma[:b], context, score_chunk, b)  # (B, N)
        if weights.shape != (b, len(self.names)):
            raise ValueError(
                f"gate: expected weights of shape ({b}, {len(self.names)}), got {tuple(weights.shape)}"
            )
        if self.route == "sample" or float(sigma[0]) > self.mc_sigma:
            return self._per_sample(x, sigma, weights, evaluate, chunks, score_chunk)
        active = prune(weights, self.prune_eps)
        x0s = [evaluate(i, x, sigma) for i in active]  # each (R, ...)
        if isinstance(self.gate, DensityGate) and score_chunk is not None:
            mask = torch.zeros_like(weights, dtype=torch.bool)
            mask[:, active] = True
            self._observe(x, sigma, x0s, active, mask, evaluate, chunks, score_chunk)
        self._record(sigma, weights, active, len(active) * b)
        w = renormalise(weights, active).repeat(chunks, 1)  # (R, A)
        return mix_x0(x0s, w.to(x.device), [self.names[i] for i in active])

    def _weights(self, x, sigma, context, score_chunk, b) -> torch.Tensor:
        """Gate weights for the B samples; a prompt-reading gate sees the cond rows' prompt, and a
        call without cond rows reuses the weights computed for the same x (cond and uncond agree)."""
        if not getattr(self.gate, "reads_prompt", False):
            return self.gate(x, sigma).float()
        if score_chunk is None or context is None:
            cached = self._cache
            if (
                cached is not None
                and cached[0].shape == x.shape
                and torch.equal(cached[0], x)
                and torch.equal(cached[1], sigma)
            ):
                return cached[2]
            return self.gate(x, sigma).float()
        weights = self.gate(x, sigma, context[score_chunk * b : (score_chunk + 1) * b]).float()
        self._cache = (x.detach().clone(), sigma.detach().clone(), weights)
        return weights

    def _per_sample(self, x, sigma, weights, evaluate, chunks, score_chunk) -> torch.Tensor:
        b = weights.shape[0]
        if float(sigma[0]) > self.mc_sigma:
            mask = draw_one_hot(weights, self.generator).bool()
        else:
            mask = sample_mask(weights, self.prune_eps)
        w = torch.where(mask, weights, torch.zeros_like(weights))
        w = w / w.sum(dim=1, keepdim=True)  # (B, N)
        out = torch.zeros_like(x)
        active = [i for i in range(len(self.names)) if mask[:, i].any()]
        x0s = []
        for i in active:
            samples = mask[:, i].nonzero().flatten()  # (b_i,)
            idx = torch.cat([samples + k * b for k in range(chunks)]).to(x.device)  # rows in every chunk
            x0 = evaluate(i, x[idx], sigma[idx], idx)
            if not torch.isfinite(x0).all():
                raise ValueError(
                    f"prediction of shard {self.names[i]!r}: contains NaN or inf; that shard's weights are "
                    "broken"
                )
            wi = w[samples, i].repeat(chunks).to(x0).view(-1, *([1] * (x.dim() - 1)))
            out.index_add_(0, idx, wi * x0)
            full = torch.zeros_like(x)
            full[idx] = x0
            x0s.append(full)
        if isinstance(self.gate, DensityGate) and score_chunk is not None:
            self._observe(x, sigma, x0s, active, mask, evaluate, chunks, score_chunk)
        self._record(sigma, weights, active, int(mask.sum()))
        return out

    def _observe(self, x, sigma, x0s, active, mask, evaluate, chunks, score_chunk) -> None:
        b = mask.shape[0]
        rows = slice(score_chunk * b, (score_chunk + 1) * b)
        full = torch.zeros(len(self.names), b, *x.shape[1:], dtype=x.dtype, device=x.device)
        for k, i in enumerate(active):
            full[i] = x0s[k][rows]
        self.gate.observe(x[rows], sigma[rows], full, mask)
        if self.gate.ode:
            v, xp = self.gate.probe(x[rows])
            xp_all = xp.repeat(chunks, *[1] * (x.dim() - 1))
            probe = torch.zeros_like(full)
            for i in active:
                probe[i] = evaluate(i, xp_all, sigma)[rows]
            self.gate.observe_probe(x[rows], sigma[rows], v, full, probe)

    def _record(self, sigma, weights, active, evaluated) -> None:
        if self.record:
            self.history.append(StepRecord(float(sigma[0]), weights.detach().cpu(), list(active), evaluated))
