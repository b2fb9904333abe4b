"""Tiny seeded real models for the extension tests: SD-architecture UNets, CLIP text encoders, LDM
checkpoints."""

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from webui_standin import LdmUNet

from unlearnkit import io


def tiny_unet(seed):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_clip(seed):
    torch.manual_seed(seed)
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=8, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
    ).eval()


def save_checkpoint(path, unet):
    """An LDM/webui single-file checkpoint holding only the UNet (model.diffusion_model.*)."""
    io.save_safetensors(
        path, {f"model.diffusion_model.{k}": v for k, v in LdmUNet(unet).state_dict().items()}
    )
