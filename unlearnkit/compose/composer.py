"""One composed model evaluation: gate → which shards on which samples → convex mix of x0 (CDM eq. 3).

Host-free. The host supplies ``evaluate(i, x, sigma, rows) -> x0`` of shard i on the given rows of its
call (``rows`` None: every row; x and sigma are already those rows) and says how the call's rows are laid
out (``chunks`` stacked copies of the B samples, the prompt's chunk ``score_chunk``) and what its sampler
state is (``state``: "ve", or "flow" for CONST models; schedules.py). Weights come from the gate on the
VE form of the first chunk and serve every chunk, so cond and uncond agree.

One step may reach the Composer in several calls (a host that evaluates cond and uncond apart): the
step's weights and its draw are computed at the first call and reused by every call at the same point,
and the step is recorded once. ``ComposerRuns`` starts a fresh Composer (fresh gate, fresh history) for
each sampling run. Routing knobs (routing.py): ``route`` "batch" skips a shard below ε for every sample,
"sample" per sample; above ``mc_sigma`` each sample uses one shard drawn from its weights.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .batch import Layout, chunk_rows
from .gates import Gate
from .mixture import check_weights
from .routing import Evaluation, draw_one_hot, masked_weights, prune, sample_mask, seed_of
from .schedules import bcast, from_ve, to_ve

ShardEval = Callable[[int, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class StepRecord:
    sigma: float  # the host's σ of the step
    weights: torch.Tensor  # (B, N) gate weights before routing
    active: list[int]  # shards evaluated on at least one sample
    evaluated: int = 0  # (sample, shard) pairs evaluated (cost: one model = B)


@dataclass
class StepPlan:
    """What one sampler point decided: its weights and the (sample, shard) pairs to evaluate."""

    x: torch.Tensor  # (B, ...) host-form first chunk, the key of the point
    sigma: torch.Tensor  # (B,)
    weights: torch.Tensor  # (B, N)
    mask: torch.Tensor  # (B, N) bool
    observed: bool = False  # the gate has seen this point's scores


@dataclass
class Composer:
    """Callable x0 = Σ_i w_i(x, σ) x0_i(x, σ) over ``names`` with a gate and routing."""

    names: list[str]
    gate: Gate
    prune_eps: float = 0.0
    route: str = "batch"
    mc_sigma: float = math.inf
    generator: torch.Generator | None = None
    history: list[StepRecord] = field(default_factory=list)
    record: bool = True

    def __post_init__(self) -> None:
        if self.route not in ("batch", "sample"):
            raise ValueError(f"route: expected 'batch' or 'sample', got {self.route!r}")
        if getattr(self.gate, "needs_every_score", False) and math.isfinite(self.mc_sigma):
            raise ValueError(
                "mc_sigma: this gate needs every shard's score at every step; evaluate 'per-sample' or "
                "'every-shard' with it"
            )
        self._plan: StepPlan | None = None
        self._prompt: torch.Tensor | None = None  # the prompt's states, for calls without the prompt chunk

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, evaluate: ShardEval, chunks: int = 1,
                 score_chunk: int | None = 0, context: torch.Tensor | None = None, state: str = "ve",
                 subsets: bool = True) -> torch.Tensor:
        """The x0 mix for the call's rows (R, ...). ``context`` (R, T, D): the rows' text-encoder states;
        ``subsets`` False: the host can only evaluate whole calls (pairs outside the mask get weight 0)."""
        layout = Layout(chunks, score_chunk)
        b = layout.samples(x.shape[0])
        plan = self._step(x[:b], sigma[:b], state, self._prompt_of(context, layout, b))
        w = masked_weights(plan.weights, plan.mask)  # (B, N)
        out, x0s = None, {}
        for i in [i for i in range(len(self.names)) if plan.mask[:, i].any()]:
            every = self.route == "batch" or not subsets or bool(plan.mask[:, i].all())
            samples = torch.arange(b) if every else plan.mask[:, i].nonzero().flatten().cpu()
            rows = chunk_rows(samples, b, layout.chunks).to(x.device)
            x0 = evaluate(i, x, sigma, None) if every else evaluate(i, x[rows], sigma[rows], rows)
            self._check_finite(i, x0)
            out = torch.zeros(x.shape, dtype=x0.dtype, device=x0.device) if out is None else out
            out.index_add_(0, rows, bcast(w[samples, i].repeat(layout.chunks), x0) * x0)
            x0s[i] = (rows, x0)
        if score_chunk is not None and plan.mask.any() and not plan.observed:
            self._observe(plan, x, sigma, x0s, evaluate, layout, state)
        return out

    def _prompt_of(self, context: torch.Tensor | None, layout: Layout, b: int) -> torch.Tensor | None:
        """The prompt chunk's states of this call, else the run's last seen prompt (it does not change)."""
        k = layout.score_chunk
        if getattr(self.gate, "reads_prompt", False) and context is not None and k is not None:
            if context.dim() >= 2 and context.shape[0] == layout.chunks * b:
                self._prompt = context[k * b : (k + 1) * b]
        return self._prompt

    def _step(
        self, x: torch.Tensor, sigma: torch.Tensor, state: str, prompt: torch.Tensor | None
    ) -> StepPlan:
        """The plan of this sampler point: reused when cond and uncond reach it in separate calls."""
        p = self._plan
        if p is not None and p.x.shape == x.shape and torch.equal(p.sigma, sigma) and torch.equal(p.x, x):
            return p
        x_ve, sigma_ve = to_ve(x.float(), sigma, state)
        if getattr(self.gate, "reads_prompt", False):
            weights = self.gate(x_ve, sigma_ve, prompt).float()
        else:
            weights = self.gate(x_ve, sigma_ve).float()
        check_weights(weights, len(self.names), x.shape[0])
        mask = self._mask(weights, sigma_ve, x)
        self._plan = StepPlan(x.detach().clone(), sigma.detach().clone(), weights, mask)
        if self.record:
            active = self._plan.mask.any(dim=0).nonzero().flatten().tolist()
            self.history.append(StepRecord(float(sigma[0]), weights.detach().cpu(), active,
                                           int(self._plan.mask.sum())))
        return self._plan

    def _mask(self, weights: torch.Tensor, sigma_ve: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: the pairs to evaluate at this point."""
        if float(sigma_ve[0]) > self.mc_sigma:
            if self.generator is None:
                self.generator = torch.Generator().manual_seed(seed_of(x))
            return draw_one_hot(weights, self.generator)
        if self.route == "sample":
            return sample_mask(weights, self.prune_eps)
        mask = torch.zeros_like(weights, dtype=torch.bool)
        mask[:, prune(weights, self.prune_eps)] = True
        return mask

    def _check_finite(self, i: int, x0: torch.Tensor) -> None:
        if not torch.isfinite(x0).all():
            raise ValueError(
                f"prediction of shard {self.names[i]!r}: contains NaN or inf; that shard's weights are broken"
            )

    def _observe(self, plan: StepPlan, x, sigma, x0s: dict, evaluate: ShardEval, layout: Layout,
                 state: str) -> None:
        """Feed a score-tracking gate the prompt chunk's x0 of every evaluated pair (and its probe)."""
        if not getattr(self.gate, "needs_every_score", False):
            return
        b = plan.weights.shape[0]
        score = torch.arange(b, device=x.device) + layout.score_chunk * b  # the prompt chunk's rows
        x_ve, sigma_ve = to_ve(x[score].float(), sigma[score], state)
        full = self._scattered(x0s, score, x_ve, x.shape[0])
        self.gate.observe(x_ve, sigma_ve, full, plan.mask)
        plan.observed = True
        probe = self.gate.probe(x_ve)
        if probe is None:
            return
        v, points = probe  # K probe points per prompt-chunk row: (K·B, ...)
        rows, sigmas = score.repeat(points.shape[0] // b), sigma[score].repeat(points.shape[0] // b)
        at = from_ve(points, sigmas, state).to(x.dtype)
        probed = torch.zeros(len(self.names), *points.shape, dtype=x_ve.dtype, device=x_ve.device)
        for i in x0s:  # every evaluated shard, all its probe points in one call
            probed[i] = evaluate(i, at, sigmas, rows).to(x_ve.dtype)
        self.gate.observe_probe(x_ve, sigma_ve, v, full, probed)

    def _scattered(self, x0s: dict, score: torch.Tensor, like: torch.Tensor, total: int) -> torch.Tensor:
        """(N, B, ...) x0 on the prompt chunk's rows of a ``total``-row call, zero where not evaluated."""
        full = torch.zeros(len(self.names), *like.shape, dtype=like.dtype, device=like.device)
        for i, (rows, x0) in x0s.items():
            where = torch.full((total,), -1, dtype=torch.long, device=score.device)
            where[rows.to(score.device)] = torch.arange(rows.numel(), device=score.device)  # row -> x0 index
            pos = where[score]
            hit = pos >= 0
            full[i, hit] = x0[pos[hit]].to(like.dtype)
        return full


class ComposerRuns:
    """One Composer per sampling run over ``names``; a run starts when the per-chunk latent shape changes
    or σ rises. ``evaluation`` sets the routing (routing.py); without it the Composer's own knobs apply
    (``prune_eps`` and ``knobs``: route, mc_sigma, generator). ``keep`` bounds how many past runs (their
    histories) are kept."""

    def __init__(self, names: Sequence[str], make_gate: Callable[[], Gate], prune_eps: float = 0.0,
                 evaluation: Evaluation | None = None, keep: int | None = None, **knobs: Any) -> None:
        self.names = list(names)
        self.make_gate = make_gate
        self.prune_eps = float(prune_eps)
        self.evaluation = evaluation
        self.keep = keep
        self.knobs = knobs
        self.runs: list[Composer] = []
        self._last: tuple[tuple, float] | None = None  # (per-chunk shape, max σ) of the last call
        first = make_gate()  # build one now: fail when the mixture is built, not mid-sampling
        self.tracks_density = bool(getattr(first, "needs_every_score", False))
        if evaluation is not None:
            self.evaluation = evaluation.for_gate(self.tracks_density)

    @property
    def current(self) -> Composer | None:
        return self.runs[-1] if self.runs else None

    def new_composer(self) -> Composer:
        if self.evaluation is None:
            return Composer(self.names, self.make_gate(), self.prune_eps, **self.knobs)
        knobs = {k: v for k, v in self.knobs.items() if k == "generator"}
        return Composer(self.names, self.make_gate(), **self.evaluation.routing(), **knobs)

    def composer_for(self, x: torch.Tensor, sigma: torch.Tensor, chunks: int) -> Composer:
        """The run's Composer; a new one when a new sampling run starts."""
        shape = (x.shape[0] // max(chunks, 1), *x.shape[1:])
        s = float(sigma.max())
        if not self.runs or self._last is None or self._last[0] != shape or s > self._last[1] + 1e-6:
            self.runs.append(self.new_composer())
            if self.keep is not None:
                del self.runs[: -self.keep]
        self._last = (shape, s)
        return self.runs[-1]
