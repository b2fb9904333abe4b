
import torch

from unlearnkit.tinyworld.export import (
    ldm_checkpoint,
    ldm_unet_config,
    text_encoder_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)
from unlearnkit.tinyworld.models import build_clip, build_unet, build_vae, text_encoder_from_clip


def test_unet_keys_are_ldm_and_one_to_one():
    unet = build_unet()
    sd = unet_to_ldm(unet.state_dict(), dict(unet.config))
    assert len(sd) == len(unet.state_dict())
    assert all(k.startswith("model.diffusion_model.") for k in sd)
    assert "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight" in sd
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in sd
    assert (
        "model.diffusion_model.output_blocks.1.2.conv.weight" in sd
    )  # upsampler after an attention up block
    cfg = ldm_unet_config(dict(unet.config))
    assert cfg["channel_mult"] == [1, 2] and cfg["context_dim"] == 64 and cfg["transformer_depth"] == [0, 1]


def test_vae_and_text_keys():
    vae = build_vae()
    sd = vae_to_ldm(vae.state_dict(), dict(vae.config))
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].dim() == 4
    assert "first_stage_model.decoder.up.1.upsample.conv.weight" in sd
    te = text_encoder_from_clip(build_clip())
    keys = text_encoder_to_ldm(te.state_dict())
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    full = ldm_checkpoint(build_unet(), te, vae)
    assert all(v.dtype == torch.float16 for v in full.values())
