"""Single-file SD checkpoints (one .safetensors, as ComfyUI and AUTOMATIC1111 users hold them) as the models
``erase train`` / ``erase attack`` work on, offline.

diffusers reads such a file with ``from_single_file`` but fetches the model family's configs from the hub;
given a local folder of configs (no weights) it reads offline. That folder is written here: for the tiny
world's own export from the tiny world's configs, for SD1.x / SD2.x from the configs below (the published
model configs, as data; SD2's 768-v and 512-base files share their keys, so ``--prediction`` says which).
The CLIP tokenizer is built offline from its BPE tables (``tinyworld.tokenizer``). SDXL single files are
refused here (the ComfyUI Erase Concept node erases SDXL).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..erase.components import Components, from_pipeline, prepare_components

TEXT_SD1 = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
            "num_hidden_layers": 12, "hidden_act": "quick_gelu", "projection_dim": 768}
TEXT_SD2 = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
            "num_hidden_layers": 23, "hidden_act": "gelu", "projection_dim": 512}  # SD2 reads layer 23 of 24
UNET_COMMON = {"in_channels": 4, "out_channels": 4, "layers_per_block": 2,
               "block_out_channels": [320, 640, 1280, 1280],
               "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
UNET = {"v1": {**UNET_COMMON, "sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8},
        "v2": {**UNET_COMMON, "sample_size": 96, "cross_attention_dim": 1024,
               "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True}}
VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
       "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
       "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215}
SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
             "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
             "set_alpha_to_one": False, "steps_offset": 1}
INDEX = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
         "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
         "safety_checker": [None, None], "feature_extractor": [None, None]}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def model_family(path: Path) -> tuple[str, dict[str, str]]:
    """("tinyworld" | "v1" | "v2", file metadata); ValueError for other families or files."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    from ..io import load_state_dict

    state, meta = load_state_dict(path)
    if "unlearnkit.unet" in meta:
        return "tinyworld", meta
    kind = infer_diffusers_model_type(state)
    family = {"v1": "v1", "v2": "v2"}.get(kind) or ("v1" if kind.startswith("v1") else None)
    if family is None:
        raise ValueError(f"--checkpoint {str(path)!r}: a {kind!r} model; the CLI erases SD1.x/SD2.x single "
                         "files (SDXL: use the ComfyUI Erase Concept node)")
    return family, meta


def write_tiny_world_configs(folder: Path, meta: dict[str, str]) -> None:
    """The tiny world's own component configs (the file holds its weights)."""
    from ..tinyworld.pipeline import load_pipeline

    ref = load_pipeline(unet=meta.get("unlearnkit.unet", "paragon"))
    ref.save_config(folder)
    for name in ("unet", "vae", "scheduler"):
        getattr(ref, name).save_config(folder / name)
    ref.text_encoder.config.save_pretrained(folder / "text_encoder")
    ref.tokenizer.save_pretrained(folder / "tokenizer")


def write_sd_configs(folder: Path, family: str, prediction: str) -> None:
    from transformers import CLIPTextConfig

    from ..tinyworld.tokenizer import clip_tokenizer

    _write(folder / "model_index.json", INDEX)
    _write(folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", **UNET[family]})
    _write(folder / "vae" / "config.json", {"_class_name": "AutoencoderKL", **VAE})
    _write(folder / "scheduler" / "scheduler_config.json", {**SCHEDULER, "prediction_type": prediction})
    text = TEXT_SD1 if family == "v1" else TEXT_SD2
    config = CLIPTextConfig(**text, vocab_size=49408, max_position_embeddings=77)
    config.save_pretrained(folder / "text_encoder")
    tokenizer = clip_tokenizer()
    if family == "v2":
        tokenizer.pad_token = "!"  # OpenCLIP pads with 0 ("!")
    tokenizer.save_pretrained(folder / "tokenizer")


def checkpoint_components(path: str, prediction: str | None = None,
                          text_encoder: str | None = None) -> Components:
    """The UNet, text encoder, tokenizer, scheduler and VAE of one SD1.x/SD2.x single file, offline."""
    from diffusers import StableDiffusionPipeline

    file = Path(path)
    if not file.is_file() or file.suffix.lower() != ".safetensors":
        raise ValueError(f"--checkpoint {path!r}: expected an existing .safetensors single-file checkpoint")
    family, meta = model_family(file)
    with tempfile.TemporaryDirectory(prefix="unlearnkit-configs-") as tmp:
        folder = Path(tmp)
        if family == "tinyworld":
            write_tiny_world_configs(folder, meta)
        else:
            write_sd_configs(folder, family, prediction or ("v_prediction" if family == "v2" else "epsilon"))
        pipe = StableDiffusionPipeline.from_single_file(
            str(file), config=str(folder), local_files_only=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    if prediction and family == "tinyworld":
        pipe.scheduler.register_to_config(prediction_type=prediction)
    return prepare_components(from_pipeline(pipe, str(file)), text_encoder)
