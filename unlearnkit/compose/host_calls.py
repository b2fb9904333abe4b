"""The two ways a host reaches a composed step, written once: every adapter only translates names.

- ``compose_wrapper_call``: ComfyUI's and Forge's ``model_function_wrapper(apply_model, args)`` — the
  sampler's state x (VE, or flow for CONST models) and σ in, x0 out; chunks marked by cond_or_uncond.
- ``VPComposition``: a UNet call (A1111's replaced UNet forward, a diffusers pipeline) — VP x_t and a
  discrete (possibly fractional) t in, eps / v / x0 out; chunks found by repeated rows.
Row subsets for per-sample routing take every batch-sized tensor of the call's arguments (``take_rows``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .batch import group_duplicates, layout_from_marks, take_rows
from .composer import ComposerRuns
from .prediction import prediction_to_x0, x0_to_prediction
from .schedules import sigmas_of, t_to_sigma

ShardCall = Callable[[int, torch.Tensor, torch.Tensor, dict], torch.Tensor]  # (i, x, sigma, c) -> x0


def prompt_states(c: Mapping[str, Any], rows: int) -> torch.Tensor | None:
    """The call's text-encoder states (R, T, D) when its conditioning holds them, else None."""
    context = c.get("c_crossattn")
    if isinstance(context, torch.Tensor) and context.dim() == 3 and context.shape[0] == rows:
        return context
    return None


def compose_wrapper_call(
    runs: ComposerRuns, args: Mapping[str, Any], call: ShardCall, state: str = "ve"
) -> torch.Tensor:
    """x0 of a ``model_function_wrapper`` call {"input", "timestep", "c", "cond_or_uncond"} over the shards.

    ``call(i, x, sigma, c)`` evaluates shard i on rows x with the conditioning ``c`` of those rows. A call
    whose conditioning cannot be split by rows (a ControlNet's hint, one per sample) evaluates every row.
    """
    x, sigma, c = args["input"], args["timestep"], args["c"]  # x (R, C, H, W), sigma (R,)
    rows = x.shape[0]
    layout = layout_from_marks(rows, args.get("cond_or_uncond"))
    composer = runs.composer_for(x, sigma, layout.chunks)

    def evaluate(i: int, x_i: torch.Tensor, sigma_i: torch.Tensor, picked: torch.Tensor | None) -> Any:
        return call(i, x_i, sigma_i, c if picked is None else take_rows(c, picked, rows))

    subsets = c.get("control") is None
    return composer(x, sigma, evaluate, layout.chunks, layout.score_chunk, prompt_states(c, rows), state,
                    subsets)


class VPComposition:
    """eps / v / x0 of the shard mixture for a UNet call ``forward(x_t, t, *args, **kwargs)``.

    ``forwards[i](x_t, t, *args, **kwargs)`` runs shard i's UNet in the host's convention; the leading
    ``latent_channels`` of x_t are the latent (an inpainting UNet's extra input channels pass through).
    The prompt chunk is the first copy of each sample (A1111) or the last (diffusers: [uncond, cond]);
    the keyword argument ``prompt_key`` holds the prompt states a prompt-reading gate reads.
    """

    def __init__(self, runs: ComposerRuns, forwards: Sequence[Callable], alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", latent_channels: int | None = None,
                 prompt_chunk: str = "first", prompt_key: str = "context") -> None:
        if len(forwards) != len(runs.names):
            raise ValueError(
                f"forwards: expected {len(runs.names)} (one per shard {runs.names}), got {len(forwards)}"
            )
        if prompt_chunk not in ("first", "last"):
            raise ValueError(f"prompt_chunk: expected 'first' or 'last', got {prompt_chunk!r}")
        self.runs, self.forwards = runs, list(forwards)
        self.log_sigmas = sigmas_of(alphas_cumprod.detach().float().cpu()).log()
        self.prediction_type = prediction_type
        self.latent_channels, self.prompt_chunk, self.prompt_key = latent_channels, prompt_chunk, prompt_key

    def layout(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(perm, chunks): the call's rows reordered into stacked copies of the samples."""
        grouping = group_duplicates(x)
        if grouping is not None:
            return grouping
        if self.runs.tracks_density:
            raise ValueError(
                "density gate: samples are repeated unevenly in this batch (AND prompts of different "
                "lengths); use the static or classifier gate"
            )
        return torch.arange(x.shape[0], device=x.device), 1

    def __call__(self, x: torch.Tensor, t: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The mixed prediction for the rows of x (R, C', H, W)."""
        rows, c = x.shape[0], self.latent_channels or x.shape[1]
        t = torch.as_tensor(t, device=x.device).flatten().expand(rows)
        perm, chunks = self.layout(x[:, :c])
        x_p, t_p = x[perm], t[perm]
        a_p, k_p = take_rows(args, perm, rows), take_rows(kwargs, perm, rows)
        sigma = t_to_sigma(t_p, self.log_sigmas).to(x.device)  # (R,)
        x_t, extra = x_p[:, :c], x_p[:, c:]

        def evaluate(i: int, x_i: torch.Tensor, s_i: torch.Tensor, picked: torch.Tensor | None) -> Any:
            def pick(v: Any) -> Any:
                return v if picked is None else take_rows(v, picked, rows)

            inp = torch.cat([x_i.to(x.dtype), pick(extra)], dim=1) if extra.shape[1] else x_i.to(x.dtype)
            out = self.forwards[i](inp, pick(t_p), *pick(a_p), **pick(k_p))
            return prediction_to_x0(out.float(), x_i.float(), s_i, self.prediction_type)

        composer = self.runs.composer_for(x_t, sigma, chunks)
        score = 0 if self.prompt_chunk == "first" else chunks - 1
        x0 = composer(x_t, sigma, evaluate, chunks, score, context=k_p.get(self.prompt_key), state="vp")
        out = x0_to_prediction(x0, x_t.float(), sigma, self.prediction_type)
        return out[torch.argsort(perm)].to(x.dtype)
