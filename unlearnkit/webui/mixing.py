"""Per-step shard mixing for the webui hosts, both through the core Composer (CDM eq. 3, x0 space).

- Forge calls a ``model_function_wrapper(apply_model, {"input", "timestep", "c", "cond_or_uncond"})``
  with the VE pair (x, σ) and wants x0 back: :class:`VEMixture`.
- AUTOMATIC1111 runs the UNet module itself on the VP latent x_t = x·c_in and a discrete (possibly
  fractional) timestep t, and wants eps (or v) back: :class:`VPMixture` replaces the UNet's forward,
  maps (x_t, t) to (x, σ) with k-diffusion's log-σ interpolation, mixes in x0 space and maps back.

One Composer (fresh gate, fresh history) per sampling run; a run starts when the per-sample latent
shape changes or σ rises (:class:`ComposerRuns`). The same gate weights serve every CFG chunk.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..compose.composer import Composer
from ..compose.density import DensityGate
from ..compose.diffusers_unet import prediction_to_x0, x0_to_prediction
from ..compose.gate_model import ClassifierGate, GateNet
from ..compose.gates import Gate, StaticGate
from .settings import GATES

logger = logging.getLogger(__name__)

COND = 0  # Forge/ComfyUI mark of the positive prompt in cond_or_uncond


def build_gate(kind: str, names: Sequence[str], priors: Sequence[float], net: GateNet | None = None) -> Gate:
    """A fresh gate of a panel choice (density gates carry per-run state, so each run gets its own)."""
    if kind == "static":
        return StaticGate(names, priors)
    if kind == "classifier":
        if net is None:
            raise ValueError("gate file: the 'classifier' gate needs a gate file")
        return ClassifierGate(net, names, priors)
    if kind in ("density", "density (ODE sampler)"):
        return DensityGate(names, priors, ode=kind != "density")
    raise ValueError(f"gate: expected one of {list(GATES)}, got {kind!r}")


def sigma_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """σ at (fractional) timesteps t, interpolating log σ as k-diffusion's ``CompVisDenoiser.t_to_sigma``:
    (B,)."""
    log_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).log().to(t.device)
    t = t.float().clamp(0, log_sigmas.shape[0] - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def group_rows(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(perm, k) such that x[perm] is k identical stacked chunks (k-th copies of each sample), else None.

    A1111 stacks each sample once per AND-prompt part, then the uncond batch; the j-th chunk here is
    the j-th occurrence of every sample, so chunk 0 holds the first positive prompt of each sample.
    """
    flat = x.reshape(x.shape[0], -1)
    owner: list[int] = []  # sample index of each row
    samples: list[int] = []  # first row of each sample
    for r in range(flat.shape[0]):
        match = next((s for s, first in enumerate(samples) if torch.equal(flat[first], flat[r])), None)
        if match is None:
            samples.append(r)
            match = len(samples) - 1
        owner.append(match)
    occurrences = [[r for r, o in enumerate(owner) if o == s] for s in range(len(samples))]
    k = len(occurrences[0])
    if any(len(rows) != k for rows in occurrences):
        return None
    perm = [occurrences[s][j] for j in range(k) for s in range(len(samples))]
    return torch.tensor(perm, device=x.device), k


def split_chunks(x: torch.Tensor, cond_or_uncond: Sequence[int] | None) -> tuple[int, int | None]:
    """(number of stacked chunks, position of the first cond chunk or None) of a Forge/ComfyUI model call."""
    marks = list(cond_or_uncond) if cond_or_uncond else [COND]
    if x.shape[0] % len(marks):
        return 1, None
    return len(marks), (marks.index(COND) if COND in marks else None)


class ComposerRuns:
    """One Composer per sampling run over ``names``; keeps every run's Composer (its history) for
    attribution."""

    def __init__(self, names: Sequence[str], make_gate: Callable[[], Gate], prune_eps: float = 0.0) -> None:
        self.names = list(names)
        self.make_gate = make_gate
        self.prune_eps = float(prune_eps)
        self.runs: list[Composer] = []
        self._last: tuple[tuple, float] | None = None  # (per-sample shape, max sigma) of the last call
        # build one now: fail when the mixture is built, not mid-sampling
        self.tracks_density = isinstance(make_gate(), DensityGate)

    def composer_for(self, x: torch.Tensor, sigma: torch.Tensor, chunks: int) -> Composer:
        shape = (x.shape[0] // chunks, *x.shape[1:])
        s = float(sigma.max())
        if not self.runs or self._last is None or self._last[0] != shape or s > self._last[1] + 1e-6:
            self.runs.append(Composer(self.names, self.make_gate(), self.prune_eps))
        self._last = (shape, s)
        return self.runs[-1]


class VEMixture:
    """Forge ``model_function_wrapper``: x0 = Σ_i w_i(x, σ) x0_i(x, σ) over the shards' ``apply_model``.

    ``shard_models[i]`` is ``fn(x, sigma, **c) -> x0`` of shard i, or None for the model the host
    passes in (the loaded checkpoint, when it is one of the shards). ``inner`` is a wrapper that was
    set before this one (e.g. tiled diffusion): every shard evaluation then goes through it.
    """

    def __init__(
        self, runs: ComposerRuns, shard_models: Sequence[Callable | None], inner: Callable | None = None
    ) -> None:
        if len(shard_models) != len(runs.names):
            raise ValueError(
                f"shard_models: expected {len(runs.names)} (one per shard {runs.names}), got "
                f"{len(shard_models)}"
            )
        self.runs = runs
        self.shard_models = list(shard_models)
        self.inner = inner

    def __deepcopy__(self, memo: dict) -> VEMixture:  # UnetPatcher.clone() deep-copies model_options
        return self

    def to(self, device: Any) -> VEMixture:  # Forge's model_patches_to moves wrappers with the model
        return self

    def __call__(self, apply_model: Callable, args: dict) -> torch.Tensor:
        x, sigma, c = args["input"], args["timestep"], args["c"]  # x (R, C, H, W), sigma (R,)
        chunks, score_chunk = split_chunks(x, args.get("cond_or_uncond"))
        composer = self.runs.composer_for(x, sigma, chunks)

        def evaluate(i: int, x_i: torch.Tensor, sigma_i: torch.Tensor) -> torch.Tensor:
            fn = self.shard_models[i] or apply_model
            if self.inner is not None:
                return self.inner(fn, {**args, "input": x_i, "timestep": sigma_i})
            return fn(x_i, sigma_i, **c)

        return composer(x, sigma, evaluate, chunks=chunks, score_chunk=score_chunk)


def _take(value: Any, rows: torch.Tensor, batch: int) -> Any:
    """value[rows] for batch-sized tensors (also inside dicts/lists, e.g. SDXL's y or c_concat lists)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return {k: _take(v, rows, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take(v, rows, batch) for v in value)
    return value


class VPMixture:
    """A1111 UNet forward: eps/v of Σ_i w_i(x, σ) x0_i for ``forward(x_t, t, *args, **kwargs)``.

    ``shard_forwards[i]`` runs shard i's UNet (the webui's own call convention, e.g. ``context=``);
    ``latent_channels`` are the leading input channels that are the latent (inpainting models append
    their image conditioning after them, passed through unchanged).
    """

    def __init__(self, runs: ComposerRuns, shard_forwards: Sequence[Callable], alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", latent_channels: int = 4) -> None:
        if len(shard_forwards) != len(runs.names):
            raise ValueError(
                f"shard_forwards: expected {len(runs.names)} (one per shard {runs.names}), got "
                f"{len(shard_forwards)}"
            )
        self.runs = runs
        self.shard_forwards = list(shard_forwards)
        self.alphas_cumprod = alphas_cumprod.detach().float()
        self.prediction_type = prediction_type
        self.latent_channels = latent_channels
        self._scored: tuple[torch.Tensor, torch.Tensor] | None = (
            None  # (x, sigma) the density gate last scored
        )

    def _score_chunk(self, x: torch.Tensor, sigma: torch.Tensor, chunks: int) -> int | None:
        """Score the first (cond) chunk, once per (x, σ): a later call at the same point is uncond-only."""
        b = x.shape[0] // chunks
        seen = self._scored
        if (
            seen is not None
            and seen[0].shape == x[:b].shape
            and torch.equal(seen[0], x[:b])
            and torch.equal(seen[1], sigma[:b])
        ):
            return None
        self._scored = (x[:b].detach().clone(), sigma[:b].detach().clone())
        return 0

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows = x.shape[0]
        t = torch.as_tensor(timesteps, device=x.device).flatten().expand(rows)
        grouping = group_rows(x)
        if grouping is None:
            if self.runs.tracks_density:
                raise ValueError(
                    "density gate: samples are repeated unevenly in this batch (AND prompts of different "
                    "lengths); use the static or classifier gate"
                )
            perm, chunks = torch.arange(rows, device=x.device), 1
        else:
            perm, chunks = grouping
        inverse = torch.argsort(perm)
        c = self.latent_channels
        x_p, t_p = x[perm], t[perm]
        args_p = _take(args, perm, rows)
        kwargs_p = _take(kwargs, perm, rows)
        sigma = sigma_at(self.alphas_cumprod, t_p)  # (R,)
        abar = 1 / (1 + sigma**2)
        x_t = x_p[:, :c].float()
        extra = x_p[:, c:]
        root = abar.sqrt().view(-1, *([1] * (x.dim() - 1)))
        x_ve = x_t / root

        def evaluate(i: int, x_i: torch.Tensor, sigma_i: torch.Tensor) -> torch.Tensor:
            abar_i = 1 / (1 + sigma_i**2)
            x_t_i = x_i * abar_i.sqrt().view(-1, *([1] * (x.dim() - 1)))
            inp = torch.cat([x_t_i.to(x.dtype), extra], dim=1) if extra.shape[1] else x_t_i.to(x.dtype)
            out = self.shard_forwards[i](inp, t_p, *args_p, **kwargs_p)
            return prediction_to_x0(out.float(), x_t_i, abar_i, self.prediction_type)

        composer = self.runs.composer_for(x_ve, sigma, chunks)
        x0 = composer(
            x_ve, sigma, evaluate, chunks=chunks, score_chunk=self._score_chunk(x_ve, sigma, chunks)
        )
        out = x0_to_prediction(x0, x_t, abar, self.prediction_type)
        return out[inverse].to(x.dtype)
