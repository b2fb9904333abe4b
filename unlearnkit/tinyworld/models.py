"""Builders of the tiny world's models, with the classes real Stable Diffusion uses.

CLIPModel (text tower = the SD text encoder), AutoencoderKL (16 px -> 4×8×8 latents),
UNet2DConditionModel (cross-attention on the 64-wide text states), and the judges' small CNN.
"""
from __future__ import annotations

import torch
from torch import nn

from .tokenizer import MAX_LENGTH

TEXT_WIDTH = 64
VOCAB = 49408
BOS_ID, EOS_ID = 49406, 49407
LATENT_CHANNELS = 4
EMBEDDING_SEED = 49408

CLIP_CONFIG: dict = {
    "text_config": {
        "vocab_size": VOCAB, "hidden_size": TEXT_WIDTH, "intermediate_size": 4 * TEXT_WIDTH,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": MAX_LENGTH,
        "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": EOS_ID, "hidden_act": "quick_gelu",
    },
    "vision_config": {
        "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 16, "patch_size": 4, "num_channels": 3, "hidden_act": "quick_gelu",
    },
    "projection_dim": 64,
}

VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS, "sample_size": 16,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 32, "scaling_factor": 1.0,
}

# ComfyUI's LDM modules hard-code GroupNorm(32, ·): channels must be multiples of 32 and groups 32.
UNET_CONFIG: dict = {
    "sample_size": 8, "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
    "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": 8, "norm_num_groups": 32,
    "use_linear_projection": False,
}

SCHEDULER_CONFIG: dict = {  # SD1.x's training schedule (also what ComfyUI's SD15 model uses)
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
}


def build_clip(config: dict | None = None):
    """A fresh CLIPModel (text + image towers)."""
    from transformers import CLIPConfig, CLIPModel

    cfg = config or CLIP_CONFIG
    clip = CLIPModel(CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"],
                                projection_dim=cfg["projection_dim"]))
    with torch.no_grad():
        clip.text_model.embeddings.token_embedding.weight.copy_(token_embedding_init(clip.config.text_config.vocab_size))
    return clip


def token_embedding_init(vocab: int, width: int = TEXT_WIDTH) -> torch.Tensor:
    """Seeded N(0, 0.02²) token embedding (vocab, width): rows that no caption uses stay exactly this."""
    return torch.randn(vocab, width, generator=torch.Generator().manual_seed(EMBEDDING_SEED)) * 0.02


def text_encoder_from_clip(clip) -> nn.Module:
    """The SD text encoder: a CLIPTextModel holding a copy of the CLIP text tower's weights."""
    from transformers import CLIPTextModel

    enc = CLIPTextModel(clip.config.text_config)
    # transformers 5: enc is the tower itself; 4.x: enc.text_model is (keys match clip.text_model's either
    # way)
    getattr(enc, "text_model", enc).load_state_dict(clip.text_model.state_dict())
    return enc.eval()


def build_vae(config: dict | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or VAE_CONFIG))


def build_unet(config: dict | None = None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(config or UNET_CONFIG))


def build_scheduler(kind: str = "ddim"):
    """The sampling scheduler (ddim, ddpm, euler) with SD1.x's betas."""
    from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

    classes = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "euler": EulerDiscreteScheduler}
    if kind not in classes:
        raise ValueError(f"scheduler: expected one of {tuple(classes)}, got {kind!r}")
    cfg = dict(SCHEDULER_CONFIG)
    if kind != "ddim":
        cfg.pop("set_alpha_to_one")
    if kind == "euler":
        cfg.pop("clip_sample")
    return classes[kind](**cfg)


class JudgeNet(nn.Module):
    """Small CNN classifier on (B, 3, 16, 16) images in [-1, 1]; ``features`` gives the 64-d FID space."""

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),  # 8×8
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),  # 4×4
            nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, 16, 16):
            raise ValueError(f"images: expected shape (B, 3, 16, 16) in [-1, 1], got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def encode_prompts(text_encoder, prompts: list[str], batch: int = 256) -> torch.Tensor:
    """SD conditioning: the text encoder's last hidden states (B, 77, width) for padded prompts."""
    from .tokenizer import tokenize

    ids = tokenize(list(prompts))
    return torch.cat(
        [text_encoder(input_ids=ids[i : i + batch]).last_hidden_state for i in range(0, len(ids), batch)]
    )


def image_embeds(clip, pixels: torch.Tensor) -> torch.Tensor:
    """CLIP image features (B, 64), unnormalised; pixels (B, 3, 16, 16) in [-1, 1] (no extra
    preprocessing)."""
    return clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)


def text_embeds(clip, input_ids: torch.Tensor) -> torch.Tensor:
    """CLIP text features (B, 64), unnormalised, pooled at the first EOS (works on any transformers
    version)."""
    return clip.text_projection(clip.text_model(input_ids=input_ids).pooler_output)
