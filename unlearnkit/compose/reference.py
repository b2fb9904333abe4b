"""The composed x0 computed straight from the shards' UNets: what every host adapter must reproduce.

Host tests (ComfyUI, Forge, A1111, the CLI) run one composed step through the host and compare its x0
with ``reference_x0`` for the same shards, gate, evaluate mode and inputs. A shard is given as a UNet
call in the VP convention, ``forward(x_t, t, context) -> eps / v / x0``: the timestep is the one the host
hands its UNet (nearest trained step in ComfyUI and Forge, fractional in A1111's k-diffusion).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .batch import take_rows
from .composer import Composer
from .gates import Gate
from .prediction import prediction_to_x0
from .routing import Evaluation
from .schedules import sigma_to_t, sigmas_of, vp_from_ve

UNetCall = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, context) -> out


def shard_x0(
    forward: UNetCall, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
    alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon", quantize: bool = False, state: str = "ve",
) -> torch.Tensor:
    """x0 of one UNet at state x (VE, or the VP x_t itself) and σ: t = the host's timestep of σ."""
    log_sigmas = sigmas_of(alphas_cumprod.detach().float().cpu()).log()
    t = sigma_to_t(sigma.cpu(), log_sigmas, quantize).to(x.device)
    x_t = x.float() if state == "vp" else vp_from_ve(x.float(), sigma)
    return prediction_to_x0(forward(x_t, t, context).float(), x_t, sigma, prediction_type)


def reference_x0(forwards: Sequence[UNetCall], names: Sequence[str], gate: Gate, x: torch.Tensor,
                 sigma: torch.Tensor, contexts: Sequence[torch.Tensor], alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", quantize: bool = False,
                 evaluation: Evaluation | None = None, state: str = "ve") -> torch.Tensor:
    """x0 of the composition for every chunk of a CFG call: (len(contexts) · B, ...), chunk k with the
    states ``contexts[k]`` (B, T, D); chunk 0 is the prompt. x: (B, ...) VE state, sigma: (B,).

    ``state``: the form the host's sampler state takes, "ve" (ComfyUI, Forge) or "vp" (A1111's UNet call,
    diffusers): the one-shard draws of ``fast`` follow the host's own state bits."""
    chunks = len(contexts)
    host = vp_from_ve(x.float(), sigma) if state == "vp" else x
    xs, sigmas = host.repeat(chunks, *[1] * (x.dim() - 1)), sigma.repeat(chunks)
    ctx = torch.cat(list(contexts))
    routing = (evaluation or Evaluation("every-shard", 0.0)).routing()
    composer = Composer(list(names), gate, **routing)

    def evaluate(i: int, x_i: torch.Tensor, s_i: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        c_i = ctx if rows is None else take_rows(ctx, rows, ctx.shape[0])
        return shard_x0(forwards[i], x_i, s_i, c_i, alphas_cumprod, prediction_type, quantize, state)

    return composer(xs, sigmas, evaluate, chunks, 0, context=ctx, state=state)
