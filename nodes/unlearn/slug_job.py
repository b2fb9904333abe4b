"""One SLUG run for the "SLUG Unlearn" node: towers, forget/retain pairs, progress, the core's run_slug, the
patch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ...unlearnkit.unlearn import Patch, SlugConfig, StepSearchConfig, plot_array, run_slug
from ...unlearnkit.unlearn.evaluation import prepare_pairs
from .comfy_patches import applied_slug_patches, not_slug
from .towers import ImageTower, TextTower, comfy_tokenizer, feature_pair, text_tower

logger = logging.getLogger(__name__)

RETAIN_BATCH = 64


@dataclass(frozen=True)
class SlugRequest:
    """The node's settings (the one place they are checked)."""

    concept: str
    forget_captions: str = ""
    retain_captions: str = ""
    layer: str = ""
    retain_drop: float = 0.05
    max_evals: int = 10
    seed: int = 0
    anchor: str = "plain"  # SD SLUG (MODEL connected): what the forget captions say instead of the concept

    def check(self) -> None:
        if not self.concept.strip():
            raise ValueError("concept: give the name of what the forget images show (e.g. 'bold style')")


class Progress:
    """ComfyUI progress bar over the gradient batches and the step-search evaluations; honours Cancel."""

    def __init__(self, total: int) -> None:
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(total)

    def tick(self) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update(1)


def forget_texts(request: SlugRequest, count: int) -> str | list[str]:
    """The text paired with each forget image: the caption lines (one for all, or one per image), else the
    concept."""
    lines = [line.strip() for line in request.forget_captions.splitlines() if line.strip()]
    if not lines:
        return request.concept.strip()
    if len(lines) not in (1, count):
        raise ValueError(
            f"forget_captions: give one caption for all forget images or one per image, one per line "
            f"({count} images, {len(lines)} captions)"
        )
    return lines[0] if len(lines) == 1 else lines


def user_retain(tower: ImageTower, images: torch.Tensor, text: str) -> tuple[torch.Tensor, list[str]]:
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if len(captions) != images.shape[0]:
        raise ValueError(f"retain_captions: give one caption per retain image, one per line "
                         f"({images.shape[0]} images, {len(captions)} captions)")
    if len(captions) < 2:
        raise ValueError("retain_images: the contrastive retain loss needs at least 2 captioned images")
    return tower.features(tower.pixels(images, "retain_images")), captions


def add_slug_patches(tower: TextTower, clip: Any, prefix: str) -> dict[str, torch.Tensor]:
    """Put the clone's SLUG patches on the tower (so SLUG sees the model as it is); returns the layers'
    bases."""
    params = dict(tower.named_parameters())
    bases: dict[str, torch.Tensor] = {}
    for key, patch, strength in applied_slug_patches(clip.patcher):
        if key.startswith(prefix):
            name = "text_model." + key[len(prefix):]
            param = params[name]
            bases.setdefault(name, param.detach().clone())
            with torch.no_grad():
                param.add_(patch.delta.to(param) * strength)
    return bases


@contextmanager
def base_weight(tower: TextTower, name: str, bases: dict[str, torch.Tensor]) -> Iterator[None]:
    """The layer holds its pre-SLUG weights inside (what a new patch is fingerprinted against)."""
    if name not in bases:
        yield
        return
    param = dict(tower.named_parameters())[name]
    current = param.detach().clone()
    with torch.no_grad():
        param.copy_(bases[name])
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(current)


def resolve_layer(tower: TextTower, layer: str) -> str | None:
    layer = layer.strip()
    if not layer:
        return None
    names = [n for n, _ in tower.named_parameters()]
    hits = [n for n in names if n == layer or n.endswith("." + layer) or layer.endswith("." + n)]
    if len(hits) != 1:
        raise ValueError(
            f"layer: {layer!r} matches {len(hits)} text-encoder layers {hits[:3]}; e.g. {names[-8]!r}"
        )
    return hits[0]


def clip_skip_blocks(clip: Any) -> int:
    """Blocks after the one SD reads (CLIP Set Last Layer -2 -> 1): SLUG must not edit them."""
    idx = getattr(clip, "layer_idx", None)
    return max(0, -int(idx) - 1) if idx is not None and int(idx) < 0 else 0


def slug_report(patch: Patch, path: str) -> str:
    """What SLUG did, in words, with a warning a user must act on when the step search missed a target."""
    m = {k: patch.metrics.get(k, float("nan")) for k in ("forget_before", "forget_after", "retain_before",
                                                           "retain_after")}
    lines = [f"SLUG forgot {patch.concept!r} by editing one layer: {patch.layer} (step {patch.step:.4g})",
             f"forget metric {m['forget_before']:.3f} -> {m['forget_after']:.3f} (lower: more forgotten); "
             f"retain {m['retain_before']:.3f} -> {m['retain_after']:.3f}",
             f"patch: {path}"]
    if not m.get("search_success", 1.0):
        lines.append("WARNING: the step search did not both forget the concept and keep the rest; the patch "
                     "may forget too little. Try more (or more typical) images, another layer, a larger "
                     "retain_drop, or Apply SLUG Patch with strength > 1.")
    return "\n".join(lines)


def run_on_clip(
    clip: Any,
    tower: ImageTower,
    forget_images: torch.Tensor | None,
    retain_images: torch.Tensor | None,
    request: SlugRequest,
) -> tuple[Patch, torch.Tensor]:
    """SLUG on the CLIP's text encoder: (patch for the pre-SLUG weights, plot as IMAGE (1, H, W, 3)).

    ComfyUI runs nodes under ``torch.inference_mode()``; SLUG needs gradients, so it runs outside it on
    copies (tensors made in inference mode cannot take part in autograd).
    """
    request.check()
    if forget_images is None or forget_images.ndim != 4 or forget_images.shape[0] == 0:
        raise ValueError("forget_images: no images; give a few images of the concept to forget")
    with torch.inference_mode(False), torch.enable_grad():
        retain = retain_images.clone() if retain_images is not None else None
        return _run(clip, tower, forget_images.clone(), retain, request)


def _run(clip: Any, tower: ImageTower, forget_images: torch.Tensor, retain_images: torch.Tensor | None,
         request: SlugRequest) -> tuple[Patch, torch.Tensor]:
    text, layout = text_tower(clip, tower.projection, not_slug, clip.patcher.load_device)
    bases = add_slug_patches(text, clip, layout.prefix)
    forget_feats = tower.features(tower.pixels(forget_images, "forget_images"))
    if retain_images is not None and retain_images.shape[0] > 0:
        retain_feats, captions = user_retain(tower, retain_images, request.retain_captions)
    else:
        retain_feats, captions = tower.default_retain(request.concept, request.seed)
    config = SlugConfig(
        layer=resolve_layer(text, request.layer),
        exclude_last_blocks=clip_skip_blocks(clip),
        progress=False,
        search=StepSearchConfig(retain_drop=request.retain_drop, max_evals=request.max_evals),
    )
    retain = [
        (retain_feats[i : i + RETAIN_BATCH], captions[i : i + RETAIN_BATCH])
        for i in range(0, len(captions), RETAIN_BATCH)
    ]
    progress = Progress(1 + len(retain) + request.max_evals * getattr(config, "max_layers", 1))
    pair = feature_pair(text, comfy_tokenizer(clip, layout), forget_feats.shape[1],
                        float(tower.adapter.logit_scale().detach()), progress.tick)
    forget = [(forget_feats, forget_texts(request, forget_feats.shape[0]))]
    inner = tower.metrics(pair, prepare_pairs(pair, forget, "forget"), prepare_pairs(pair, retain, "retain"),
                          request.concept, request.seed)

    def metrics() -> tuple[float, float]:
        out = inner()
        progress.tick()
        return out

    result = run_slug(pair, forget, retain, config, metrics=metrics)
    dtype = clip.cond_stage_model.state_dict()[layout.prefix + result.layer.removeprefix("text_model.")].dtype
    with base_weight(text, result.layer, bases):
        patch = result.to_patch(pair, request.concept.strip(), dtype=dtype)
    plot = torch.from_numpy(plot_array(result.scores, result.layer)).float().div(255.0)[None]  # (1, H, W, 3)
    return patch, plot
