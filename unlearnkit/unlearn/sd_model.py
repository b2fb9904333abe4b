"""A Stable Diffusion model as SLUG edits it: the text encoder's linear weights and the UNet's cross-attention
K/V projections, under one qualified name each ("text_encoder.<name>" / "unet.<name>").

Text enters an SD UNet only through ``attn2.to_k`` / ``attn2.to_v`` of its transformer blocks, applied to
every token state the text encoder returns (the layers UCE, Gandikota et al. 2024, edits in closed form).
So one gradient pass, one Pareto ranking and one step search cover both towers. Layout-free: the UNet is
called through ``call_unet`` (diffusers' ``UNet2DConditionModel`` and LDM / ComfyUI ``UNetModel`` calls are
given), and its K/V weights are found by name suffix, which both layouts share.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .adapter import candidate_layers

TEXT_ENCODER, UNET = "text_encoder", "unet"
TOWERS = (TEXT_ENCODER, UNET)
KV_SUFFIXES = ("attn2.to_k.weight", "attn2.to_v.weight")
PREDICTION_TYPES = ("epsilon", "v_prediction")

TextStates = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (encoder, ids (B, L)) -> states (B, L, W)
# (unet, x_t, t, states) -> prediction
UNetCall = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def last_hidden_state(encoder: nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    """SD1's conditioning: a ``CLIPTextModel``'s last hidden states (B, L, width)."""
    return encoder(input_ids=token_ids).last_hidden_state


def diffusers_unet(unet: nn.Module, x_t: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """A diffusers ``UNet2DConditionModel``'s prediction for x_t (B, C, h, w) at integer steps t (B,)."""
    return unet(x_t, t, encoder_hidden_states=states).sample


def ldm_unet(unet: nn.Module, x_t: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """An LDM / ComfyUI ``UNetModel``'s prediction (the same x_t and t: no sigma scaling)."""
    return unet(x_t, timesteps=t, context=states)


def is_cross_attention_kv(name: str) -> bool:
    """``…attn2.to_k.weight`` / ``…attn2.to_v.weight``: where the text states enter the UNet."""
    return name.endswith(KV_SUFFIXES)


def kv_kind(name: str) -> str:
    """"k" or "v" for a cross-attention K/V weight name."""
    if not is_cross_attention_kv(name):
        raise ValueError(f"layer: {name!r} is not a cross-attention K/V weight (…attn2.to_k/to_v.weight)")
    return "k" if name.endswith(KV_SUFFIXES[0]) else "v"


def split_name(qualified: str) -> tuple[str, str]:
    """"unet.down_blocks.1…to_k.weight" -> ("unet", "down_blocks.1…to_k.weight")."""
    tower, _, name = qualified.partition(".")
    if tower not in TOWERS or not name:
        raise ValueError(f"layer: expected a name starting with one of {TOWERS}, got {qualified!r}")
    return tower, name


@dataclass
class SDModel:
    """A text encoder and a UNet whose layers SLUG may edit, and how to call them.

    ``alphas_cumprod`` (T,): the noise schedule's abar_t; ``prediction_type``: what the UNet predicts
    ("epsilon" or "v_prediction"). ``modules`` holds both towers under their names, so
    ``dict(sd.modules.named_parameters())`` is keyed by the qualified layer names used in this package.
    """

    text_encoder: nn.Module
    unet: nn.Module
    alphas_cumprod: torch.Tensor
    prediction_type: str = "epsilon"
    encode_text: TextStates = last_hidden_state
    call_unet: UNetCall = diffusers_unet
    modules: nn.ModuleDict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type: expected one of {PREDICTION_TYPES}, "
                             f"got {self.prediction_type!r}")
        if self.alphas_cumprod.dim() != 1 or len(self.alphas_cumprod) < 2:
            raise ValueError(f"alphas_cumprod: expected (T,) with T >= 2, "
                             f"got {tuple(self.alphas_cumprod.shape)}")
        self.modules = nn.ModuleDict({TEXT_ENCODER: self.text_encoder, UNET: self.unet})
        self.check_widths()

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def kv_projections(self) -> dict[str, nn.Module]:
        """The UNet's cross-attention K/V projections by weight name (model order)."""
        modules = dict(self.unet.named_modules())
        return {n: modules[n.removesuffix(".weight")] for n, _ in self.unet.named_parameters()
                if is_cross_attention_kv(n)}

    def check_widths(self) -> None:
        """The UNet's K/V projections must read the text encoder's width (a clear error otherwise)."""
        widths = {int(p.shape[1]) for n, p in self.unet.named_parameters() if is_cross_attention_kv(n)}
        if not widths:
            raise ValueError("model: the UNet has no cross-attention K/V projections "
                             "(attn2.to_k / attn2.to_v)")
        hidden = getattr(getattr(self.text_encoder, "config", None), "hidden_size", None)
        if hidden is not None and widths != {int(hidden)}:
            raise ValueError(f"model: its cross-attention reads text states of width {sorted(widths)}, "
                             f"the text encoder (clip) gives width {hidden}: they are not one SD model")

    def text_states(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The conditioning (B, L, width) for token ids (B, L), differentiable when grad is enabled."""
        return self.encode_text(self.text_encoder, token_ids.to(self.device))

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """The UNet's output (eps or v) for x_t (B, C, h, w), integer steps t (B,), states (B, L, W)."""
        return self.call_unet(self.unet, x_t, t, states)

    def named_layers(self, towers: Iterable[str] = TOWERS) -> list[tuple[str, nn.Parameter]]:
        """Candidate layers (qualified name, weight) of the given towers, in model order."""
        towers = tuple(towers)
        if not towers or any(t not in TOWERS for t in towers):
            raise ValueError(f"towers: expected a non-empty subset of {TOWERS}, got {towers}")
        out = []
        if TEXT_ENCODER in towers:  # SLUG's candidates: linear weights, no embeddings / norms / biases
            out += [(f"{TEXT_ENCODER}.{n}", p) for n, p in candidate_layers(self.text_encoder)]
        if UNET in towers:
            out += [(f"{UNET}.{n}", p) for n, p in self.unet.named_parameters() if is_cross_attention_kv(n)]
        return out
