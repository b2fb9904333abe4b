"""What Train Shard Gate reads from its inputs: each shard's images as latents, optional prompts, progress.
ComfyUI is imported only inside functions; training itself is ``unlearnkit.compose.gate_training``."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ...unlearnkit.compose.gate_model import GateNet

MAX_IMAGE_INPUTS = 8
ENCODE_BATCH = 64
MISSING_PROMPT = ("a prompt-reading gate needs the prompt of every shard's images (shard {name!r} has none); "
                  "connect it or disconnect every prompt_k")


def numbered_inputs(inputs: Mapping[str, Any], prefix: str, names: Sequence[str], missing: str) -> dict:
    """{k: value} of the connected ``<prefix>_k`` inputs, one per shard k = 1..N; ValueError naming the
    first input that is missing (``missing`` formatted with the shard's ``name``) or has no shard."""
    given = {int(k.rpartition("_")[2]): v for k, v in inputs.items()
             if k.startswith(prefix + "_") and k.rpartition("_")[2].isdigit() and v is not None}
    extra = sorted(k for k in given if k > len(names))
    if extra:
        raise ValueError(
            f"{prefix}_{extra[0]}: connected, but the shard set has only {len(names)} shards {list(names)}"
        )
    absent = [k for k in range(1, len(names) + 1) if k not in given]
    if absent:
        k = absent[0]
        raise ValueError(f"{prefix}_{k}: " + missing.format(name=names[k - 1], k=k, names=list(names)))
    return given


def encode_images(vae: Any, model: Any, images: torch.Tensor) -> torch.Tensor:
    """IMAGE (B, H, W, C) in [0, 1] -> the latents the shards' UNet sees: process_latent_in(vae.encode(x))."""
    chunks = [
        vae.encode(images[i : i + ENCODE_BATCH, :, :, :3]) for i in range(0, images.shape[0], ENCODE_BATCH)
    ]
    latent = torch.cat(chunks).float().cpu()  # (B, C, h, w)
    return model.model.process_latent_in(latent).float()


class Unprompted:
    """A gate read without a prompt (a prompt-reading gate gets the empty prompt): for accuracy figures."""

    def __init__(self, net: GateNet) -> None:
        self.net, self.config = net, net.config

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.config.context_dim == 0:
            return self.net(x, sigma)
        return self.net(x, sigma, self.net.null_context.expand(x.shape[0], -1))


def pooled_prompt(conditioning: Any) -> torch.Tensor:
    """A CONDITIONING's text-encoder states averaged over tokens: (D,), what a prompt-reading gate reads."""
    return conditioning[0][0].float().mean(dim=1)[0].cpu()


def shard_contexts(names: list[str], latents: dict[str, torch.Tensor], inputs: dict[str, Any],
                   empty_prompt: Any) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
    """({shard: (B, D) pooled prompt per latent}, empty prompt (D,)) from prompt_k inputs; (None, None) if
    none given."""
    if empty_prompt is None and not any(k.startswith("prompt_") and v is not None for k, v in inputs.items()):
        return None, None
    prompts = numbered_inputs(inputs, "prompt", names, MISSING_PROMPT)
    if empty_prompt is None:
        raise ValueError(
            "empty_prompt: a prompt-reading gate needs the empty prompt encoded (CLIP Text Encode with no "
            "text)"
        )
    contexts = {
        n: pooled_prompt(prompts[k + 1]).expand(latents[n].shape[0], -1).clone() for k, n in enumerate(names)
    }
    return contexts, pooled_prompt(empty_prompt)


def comfy_progress(total: int) -> Callable[[int, int], None]:
    """A progress callback(step, total) driving a ComfyUI progress bar; honours the Cancel button."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)

    def update(step: int, steps: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(step, steps)

    return update
