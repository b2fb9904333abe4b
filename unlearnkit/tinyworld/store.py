"""Reading and writing the tiny world's committed weights (fp16 safetensors + one config.json).

Layout under ``weights/``:
  config.json            model configs, VAE scaling factor, training manifest
  clip.safetensors       CLIPModel (text tower = SD text encoder; image tower for SLUG)
  vae.safetensors        AutoencoderKL
  unet/base.safetensors  base UNet (public, plain style)
  unet/paragon.safetensors               all private sources
  unet/style/<style>.safetensors         style shards (bold, slanted, inverted, outlined)
  unet/split/split<k>.safetensors        random 8-way split shards
  judges/digit.safetensors, judges/style.safetensors
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..io import load_state_dict, save_safetensors
from .models import CLIP_CONFIG, UNET_CONFIG, VAE_CONFIG, JudgeNet, build_clip, build_unet, build_vae

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHARD_SETS = ("style", "split")
TOKEN_KEY = "text_model.embeddings.token_embedding.weight"


def unet_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """File of a UNet: "base", "paragon", "style/bold", "split/split3" (or "bold", "split3")."""
    from .data import shard_names

    if name in ("base", "paragon"):
        return weights_dir / "unet" / f"{name}.safetensors"
    if "/" not in name:
        name = ("split/" if name.startswith("split") else "style/") + name
    shard_set, shard = name.split("/", 1)
    if shard_set not in SHARD_SETS or shard not in shard_names(shard_set):
        raise ValueError(
            f"unet: expected 'base', 'paragon', 'style/<style>' or 'split/split<k>', got {name!r}"
        )
    return weights_dir / "unet" / shard_set / f"{shard}.safetensors"


def save_weights(module: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Save a module's state dict as safetensors in dtype (contiguous, no shared storage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(dtype).contiguous().clone()
        for k, v in module.state_dict().items()
        if v.is_floating_point()
    }
    save_safetensors(path, state, {"format": "pt", "producer": "unlearnkit.tinyworld"}, overwrite=True)
    log.info("saved %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return path


def load_weights(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python -m unlearnkit tinyworld train` to create it")
    state = {k: v.float() for k, v in load_state_dict(path)[0].items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return module.eval()


def read_config(weights_dir: Path = WEIGHTS_DIR) -> dict:
    path = weights_dir / "config.json"
    if not path.is_file():
        return {"clip": CLIP_CONFIG, "vae": VAE_CONFIG, "unet": UNET_CONFIG}
    return json.loads(path.read_text())


def write_config(update: dict, weights_dir: Path = WEIGHTS_DIR) -> dict:
    cfg = read_config(weights_dir)
    cfg.update(update)
    weights_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights_dir / f".config.json.{os.getpid()}"
    tmp.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    os.replace(tmp, weights_dir / "config.json")  # atomic: concurrent stages never read half a file
    return cfg


def init_rows_checksum(init: torch.Tensor) -> str:
    return f"{float(init.double().sum()):.6f}/{float(init.double().abs().sum()):.6f}"


def save_clip(clip, path: Path) -> Path:
    """Save CLIP in fp16, storing only the token-embedding rows that training changed.

    Rows of tokens no caption uses get exactly zero gradient (AdamW without weight decay), so they
    equal their seeded init (models.token_embedding_init) and are rebuilt on load: ~6 MB saved.
    """
    from .models import token_embedding_init

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().half().contiguous().clone()
        for k, v in clip.state_dict().items()
        if v.is_floating_point()
    }
    weight = clip.state_dict()[TOKEN_KEY].detach().float()
    init = token_embedding_init(*weight.shape)
    untouched = (weight == init).all(1) | (weight == init.half().float()).all(1)  # fp32 or fp16-rounded init
    rows = torch.nonzero(~untouched).flatten()
    del state[TOKEN_KEY]
    state[TOKEN_KEY + ".rows"] = rows.to(torch.int64)
    state[TOKEN_KEY + ".values"] = weight[rows].half().contiguous()
    save_safetensors(path, state, {"format": "pt", "producer": "unlearnkit.tinyworld",
                                   "token_embedding_init": init_rows_checksum(init)}, overwrite=True)
    log.info("saved %s (%.2f MB, %d trained token rows)", path, path.stat().st_size / 1e6, len(rows))
    return path


def load_clip(weights_dir: Path = WEIGHTS_DIR):
    """The trained CLIPModel (fp32, eval mode)."""
    from .models import token_embedding_init

    path = weights_dir / "clip.safetensors"
    clip = build_clip(read_config(weights_dir)["clip"])
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python -m unlearnkit tinyworld train` to create it")
    tensors, metadata = load_state_dict(path)
    state = {k: v.float() for k, v in tensors.items()}
    if TOKEN_KEY + ".rows" in state:
        init = token_embedding_init(*clip.state_dict()[TOKEN_KEY].shape)
        expected = metadata.get("token_embedding_init")
        if expected != init_rows_checksum(init):
            raise ValueError(
                f"{path}: this torch rebuilds the seeded token embedding differently "
                f"({init_rows_checksum(init)} != {expected}); retrain CLIP with `tinyworld train --stages "
                "clip`"
            )
        weight = init.half().float()
        weight[state.pop(TOKEN_KEY + ".rows").long()] = state.pop(TOKEN_KEY + ".values")
        state[TOKEN_KEY] = weight
    missing, unexpected = clip.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return clip.eval()


def load_text_encoder(weights_dir: Path = WEIGHTS_DIR):
    """The SD text encoder: a CLIPTextModel with the CLIP text tower's weights."""
    from .models import text_encoder_from_clip

    return text_encoder_from_clip(load_clip(weights_dir))


def load_vae(weights_dir: Path = WEIGHTS_DIR):
    return load_weights(build_vae(read_config(weights_dir)["vae"]), weights_dir / "vae.safetensors")


def load_unet(name: str = "paragon", weights_dir: Path = WEIGHTS_DIR):
    """A UNet2DConditionModel: "base", "paragon", "style/<style>" or "split/split<k>"."""
    return load_weights(build_unet(read_config(weights_dir)["unet"]), unet_path(name, weights_dir))


def load_shards(shard_set: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """{shard name: UNet} of one shard set ("style" or "split")."""
    from .data import shard_names

    return {n: load_unet(f"{shard_set}/{n}", weights_dir) for n in shard_names(shard_set)}


def load_judge(kind: str, weights_dir: Path = WEIGHTS_DIR) -> JudgeNet:
    """The digit (10 classes) or style (5 classes) judge."""
    from .styles import STYLES

    n = {"digit": 10, "style": len(STYLES)}
    if kind not in n:
        raise ValueError(f"judge: expected 'digit' or 'style', got {kind!r}")
    return load_weights(JudgeNet(n[kind]), weights_dir / "judges" / f"{kind}.safetensors")
