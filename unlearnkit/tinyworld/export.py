"""LDM-layout ("original Stable Diffusion") state dicts for ComfyUI and the webui.

Single-file SD1.x checkpoints hold
  model.diffusion_model.*                   the UNet (openaimodel.UNetModel names)
  first_stage_model.*                       the VAE (ldm AutoencoderKL names)
  cond_stage_model.transformer.text_model.* the CLIP text encoder (HF names)
The tiny UNet is not SD1.5-sized, so hosts cannot auto-detect it from the keys; build it from
``ldm_unet_config()`` (ComfyUI: ``comfy.supported_models.SD15(ldm_unet_config())``, then
``load_model_weights``) — the same numbers a ComfyUI `unet_config` takes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_unet_config(unet_config: dict) -> dict:
    """ComfyUI/LDM UNetModel kwargs equivalent to a diffusers UNet2DConditionModel config."""
    ch = list(unet_config["block_out_channels"])
    attn = ["CrossAttn" in t for t in unet_config["down_block_types"]]
    head_dim = unet_config["attention_head_dim"]
    return {
        "in_channels": unet_config["in_channels"],
        "out_channels": unet_config["out_channels"],
        "model_channels": ch[0],
        "channel_mult": [c // ch[0] for c in ch],
        "num_res_blocks": [unet_config["layers_per_block"]] * len(ch),
        "transformer_depth": [1 if a else 0 for a in attn for _ in range(unet_config["layers_per_block"])],
        "transformer_depth_middle": 1,
        "transformer_depth_output": [
            1 if a else 0 for a in attn for _ in range(unet_config["layers_per_block"] + 1)
        ],
        "num_head_channels": head_dim,
        "num_heads": -1,
        "context_dim": unet_config["cross_attention_dim"],
        "use_linear_in_transformer": False,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "image_size": unet_config["sample_size"],
        "use_checkpoint": False,
    }


def unet_key_map(unet_config: dict) -> dict[str, str]:
    """diffusers prefix -> LDM prefix for every block of the UNet (generic in levels and layers_per_block)."""
    n_levels, lpb = len(unet_config["block_out_channels"]), unet_config["layers_per_block"]
    m = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
         "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
         "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
         "mid_block.resnets.1.": "middle_block.2."}
    for i in range(n_levels):
        for j in range(lpb):
            n = 1 + i * (lpb + 1) + j
            m[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{n}.0."
            m[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{n}.1."
        if i < n_levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{1 + i * (lpb + 1) + lpb}.0.op."
        up_attn = "CrossAttn" in unet_config["up_block_types"][i]
        for j in range(lpb + 1):
            n = i * (lpb + 1) + j
            m[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{n}.0."
            m[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{n}.1."
        if i < n_levels - 1:
            m[f"up_blocks.{i}.upsamplers.0.conv."] = (
                f"output_blocks.{i * (lpb + 1) + lpb}.{2 if up_attn else 1}.conv."
            )
    return m


def rename_resnet(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], unet_config: dict) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict -> LDM `model.diffusion_model.*` keys."""
    prefixes = sorted(unet_key_map(unet_config).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in state.items():
        for old, new in prefixes:
            if key.startswith(old):
                rest = key[len(old):]
                if ".resnets." in old or old.startswith("mid_block.resnets"):
                    rest = rename_resnet(rest, RESNET)
                out["model.diffusion_model." + new + rest] = value
                break
        else:
            raise ValueError(f"unet key {key!r}: no LDM name (unexpected architecture)")
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], vae_config: dict) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict -> LDM `first_stage_model.*` keys (attention linears become 1×1
    convs)."""
    n = len(vae_config["block_out_channels"])
    out = {}
    for key, value in state.items():
        k = key
        for part in ("encoder", "decoder"):
            k = k.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.").replace(
                f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."
            )
            k = k.replace(f"{part}.conv_norm_out.", f"{part}.norm_out.")
        if ".mid_block.attentions.0." in k:
            head, rest = k.split(".mid_block.attentions.0.")
            name, leaf = rest.rsplit(".", 1)
            k = f"{head}.mid.attn_1.{VAE_ATTN.get(name, name)}.{leaf}"
            if leaf == "weight" and value.dim() == 2:
                value = value[:, :, None, None]
        for i in range(n):
            k = k.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            k = k.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            k = k.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")
            k = k.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        k = k.replace(".conv_shortcut.", ".nin_shortcut.")
        out["first_stage_model." + k] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel state dict (with or without `text_model.`, transformers 4/5) -> SD1.x
    `cond_stage_model.*` keys."""
    out = {}
    for key, value in state.items():
        k = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + k] = value
    return out


def ldm_checkpoint(unet, text_encoder, vae, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """One SD1.x-layout state dict of the three models (what ComfyUI's CheckpointLoader / the webui read)."""
    sd = {}
    sd.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    sd.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    sd.update(text_encoder_to_ldm(text_encoder.state_dict()))
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in sd.items() if v.is_floating_point()}


def save_ldm_checkpoint(path: Path, unet: str = "paragon", weights_dir: Path | None = None) -> Path:
    """Write the tiny world (with the named UNet) as one `.safetensors` SD1.x-layout checkpoint."""
    import json

    from ..io import save_safetensors
    from . import store

    wd = weights_dir or store.WEIGHTS_DIR
    u, te, vae = store.load_unet(unet, wd), store.load_text_encoder(wd), store.load_vae(wd)
    meta = {"unlearnkit.unet_config": json.dumps(ldm_unet_config(dict(u.config))),
            "unlearnkit.scaling_factor": str(vae.config.scaling_factor), "unlearnkit.unet": unet}
    save_safetensors(path, ldm_checkpoint(u, te, vae), meta, overwrite=True)
    log.info("wrote %s", path)
    return path


def ldm_vae_config(vae_config: dict) -> dict:
    """LDM AutoencoderKL kwargs (ComfyUI: ``comfy.sd.VAE(sd, config={"params": ldm_vae_config(...)})``)."""
    ch = list(vae_config["block_out_channels"])
    return {
        "embed_dim": vae_config["latent_channels"],
        "ddconfig": {
            "double_z": True,
            "z_channels": vae_config["latent_channels"],
            "resolution": vae_config["sample_size"],
            "in_channels": vae_config["in_channels"],
            "out_ch": vae_config["out_channels"],
            "ch": ch[0],
            "ch_mult": [c // ch[0] for c in ch],
            "num_res_blocks": vae_config["layers_per_block"],
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    }
