"""ComfyUI nodes for the embedded tiny world (see ARCHITECTURE.md, "The tiny world"): load its models, get
its shards' images.

The tiny UNet is SD1-architecture but not SD1.5-sized, so ComfyUI cannot detect it from its keys;
the loader builds it the way ComfyUI builds a checkpoint it detected — ``comfy.supported_models.SD15``
with the tiny ``unet_config`` (``unlearnkit.tinyworld.export.ldm_unet_config``), the tiny VAE's
scaling factor as its latent format, ``comfy.sd.CLIP`` with a 64-wide text-model config and
``comfy.sd.VAE`` with the tiny VAE config — from the exported LDM-layout state dicts.
Latents are 4×8×8 for 16-px images: use Empty Latent Image 64×64 (ComfyUI divides by 8).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from typing import Any

import torch

from ..unlearnkit import io

logger = logging.getLogger(__name__)

CATEGORY = "UnlearnKit/Tiny world"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
IGNORED_CLIP_KEYS = ("position_ids", "text_projection", "logit_scale")


def unet_choices() -> list[str]:
    """Every tiny-world UNet name, those whose weights exist first."""
    from ..unlearnkit.tinyworld import store
    from ..unlearnkit.tinyworld.data import shard_names

    names = ["base", "paragon"] + [f"{s}/{n}" for s in store.SHARD_SETS for n in shard_names(s)]
    return sorted(names, key=lambda n: not store.unet_path(n).is_file())


def _mtime(path: os.PathLike) -> float:
    return os.path.getmtime(path) if os.path.exists(path) else 0.0


@functools.lru_cache(maxsize=2)
def _text_encoder_sd(clip_path: str, mtime: float) -> dict[str, torch.Tensor]:
    """The SD text encoder as `cond_stage_model.*` (CLIP's trained token rows rebuilt by the store)."""
    from ..unlearnkit.tinyworld import export, store

    return export.text_encoder_to_ldm(store.load_text_encoder().state_dict())


def ldm_state_dict(unet: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(LDM-layout state dict of UNet ``unet`` + VAE + text encoder, the world's config)."""
    from ..unlearnkit.tinyworld import export, store

    path = store.unet_path(unet)
    if not path.is_file():
        raise ValueError(f"unet: tiny-world UNet {unet!r} has no weights at {path}; train the tiny world "
                         "(`python -m unlearnkit tinyworld train`) or pick another")
    cfg = store.read_config()
    sd = export.unet_to_ldm(io.load_state_dict(path)[0], cfg["unet"])
    sd.update(export.vae_to_ldm(io.load_state_dict(store.WEIGHTS_DIR / "vae.safetensors")[0], cfg["vae"]))
    clip_path = store.WEIGHTS_DIR / "clip.safetensors"
    sd.update(_text_encoder_sd(str(clip_path), _mtime(clip_path)))
    return sd, cfg


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _check_keys(what: str, expected: set[str], given: set[str], ignore: tuple[str, ...] = ()) -> None:
    missing = sorted(k for k in expected - given if not any(part in k for part in ignore))
    unexpected = sorted(k for k in given - expected if not any(part in k for part in ignore))
    if missing or unexpected:
        raise ValueError(
            f"tiny world {what}: does not fit ComfyUI's model (missing {missing[:4]}, unexpected "
            f"{unexpected[:4]})"
        )


def clip_config_file(text_config: dict) -> str:
    """A CLIPTextModel config json for ComfyUI's SDClipModel (2024-03 reads it from a file)."""
    config = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
              "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
              "projection_dim": text_config["hidden_size"], "torch_dtype": "float32", **text_config}
    text = json.dumps(config, sort_keys=True)
    path = os.path.join(
        tempfile.gettempdir(),
        f"unlearnkit_tinyworld_clip_{hashlib.sha1(text.encode()).hexdigest()[:12]}.json",
    )
    if not os.path.exists(path):
        io.atomic_write(path, lambda tmp: open(tmp, "w").write(text), overwrite=True)
    return path


def model_config(cfg: dict) -> Any:
    """ComfyUI's SD15 model config with the tiny unet_config and the tiny VAE's latent scale."""
    import comfy.latent_formats
    import comfy.supported_models

    from ..unlearnkit.tinyworld import export

    unet_config = {
        **export.ldm_unet_config(cfg["unet"]),
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }
    config = comfy.supported_models.SD15(unet_config)
    config.latent_format = comfy.latent_formats.SD15(scale_factor=float(cfg["vae"]["scaling_factor"]))
    return config


def build_model(sd: dict[str, torch.Tensor], config: Any) -> Any:
    """ModelPatcher over ComfyUI's BaseModel built from ``config`` (as checkpoint loading does)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    unet_sd = _strip(sd, UNET_PREFIX)
    params = sum(v.numel() for v in unet_sd.values())
    load_device = mm.get_torch_device()
    dtype = mm.unet_dtype(model_params=params, supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(
        dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes)
    )
    model = config.get_model(sd, UNET_PREFIX, device=mm.unet_offload_device())
    _check_keys("UNet", set(model.diffusion_model.state_dict()), set(unet_sd))
    model.load_model_weights(sd, UNET_PREFIX)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=load_device, offload_device=mm.unet_offload_device()
    )


def build_clip(sd: dict[str, torch.Tensor], cfg: dict, config: Any) -> Any:
    """comfy.sd.CLIP with SD1's tokenizer and a text model of the tiny world's width."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import folder_paths

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    target.params = {"clip_model": comfy.sd1_clip.SDClipModel, "return_projected_pooled": False,
                     "textmodel_json_config": clip_config_file(cfg["clip"]["text_config"])}
    clip = comfy.sd.CLIP(target, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    clip_sd = config.process_clip_state_dict(dict(sd))
    _check_keys("text encoder", set(clip.cond_stage_model.state_dict()), set(clip_sd), IGNORED_CLIP_KEYS)
    clip.load_sd(clip_sd, full_model=True)
    return clip


def build_vae(sd: dict[str, torch.Tensor], cfg: dict) -> Any:
    """comfy.sd.VAE with the tiny AutoencoderKL config; 16 px <-> 8×8 latents."""
    import comfy.sd

    from ..unlearnkit.tinyworld import export

    params = export.ldm_vae_config(cfg["vae"])
    vae_sd = _strip(sd, VAE_PREFIX)
    vae = comfy.sd.VAE(sd=vae_sd, config={"params": params})
    _check_keys("VAE", set(vae.first_stage_model.state_dict()), set(vae_sd))
    vae.downscale_ratio = vae.upscale_ratio = 2 ** (len(params["ddconfig"]["ch_mult"]) - 1)
    return vae


class LoadTinyWorldNode:
    """The tiny world's MODEL, CLIP and VAE for one of its UNets (base, paragon, style or split shards)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "unet": (
                    unet_choices(),
                    {
                        "tooltip": "base: public data; paragon: all private data; "
                        "style/*, split/*: shards trained on one private source each."
                    },
                )
            }
        }

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The tiny world's UNet (use a 64x64 empty latent: 16 px images).",
                       "Its CLIP text encoder.", "Its VAE.")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Load the embedded tiny Stable Diffusion (16-px handwritten digits in 5 styles). "
        "Use Empty Latent Image 64×64 for its 8×8 latents; prompts like 'a handwritten digit 3 in bold "
        "style'."
    )

    def load(self, unet: str) -> tuple[Any, Any, Any]:
        sd, cfg = ldm_state_dict(unet)
        logger.info("Load Tiny World: UNet %s", unet)
        config = model_config(cfg)
        return build_model(sd, config), build_clip(sd, cfg, config), build_vae(sd, cfg)


def image_sources() -> list[str]:
    from ..unlearnkit.tinyworld.data import shard_names

    return [f"{s}/{n}" for s in ("style", "split") for n in shard_names(s)] + ["public", "held-out"]


class TinyWorldImagesNode:
    """Training images of a tiny-world data source (e.g. a shard's), as an IMAGE batch."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "source": (
                    image_sources(),
                    {
                        "tooltip": "style/<style>, split/split<k>: a shard's training data; "
                        "public, held-out: every style."
                    },
                ),
                "count": (
                    "INT",
                    {
                        "default": 64,
                        "min": 1,
                        "max": 4096,
                        "tooltip": "Images to draw (at most the source's size).",
                    },
                ),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1,
                                 "tooltip": "Which images are drawn (same seed, same images)."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("Real 16 px images of the chosen data source.",)
    FUNCTION = "images"
    CATEGORY = CATEGORY
    DESCRIPTION = "Images of one tiny-world data source (16×16 RGB), e.g. to train a shard gate."

    def images(self, source: str, count: int, seed: int) -> tuple[torch.Tensor]:
        from ..unlearnkit.tinyworld.data import load_world

        world = load_world()
        if source == "public":
            subset = world.public_set()
        elif source == "held-out":
            subset = world.held_out_set()
        elif "/" in source:
            subset = world.shard_source(*source.split("/", 1))
        else:
            raise ValueError(f"source: expected one of {image_sources()}, got {source!r}")
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(subset), generator=g)[:count]
        images = subset.images[pick]  # (B, 3, 16, 16) in [-1, 1]
        return (((images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous().float(),)
