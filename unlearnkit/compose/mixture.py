"""Mixture of shard predictions in x0 space (CDM eq. 3 with convex per-sample weights).

x0 is affine in eps and in v, so the same convex combination of the shards' x0 is the
combination of their eps or v: one mixture serves eps- and v-prediction models alike.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

WEIGHT_SUM_TOL = 1e-4


def normalise_priors(priors: Sequence[float], names: Sequence[str] | None = None) -> torch.Tensor:
    """λ / Σλ: slider values as a prior over shards (the paper's naive-averaging weights)."""
    names = list(names) if names is not None else [f"#{i}" for i in range(len(priors))]
    if len(priors) == 0:
        raise ValueError("priors: expected at least one shard weight, got none")
    for name, value in zip(names, priors):
        if not math.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"weight of shard {name!r}: expected a finite number >= 0, got {value!r}")
    lam = torch.tensor([float(p) for p in priors], dtype=torch.float64)
    if float(lam.sum()) <= 0:
        raise ValueError(
            f"weights {dict(zip(names, map(float, priors)))}: all are zero; give at least one shard a "
            "weight > 0"
        )
    return (lam / lam.sum()).float()


def check_weights(weights: torch.Tensor, n_shards: int, batch: int) -> None:
    """Raise unless weights is (B, N), finite, >= 0 and each row sums to 1."""
    if weights.shape != (batch, n_shards):
        raise ValueError(f"gate weights: expected shape ({batch}, {n_shards}), got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all():
        raise ValueError("gate weights: expected finite values, got NaN or inf")
    if (weights < 0).any():
        raise ValueError("gate weights: expected values >= 0")
    sums = weights.sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=WEIGHT_SUM_TOL):
        raise ValueError(f"gate weights: rows must sum to 1, got sums {sums.tolist()}")


def mix_x0(
    x0s: Sequence[torch.Tensor], weights: torch.Tensor, names: Sequence[str] | None = None
) -> torch.Tensor:
    """Σ_i w_i(x_t) · x0_i(x_t): x0s are N tensors (B, ...), weights (B, N) with rows summing to 1."""
    if len(x0s) == 0:
        raise ValueError("x0s: expected at least one shard prediction, got none")
    names = list(names) if names is not None else [f"#{i}" for i in range(len(x0s))]
    batch = x0s[0].shape[0]
    check_weights(weights, len(x0s), batch)
    out = torch.zeros_like(x0s[0])
    for name, x0, w in zip(names, x0s, weights.unbind(dim=1)):
        if x0.shape != out.shape:
            raise ValueError(
                f"prediction of shard {name!r}: expected shape {tuple(out.shape)}, got {tuple(x0.shape)}"
            )
        if not torch.isfinite(x0).all():
            raise ValueError(
                f"prediction of shard {name!r}: contains NaN or inf; that shard's weights are broken"
            )
        out = out + w.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1))) * x0  # (B, 1, ...) * (B, C, H, W)
    return out


def describe_differences(sig: object, ref: object) -> str:
    """'key a vs b' for each entry where two architecture signatures differ (whole values if not mappings)."""
    if isinstance(sig, Mapping) and isinstance(ref, Mapping):
        keys = [k for k in list(ref) + [k for k in sig if k not in ref] if sig.get(k) != ref.get(k)]
        return ", ".join(f"{k} {sig.get(k)!r} vs {ref.get(k)!r}" for k in keys)
    return f"{sig!r} vs {ref!r}"


def check_same_family(signatures: Sequence[tuple[str, object]]) -> None:
    """Raise unless every shard has the same architecture signature: [(shard name, signature), ...]."""
    if not signatures:
        return
    ref_name, ref = signatures[0]
    for name, sig in signatures[1:]:
        if sig != ref:
            raise ValueError(
                f"shard {name!r}: architecture differs from shard {ref_name!r} "
                f"({describe_differences(sig, ref)}); "
                "all shards must be fine-tunes of one model family with the same latent channels"
            )
