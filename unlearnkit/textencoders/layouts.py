"""Key layouts of a CLIP text encoder state dict, and conversion to/from Hugging Face keys.

The canonical layout here is what transformers 5 saves for ``CLIPTextModel``:
``embeddings.token_embedding.weight``, ``encoder.layers.0.self_attn.q_proj.weight``,
``final_layer_norm.weight`` (no ``text_model.`` prefix). Everything else is a prefix in front
of that (older transformers, diffusers pipelines, AdvUnlearn ``.pt`` files, LDM/webui and
ComfyUI checkpoints) or the open_clip layout SD2 uses (``cond_stage_model.model.…``),
which is converted the way ComfyUI's ``utils.transformers_convert`` does.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

HF_MARKER = "embeddings.token_embedding.weight"
OPEN_CLIP_MARKER = "transformer.resblocks.0.attn.in_proj_weight"
OPEN_CLIP_TOKEN = "token_embedding.weight"

# prefix in front of the canonical HF keys -> layout name (longest prefixes are matched as given)
HF_PREFIX_LAYOUTS: dict[str, str] = {
    "": "hf",
    "text_model.": "hf_text_model",  # transformers 4, ComfyUI clip.load_sd / standalone clip_l files
    "text_encoder.text_model.": "diffusers_text_encoder",  # AdvUnlearn .pt files
    "cond_stage_model.transformer.text_model.": "ldm_sd1",  # webui / LDM single-file checkpoints
    "cond_stage_model.transformer.": "ldm_sd1_legacy",
    "clip_l.transformer.text_model.": "comfyui_sd1",  # ComfyUI SD1ClipModel / key patches
    "clip_h.transformer.text_model.": "comfyui_sd2",  # ComfyUI SD2ClipModel (after its open_clip conversion)
    "transformer.text_model.": "comfyui_clip_l",  # ComfyUI SDClipModel (inside clip_l)
    "conditioner.embedders.0.transformer.text_model.": "sgm_clip_l",
}
OPEN_CLIP_PREFIX_LAYOUTS: dict[str, str] = {
    "": "open_clip",
    "model.": "open_clip_wrapped",
    "cond_stage_model.model.": "ldm_sd2_open_clip",
    "conditioner.embedders.0.model.": "sgm_sd2_open_clip",
}
# layouts a state dict can be written in (name -> prefix before the canonical HF keys)
OUTPUT_LAYOUTS: dict[str, str] = {
    name: prefix for prefix, name in HF_PREFIX_LAYOUTS.items() if name not in ("ldm_sd1_legacy", "sgm_clip_l")
}

HF_KEY = re.compile(
    r"^(embeddings\.(token|position)_embedding\.weight"
    r"|encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|layer_norm[12]|mlp\.fc[12])\.(weight|bias)"
    r"|final_layer_norm\.(weight|bias))$"
)
IGNORED_SUFFIXES = ("position_ids",)  # buffers some checkpoints carry; rebuilt by the model
OPEN_CLIP_RENAMES = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}
OPEN_CLIP_BLOCK_RENAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
OPEN_CLIP_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
OPEN_CLIP_IN_PROJ = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")


@dataclass(frozen=True)
class Layout:
    """Where a text encoder sits in a state dict: its key prefix and key family."""

    name: str  # e.g. "hf", "ldm_sd1", "ldm_sd2_open_clip", or "prefixed" for unknown prefixes
    prefix: str  # text in front of the canonical HF keys (or of the open_clip keys)
    family: str  # "hf" or "open_clip"


def _layout_name(prefix: str, family: str) -> str:
    table = HF_PREFIX_LAYOUTS if family == "hf" else OPEN_CLIP_PREFIX_LAYOUTS
    return table.get(prefix, "prefixed" if family == "hf" else "open_clip_prefixed")


def find_text_encoders(keys: Iterable[str]) -> list[Layout]:
    """Every CLIP text encoder found in a key set (HF-style or open_clip-style)."""
    keys = set(keys)
    found = []
    for key in sorted(keys):
        if key.endswith(HF_MARKER):
            prefix = key[: -len(HF_MARKER)]
            found.append(Layout(_layout_name(prefix, "hf"), prefix, "hf"))
        elif key.endswith(OPEN_CLIP_MARKER):
            prefix = key[: -len(OPEN_CLIP_MARKER)]
            if prefix + OPEN_CLIP_TOKEN in keys:
                found.append(Layout(_layout_name(prefix, "open_clip"), prefix, "open_clip"))
    return found


def detect_layout(keys: Iterable[str], prefix: str | None = None, what: str = "state dict") -> Layout:
    """The one text encoder in ``keys`` (or the one at ``prefix``); a clear error otherwise."""
    keys = list(keys)
    found = find_text_encoders(keys)
    if prefix is not None:
        found = [layout for layout in found if layout.prefix == prefix]
    if not found:
        looked = f" at prefix {prefix!r}" if prefix is not None else ""
        raise ValueError(
            f"{what}: no CLIP text encoder found{looked} (looked for '…{HF_MARKER}' or the open_clip "
            f"'…{OPEN_CLIP_TOKEN}' + '…{OPEN_CLIP_MARKER}'); first keys: {sorted(keys)[:5]}"
        )
    if len(found) > 1:
        raise ValueError(
            f"{what}: holds {len(found)} text encoders at prefixes {[x.prefix for x in found]}; "
            f"pass prefix= to choose one"
        )
    return found[0]


def _open_clip_to_hf(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One open_clip text-tower key -> its HF key(s); in_proj splits into q, k, v; {} if not part of HF."""
    if key in OPEN_CLIP_RENAMES:
        return {OPEN_CLIP_RENAMES[key]: value}
    match = OPEN_CLIP_IN_PROJ.match(key)
    if match:
        layer, kind = match.groups()
        q, k, v = value.chunk(3, dim=0)  # (3*width, …) -> 3 x (width, …)
        return {f"encoder.layers.{layer}.self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v))}
    match = OPEN_CLIP_BLOCK.match(key)
    if match and match.group(2) in OPEN_CLIP_BLOCK_RENAMES:
        layer, name, kind = match.groups()
        return {f"encoder.layers.{layer}.{OPEN_CLIP_BLOCK_RENAMES[name]}.{kind}": value}
    return {}


def to_hf(
    state_dict: Mapping[str, torch.Tensor], prefix: str | None = None, what: str = "state dict"
) -> tuple[dict[str, torch.Tensor], Layout, tuple[str, ...]]:
    """Canonical HF ``CLIPTextModel`` keys from any supported layout: (hf_state_dict, layout, dropped keys).

    Keys outside the encoder's prefix (a UNet, a VAE) are ignored; keys inside it that a
    ``CLIPTextModel`` does not have (``text_projection``, ``logit_scale``, ``attn_mask``) are
    returned as dropped; ``position_ids`` buffers are ignored silently.
    """
    layout = detect_layout(state_dict.keys(), prefix, what)
    hf: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state_dict.items():
        if not key.startswith(layout.prefix):
            continue
        rest = key[len(layout.prefix) :]
        if rest.endswith(IGNORED_SUFFIXES):
            continue
        if layout.family == "open_clip":
            converted = _open_clip_to_hf(rest, value)
        else:
            converted = {rest: value} if HF_KEY.match(rest) else {}
        if not converted:
            dropped.append(key)
        hf.update(converted)
    if dropped:
        logger.info(
            "%s: ignoring %d key(s) a CLIPTextModel does not have, e.g. %s", what, len(dropped), dropped[:3]
        )
    return hf, layout, tuple(dropped)


def from_hf(hf_state_dict: Mapping[str, torch.Tensor], layout: str = "hf") -> dict[str, torch.Tensor]:
    """Canonical HF keys -> another layout's keys (see ``OUTPUT_LAYOUTS``); tensors are shared, not copied."""
    if layout not in OUTPUT_LAYOUTS:
        raise ValueError(f"layout: unknown {layout!r}; expected one of {sorted(OUTPUT_LAYOUTS)}")
    prefix = OUTPUT_LAYOUTS[layout]
    return {prefix + key: value for key, value in hf_state_dict.items()}
