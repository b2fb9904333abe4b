"""AdvUnlearn (Zhang et al., NeurIPS 2024): adversarial training of a concept-erased text encoder.

Per iteration (the reference code's train-scripts/AdvUnlearn.py), with the UNet frozen and only chosen
encoder layers training:
1. after ``warmup`` iterations, the inner attack finds δ (soft_attack) making ε_θ(x_t, [δ; c]) match
   the original ε_o(x_t, c) on the original model's x_t;
2. x_t: sample the CURRENT model on c and stop at a random DDIM step;
3. loss = ‖ε_θ(x_t, [δ; c]) − (ε_o(x_t, ∅) − η(ε_o(x_t, c) − ε_o(x_t, ∅)))‖²
          + γ ‖ε_θ(x_t^r, c_r) − ε_o(x_t^r, c_r)‖² over a few retain prompts (x_t^r: original model);
   ours: the empty prompt is a retain prompt in every batch (``retain_empty``), since the erased
   encoder also encodes CFG's unconditional branch — without it ε(∅) drifted and judge-FID rose;
4. one Adam step. ``attack="none"`` is plain ESD on the text encoder (the baseline).
"""
from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoints
from .components import Components, check_components
from .denoise import Denoiser, SamplerConfig, TrajectoryBank
from .distributed import Runtime
from .erased_file import encoder_state, state_sha256
from .esd import esd_loss, retain_loss
from .layers import select_trainable, trainable_copy
from .objectives import match_original
from .prompts import check_prompts, encode_ids, encode_with_prefix, tokenize
from .soft_attack import SoftAttackConfig, soft_prompt_attack

logger = logging.getLogger(__name__)

ATTACKS = ("pgd", "fast_at", "none")
RESUMABLE_CHANGES = ("iterations",)  # a run may be extended; every other setting must match its checkpoint


@dataclass(frozen=True)
class EraseConfig:
    concept: tuple[str, ...]  # prompt(s) naming the concept; one is drawn per iteration
    retain: tuple[str, ...]  # prompts whose outputs must not change
    attack: str = "pgd"  # "pgd" (AdvUnlearn), "fast_at" (signed-gradient attack), "none" (ESD)
    iterations: int = 1000
    warmup: int = 200  # iterations without attack
    lr: float = 1e-5
    eta: float = 1.0  # negative guidance η
    retain_weight: float = 0.3  # γ
    retain_batch: int = 5  # retain prompts per iteration
    concept_batch: int = 1  # x_t per iteration
    layers: str = "all"  # see layers.py
    attack_steps: int = 30
    attack_lr: float = 1e-3
    attack_tokens: int = 1
    attack_init: str = "latest"
    attack_every: int = 1  # re-run the attack every N iterations (AdvUnlearn: 1)
    sampler_steps: int = 50  # DDIM steps of the x_t sampling
    guidance: float = 3.0  # CFG of the x_t sampling
    bank_size: int = 4  # original-model trajectories kept per concept/retain prompt
    retain_empty: bool = True  # also hold ε(x_t, ∅): the encoder makes CFG's unconditional branch too (ours)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack: expected one of {ATTACKS}, got {self.attack!r}")
        for name in ("iterations", "retain_batch", "concept_batch", "attack_every", "bank_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup: expected >= 0, got {self.warmup!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr!r}")
        if self.retain_weight < 0:
            raise ValueError(f"retain_weight: expected >= 0, got {self.retain_weight!r}")
        self.soft_attack()
        self.sampler()

    def soft_attack(self) -> SoftAttackConfig | None:
        if self.attack == "none":
            return None
        return SoftAttackConfig(
            self.attack_tokens, self.attack_steps, self.attack_lr, self.attack, self.attack_init
        )

    def sampler(self) -> SamplerConfig:
        return SamplerConfig(self.sampler_steps, self.guidance)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class Prepared:
    """Everything fixed during training: frozen models, token ids, original conditionings, x_t banks."""

    denoiser: Denoiser
    original: torch.nn.Module
    concept_ids: torch.Tensor  # (P, L)
    retain_ids: torch.Tensor  # (R, L), the empty prompt last when config.retain_empty
    uncond_ids: torch.Tensor  # (1, L)
    uncond_o: torch.Tensor  # (1, L, W) original encoder on ""
    concept_o: torch.Tensor  # (P, L, W)
    retain_o: torch.Tensor  # (R, L, W)
    retain_bank: TrajectoryBank
    concept_bank: TrajectoryBank | None


@dataclass
class TrainResult:
    encoder: torch.nn.Module  # float32 when the given encoder was fp16 / bf16 (it trains in float32)
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    base_sha256: str = ""
    resumed_from: int = 0
    attack_norms: list[float] = field(default_factory=list)  # mean ‖δ‖ per adversarial token, per step


class TrainingStopped(Exception):
    """``stop()`` asked training to end (e.g. the user's cancel); a checkpoint of ``step`` was written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"erase training stopped after step {step}")
        self.step = step


def check_inputs(comps: Components, config: EraseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The one place training input is refused: (concept ids, retain ids)."""
    check_components(comps)
    if not config.retain:
        raise ValueError(
            "retain: empty retain set; give at least one prompt to keep (e.g. other objects or styles)"
        )
    concept_ids = check_prompts(comps.tokenizer, list(config.concept), "concept")
    retain_ids = check_prompts(comps.tokenizer, list(config.retain), "retain")
    return concept_ids, retain_ids


@torch.no_grad()
def prepare(comps: Components, config: EraseConfig, device: torch.device) -> Prepared:
    concept_ids, retain_ids = check_inputs(comps, config)
    denoiser = Denoiser(comps.unet.to(device), comps.scheduler, config.sampler())
    original = copy.deepcopy(comps.text_encoder).to(device).eval().requires_grad_(False)
    uncond_ids = tokenize(comps.tokenizer, [""])
    if config.retain_empty:
        retain_ids = torch.cat([retain_ids, uncond_ids])
    uncond_o, concept_o, retain_o = (
        encode_ids(original, ids) for ids in (uncond_ids, concept_ids, retain_ids)
    )
    gen = checkpoints.step_generator(config.seed, -1)  # the same banks in every process and on resume
    retain_bank = TrajectoryBank(denoiser, retain_o, uncond_o, config.bank_size, gen)
    concept_bank = (
        None
        if config.attack == "none"
        else TrajectoryBank(denoiser, concept_o, uncond_o, config.bank_size, gen)
    )
    return Prepared(denoiser, original, concept_ids, retain_ids, uncond_ids, uncond_o, concept_o, retain_o,
                    retain_bank, concept_bank)


@torch.no_grad()
def sample_current(encoder: torch.nn.Module, prep: Prepared, j: torch.Tensor, gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t: the current model sampled on concept prompts j (B,) and stopped at a random DDIM step k; t =
    t_k."""
    den = prep.denoiser
    k = int(torch.randint(0, len(den.timesteps), (1,), generator=gen))
    x = den.noise(len(j), gen)
    was_training = encoder.training
    encoder.eval()
    cond, uncond = encode_ids(encoder, prep.concept_ids[j]), encode_ids(encoder, prep.uncond_ids)
    encoder.train(was_training)
    return den.sample_until(x, cond, uncond, k), den.timesteps[k].expand(len(j))


def erase_loss(encoder: torch.nn.Module, prep: Prepared, config: EraseConfig, delta: torch.Tensor | None,
               gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """ESD loss on [δ; c] at the current model's x_t, plus γ × the retain loss (graph to the encoder)."""
    den = prep.denoiser
    j = torch.randint(0, len(prep.concept_ids), (config.concept_batch,), generator=gen)
    x, t = sample_current(encoder, prep, j, gen)
    with torch.no_grad():
        out_u = den.out(x, t, prep.uncond_o.expand(len(j), -1, -1))
        out_c = den.out(x, t, prep.concept_o[j])
    loss_esd = esd_loss(
        den.out(x, t, encode_with_prefix(encoder, prep.concept_ids[j], delta)), out_u, out_c, config.eta
    )
    parts = {"esd": float(loss_esd.detach())}
    if config.retain_weight == 0:
        return loss_esd, parts
    n_user = len(prep.retain_ids) - int(config.retain_empty)
    r = torch.randperm(n_user, generator=gen)[: config.retain_batch]
    if config.retain_empty:
        r = torch.cat([r, torch.tensor([n_user])])  # ∅ in every batch
    xr, tr = prep.retain_bank.draw(r, gen)
    xr, tr = xr.to(den.device), tr.to(den.device)
    with torch.no_grad():
        out_ro = den.out(xr, tr, prep.retain_o[r])
    loss_r = retain_loss(den.out(xr, tr, encode_ids(encoder, prep.retain_ids[r])), out_ro)
    parts["retain"] = float(loss_r.detach())
    return loss_esd + config.retain_weight * loss_r, parts


def attack_due(config: EraseConfig, step: int) -> bool:
    return (
        config.attack != "none"
        and step >= config.warmup
        and (step - config.warmup) % config.attack_every == 0
    )


def attack_norm(delta: torch.Tensor | None) -> float:
    """Mean ‖δ‖ over the adversarial tokens (0 without an attack): the attack strength a step trained
    against."""
    return 0.0 if delta is None else float(delta.detach().float().norm(dim=-1).mean())


def resume_into(folder: Path, resume: bool, trainable: dict, opt, config: EraseConfig, result: TrainResult,
                device: torch.device) -> tuple[int, torch.Tensor | None]:
    """Restore the newest checkpoint of ``folder`` into the run: (first step, δ)."""
    if not resume:
        raise FileExistsError(
            f"checkpoint folder {str(folder)!r}: holds checkpoints; pass --resume or use another folder"
        )
    state = checkpoints.load(checkpoints.latest(folder), trainable, opt, config.to_dict(), RESUMABLE_CHANGES)
    first = int(state["step"])
    result.losses, result.resumed_from = list(state["losses"]), first
    result.attack_norms = list(state.get("extra", {}).get("attack_norms", [0.0] * first))
    return first, None if state["delta"] is None else state["delta"].to(device)


def train_erased_encoder(comps: Components, config: EraseConfig, checkpoint_dir: str | Path | None = None,
                         checkpoint_every: int = 100, resume: bool = False, runtime: Runtime | None = None,
                         progress: bool = True, on_step: Callable[[int], None] | None = None,
                         stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train a copy of ``comps.text_encoder``; ``comps`` is never modified. ``on_step(done)`` runs after each
    step; when ``stop()`` turns true after a step, that step is checkpointed and TrainingStopped raised."""
    start = time.perf_counter()
    runtime = runtime or Runtime()
    check_inputs(comps, config)
    encoder = trainable_copy(comps.text_encoder, runtime.device)
    trainable = dict(select_trainable(encoder, config.layers))  # refuses a bad spec before any sampling
    prep = prepare(comps, config, runtime.device)
    base_hash = state_sha256(encoder_state(prep.original))
    opt = torch.optim.Adam(list(trainable.values()), lr=config.lr)
    result = TrainResult(encoder, base_sha256=base_hash)
    delta = None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    first = 0
    if folder is not None and checkpoints.latest(folder) is not None:
        first, delta = resume_into(folder, resume, trainable, opt, config, result, runtime.device)
    attack_cfg = config.soft_attack()
    encoder.train()
    bar = tqdm(
        range(first, config.iterations), desc=f"erase ({config.attack})", initial=first,
        total=config.iterations, disable=not (progress and runtime.is_main), mininterval=2.0,
    )
    for step in bar:
        gen = checkpoints.step_generator(config.seed, step, runtime.rank)
        if attack_due(config, step):
            draw = match_original(prep.denoiser, prep.concept_bank, prep.concept_ids, prep.concept_o)
            delta = soft_prompt_attack(
                encoder, prep.denoiser, draw, attack_cfg, gen, delta, runtime.mean
            ).delta
        loss, parts = erase_loss(encoder, prep, config, delta if step >= config.warmup else None, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        runtime.mean_grads_(list(trainable.values()))
        opt.step()
        result.losses.append(float(runtime.mean(loss.detach())))
        result.attack_norms.append(attack_norm(delta if step >= config.warmup else None))
        bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()}, refresh=False)
        done = step + 1
        if on_step is not None:
            on_step(done)
        stopping = stop is not None and stop()
        due = done % checkpoint_every == 0 or done == config.iterations or stopping
        if folder is not None and due:
            if runtime.is_main:
                checkpoints.save(folder, done, trainable, opt, delta, config.to_dict(), result.losses,
                                 {"attack_norms": result.attack_norms})
            runtime.barrier()
        if stopping:
            raise TrainingStopped(done)
    runtime.check_agreement(list(trainable.values()))
    encoder.eval().requires_grad_(False)
    result.steps, result.seconds = config.iterations, time.perf_counter() - start
    logger.info("erased in %d steps (%.1f s this run); final loss %.4f", result.steps, result.seconds,
                result.losses[-1] if result.losses else float("nan"))
    return result
