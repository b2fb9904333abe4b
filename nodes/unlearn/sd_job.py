"""SD SLUG for the "SLUG Unlearn" node when a MODEL and a VAE are connected: the text encoder's linear weights
and the UNet's cross-attention K/V projections are the candidates (``unlearnkit.unlearn.sd_slug``).

Both towers are float32 copies of the weights as the clones compute them without their SLUG patches, the
SLUG patches then added on top (so a new patch stacks with them and is fingerprinted against the unpatched
layer). Forget loss: the UNet's K/V of the forget captions against the same captions naming the anchor;
retain loss: the denoising loss of the retain images (VAE-encoded) with their captions. The step search
generates with DDIM from fixed noise, decodes with the VAE and reads the images with the image tower.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from ...unlearnkit.unlearn import Patch, StepSearchConfig, plot_array
from ...unlearnkit.unlearn.denoising import denoising_batches, draw_pairs
from ...unlearnkit.unlearn.kv_loss import anchor_captions, kv_batches
from ...unlearnkit.unlearn.sd_model import TEXT_ENCODER, UNET, SDModel, ldm_unet, split_name
from ...unlearnkit.unlearn.sd_sampling import fixed_noise_generator
from ...unlearnkit.unlearn.sd_slug import SDSlugConfig, SDSlugResult, run_sd_slug
from ..clip_weights import effective_weights
from .comfy_patches import applied_slug_patches, not_slug
from .sd_search import search_metrics, tiny_retain_images
from .slug_job import Progress, SlugRequest, add_slug_patches, base_weight, forget_texts
from .towers import ImageTower, TinyWorldTower, comfy_tokenizer, text_tower

logger = logging.getLogger(__name__)

UNET_PREFIX = "diffusion_model."
DRAWS = 2
SEARCH_STEPS = 10
GUIDANCE = 4.0


def schedule(model: Any) -> tuple[torch.Tensor, str]:
    """(alphas_cumprod (T,), prediction type) of a ComfyUI MODEL with a discrete DDPM schedule."""
    import comfy.model_base

    sampling = model.model.model_sampling
    sigmas = getattr(sampling, "sigmas", None)
    types = comfy.model_base.ModelType
    kinds = {types.EPS: "epsilon", types.V_PREDICTION: "v_prediction"}
    kind = kinds.get(getattr(model.model, "model_type", None))
    if sigmas is None or kind is None:
        raise ValueError("model: SLUG on the UNet needs an SD model with a discrete eps/v schedule "
                         "(SD1.x/2.x)")
    return (1.0 / (1.0 + sigmas.detach().float().cpu() ** 2)), kind


def unet_copy(model: Any, device: torch.device) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A float32 copy of the MODEL's UNet, its SLUG patches added on top; (copy, patched layers' bases)."""
    unet = copy.deepcopy(model.model.diffusion_model)
    weights = effective_weights(model, UNET_PREFIX, not_slug)
    state = {k[len(UNET_PREFIX):]: v.detach().to(torch.float32, copy=True) for k, v in weights.items()}
    unet.load_state_dict(state, strict=False)
    for module in unet.modules():
        if hasattr(module, "comfy_cast_weights"):  # plain torch ops: autograd through every weight
            module.comfy_cast_weights = False
    unet = unet.to(device=device, dtype=torch.float32).eval()
    params, bases = dict(unet.named_parameters()), {}
    for key, patch, strength in applied_slug_patches(model):
        name = key[len(UNET_PREFIX):]
        bases.setdefault(name, params[name].detach().clone())
        with torch.no_grad():
            params[name].add_(patch.delta.to(params[name]) * strength)
    return unet, bases


def comfy_unet(unet: nn.Module, x_t: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """ComfyUI's UNet, differentiable: older ComfyUI adds to activations in place (``x += n``) after saving
    them for backward, so with grad on every saved tensor is packed as a copy."""
    if not torch.is_grad_enabled():
        return ldm_unet(unet, x_t, t, states)
    with torch.autograd.graph.saved_tensors_hooks(torch.clone, lambda saved: saved):
        return ldm_unet(unet, x_t, t, states)


def text_encode(clip: Any):
    """SD's conditioning from the text model: the last hidden states, or (CLIP skip) an earlier layer's
    through the final layer norm, as ComfyUI's SD1 CLIP computes it."""
    idx = getattr(clip, "layer_idx", None)
    if idx is None or int(idx) >= -1:
        return lambda encoder, ids: encoder(input_ids=ids).last_hidden_state
    return lambda encoder, ids: encoder.final_layer_norm(
        encoder(input_ids=ids, output_hidden_states=True).hidden_states[int(idx)])


class Pixels:
    """ComfyUI VAE + MODEL latent scaling: images <-> the latents the UNet reads."""

    def __init__(self, model: Any, vae: Any, tower: ImageTower) -> None:
        self.model, self.vae, self.tower = model, vae, tower

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.model.process_latent_in(self.vae.encode(images[..., :3])).float()

    @torch.no_grad()
    def read(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> the image tower's input (decoded, cropped, normalised)."""
        images = self.vae.decode(self.model.model.process_latent_out(latents.to(torch.float32)))
        return self.tower.pixels(images.float().cpu(), "generated images")


def run_sd(clip: Any, model: Any, vae: Any, tower: ImageTower, forget_images: torch.Tensor | None,
           retain_images: torch.Tensor | None, request: SlugRequest) -> tuple[Patch, torch.Tensor]:
    """The node's SD path: inputs checked, retain pairs chosen, run outside ComfyUI's inference mode."""
    request.check()
    if vae is None:
        raise ValueError("vae: connect the model's VAE (SLUG with a model judges each step on generated "
                         "images)")
    if forget_images is None or forget_images.ndim != 4 or forget_images.shape[0] == 0:
        raise ValueError("forget_images: no images; give a few images of the concept to forget")
    with torch.inference_mode(False), torch.enable_grad():
        if retain_images is not None and retain_images.shape[0] > 0:
            captions = [line.strip() for line in request.retain_captions.splitlines() if line.strip()]
            if len(captions) != retain_images.shape[0]:
                raise ValueError(f"retain_captions: give one caption per retain image, one per line "
                                 f"({retain_images.shape[0]} images, {len(captions)} captions)")
            retain = (retain_images.clone(), captions)
        elif isinstance(tower, TinyWorldTower):
            retain = tiny_retain_images(request.concept, request.seed)
        else:
            raise ValueError("retain_images: give retain images and captions (only the tiny world has its "
                             "own)")
        return run_sd_on_comfy(clip, model, vae, tower, forget_images.clone(), retain, request)


def run_sd_on_comfy(clip: Any, model: Any, vae: Any, tower: ImageTower, forget_images: torch.Tensor,
                    retain: tuple[torch.Tensor, list[str]],
                    request: SlugRequest) -> tuple[Patch, torch.Tensor]:
    """SD SLUG on the CLIP's text encoder and the MODEL's UNet: (patch, plot as IMAGE (1, H, W, 3)).
    ``retain``: (images (B, H, W, C) in [0, 1], one caption each)."""
    device = clip.patcher.load_device
    text, layout = text_tower(clip, tower.projection, not_slug, device)
    bases = add_slug_patches(text, clip, layout.prefix)
    text_bases = {k.removeprefix("text_model."): v for k, v in bases.items()}
    unet, unet_bases = unet_copy(model, device)
    alphas, kind = schedule(model)
    sd = SDModel(text.text_model, unet, alphas, kind, text_encode(clip), comfy_unet)
    tokenize = comfy_tokenizer(clip, layout)
    pixels = Pixels(model, vae, tower)
    captions = forget_texts(request, forget_images.shape[0])
    captions = [captions] * forget_images.shape[0] if isinstance(captions, str) else captions
    anchors = anchor_captions(captions, request.concept, request.anchor)
    forget = kv_batches(sd, tokenize(captions), tokenize(anchors))
    retain_ids = tokenize(retain[1])
    pairs = draw_pairs(pixels.latents(retain[0]), retain_ids, DRAWS, len(alphas), request.seed)
    latent_shape = tuple(pixels.latents(forget_images[:1]).shape[1:])
    generate = fixed_noise_generator(sd, tokenize, pixels.read, latent_shape, SEARCH_STEPS, GUIDANCE,
                                     request.seed + 1)
    inner = search_metrics(tower, generate, request.concept, request.anchor, captions, retain[1])
    progress = Progress(request.max_evals * SDSlugConfig().max_layers)

    def metrics() -> tuple[float, float]:
        out = inner()
        progress.tick()  # honours Cancel between generations
        return out

    config = SDSlugConfig(layer=qualified_layer(sd, request.layer),
                          search=StepSearchConfig(retain_drop=request.retain_drop,
                                                  max_evals=request.max_evals))
    result = run_sd_slug(sd, forget, denoising_batches(sd, pairs), metrics, config, retain_ids)
    patch = _patch(result, sd, clip, model, layout.prefix, {TEXT_ENCODER: text_bases, UNET: unet_bases},
                   request.concept.strip())
    plot = torch.from_numpy(plot_array(result.scores, result.layer)).float().div(255.0)[None]
    return patch, plot


def qualified_layer(sd: SDModel, layer: str) -> str | None:
    """The candidate the node's ``layer`` names ("text_encoder.…" / "unet.…", or a dotted suffix of one)."""
    layer = layer.strip()
    if not layer:
        return None
    names = [n for n, _ in sd.named_layers()]
    hits = [n for n in names if n == layer or n.endswith("." + layer)]
    if len(hits) != 1:
        raise ValueError(f"layer: {layer!r} matches {len(hits)} candidate layers {hits[:3]}; "
                         f"e.g. {names[0]!r}")
    return hits[0]


def _patch(result: SDSlugResult, sd: SDModel, clip: Any, model: Any, text_prefix: str,
           bases: dict[str, dict[str, torch.Tensor]], concept: str) -> Patch:
    """The result as a patch in the dtype of the weight it goes on, fingerprinted against its base."""
    tower, name = split_name(result.layer)
    if tower == UNET:
        dtype = model.model.diffusion_model.state_dict()[name].dtype
    else:
        dtype = clip.cond_stage_model.state_dict()[text_prefix + name].dtype
    with base_weight(sd.modules[tower], name, bases[tower]):
        return result.to_patch(sd, concept, dtype=dtype)
