"""The tiny world as AUTOMATIC1111 / Forge load it: a checkpoint, its ``.yaml``, a local text-encoder folder.

The tiny UNet and VAE are not SD1.5-sized, so the webui cannot tell their architecture from the keys; the
webui's own convention for such checkpoints (SD2, inpainting) is a ``NAME.yaml`` beside ``NAME.safetensors``
holding LDM's model config, which is what :func:`export_for_webui` writes. The tiny text encoder is not
``openai/clip-vit-large-patch14``: the yaml's ``cond_stage_config`` names a local folder (tokenizer files
and the encoder's ``config.json``) as ``FrozenCLIPEmbedder``'s ``version``, so nothing is fetched from a hub;
the webui builds the encoder from that config and loads its weights from the checkpoint.

The tiny VAE downsamples by 2 where the webui assumes 8: ask the webui for 64x64 to sample the 8x8 latents the
tiny UNet was trained on (16x16 images come out); img2img, which encodes the init image at the asked size,
cannot run on it (the webui's noise is 8x8, the encoded latent 32x32).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..io import atomic_write
from . import store
from .export import ldm_unet_config, ldm_vae_config, save_ldm_checkpoint
from .tokenizer import MAX_LENGTH, write_tokenizer_files

log = logging.getLogger(__name__)

TEXT_ENCODER_FOLDER = "tinyworld_text_encoder"
SPECIAL_TOKENS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                  "pad_token": "<|endoftext|>"}  # EOS padding, as SD1.x


def ldm_unet_params(unet_config: dict) -> dict:
    """LDM ``UNetModel`` parameters (the yaml's ``unet_config.params``) of a diffusers UNet config."""
    u = ldm_unet_config(unet_config)
    return {
        "image_size": u["image_size"], "in_channels": u["in_channels"], "out_channels": u["out_channels"],
        "model_channels": u["model_channels"],
        # LDM adds attention at the downsampling rates listed here: 1 at the first level, then 2, 4, ...
        "attention_resolutions": [2**i for i, kind in enumerate(unet_config["down_block_types"])
                                  if "CrossAttn" in kind],
        "num_res_blocks": u["num_res_blocks"][0], "channel_mult": u["channel_mult"],
        "num_head_channels": u["num_head_channels"], "use_spatial_transformer": True, "transformer_depth": 1,
        "context_dim": u["context_dim"], "use_linear_in_transformer": u["use_linear_in_transformer"],
        "use_checkpoint": False, "legacy": False,
    }


def ldm_model_config(config: dict, text_encoder_dir: Path) -> dict:
    """The webui's model config (LDM ``LatentDiffusion``, SD1.x noise schedule) of the tiny world's config."""
    vae = ldm_vae_config(config["vae"])
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.00085, "linear_end": 0.012, "num_timesteps_cond": 1, "timesteps": 1000,
        "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": config["unet"]["sample_size"],
        "channels": config["unet"]["in_channels"], "cond_stage_trainable": False,
        "conditioning_key": "crossattn",
        "monitor": "val/loss_simple_ema", "scale_factor": float(config["vae"]["scaling_factor"]),
        "use_ema": False,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                        "params": ldm_unet_params(config["unet"])},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
            "embed_dim": vae["embed_dim"], "monitor": "val/rec_loss", "ddconfig": vae["ddconfig"],
            "lossconfig": {"target": "torch.nn.Identity"}}},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                              "params": {"version": str(text_encoder_dir)}},
    }}}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):  # never exponent notation: YAML 1.1 loaders read "1e-05" as a string
        return f"{value:.17f}".rstrip("0").rstrip(".") if "e" in repr(value) else repr(value)
    return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar


def to_yaml(value: dict, indent: int = 0) -> str:
    """Block-style YAML of nested dicts whose leaves are scalars or lists of scalars (flow style)."""
    lines = []
    for key, item in value.items():
        pad = " " * indent
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
        elif isinstance(item, (list, tuple)):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in item)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(lines) + ("\n" if indent == 0 else "")


def write_text_encoder_folder(folder: Path, config: dict) -> Path:
    """tokenizer files + ``config.json`` of the tiny text encoder: what ``from_pretrained(folder)`` reads."""
    write_tokenizer_files(folder)
    text_config = {**config["clip"]["text_config"], "model_type": "clip_text_model",
                   "architectures": ["CLIPTextModel"]}
    (folder / "config.json").write_text(json.dumps(text_config, indent=1, sort_keys=True) + "\n")
    tokenizer = {"model_max_length": MAX_LENGTH, "tokenizer_class": "CLIPTokenizer", **SPECIAL_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=1, sort_keys=True) + "\n")
    return folder


def export_for_webui(out: str | Path, unet: str = "paragon", weights_dir: Path | None = None,
                     text_encoder_dir: str | Path | None = None) -> list[Path]:
    """Write ``out`` (SD1.x-layout checkpoint), ``out``'s ``.yaml`` and the text-encoder folder (by default
    ``tinyworld_text_encoder/`` beside ``out``, shared by every exported checkpoint); returns the 3 paths."""
    out = Path(out).resolve()
    if out.suffix != ".safetensors":
        raise ValueError(f"--out: a webui checkpoint ends in .safetensors, got {str(out)!r}")
    wd = weights_dir or store.WEIGHTS_DIR
    config = store.read_config(wd)
    folder = Path(text_encoder_dir).resolve() if text_encoder_dir else out.parent / TEXT_ENCODER_FOLDER
    write_text_encoder_folder(folder, config)
    save_ldm_checkpoint(out, unet=unet, weights_dir=wd)
    yaml_path = out.with_suffix(".yaml")
    text = to_yaml(ldm_model_config(config, folder))
    atomic_write(yaml_path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    log.info("wrote %s and %s (text encoder folder %s)", out.name, yaml_path.name, folder)
    return [out, yaml_path, folder]
