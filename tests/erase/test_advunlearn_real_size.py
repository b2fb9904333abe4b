"""AdvUnlearn at SD1.5 size in bf16 (as a GPU loads it): one iteration with one PGD attack step (-m slow)."""
import math

import pytest
import torch
from real_size_models import SD1_TEXT, SD15_UNET, random_text_encoder, random_unet

from unlearnkit.erase import Components, EraseConfig, train_erased_encoder

CONFIG = EraseConfig(concept=("a photo of a church",), retain=("a photo of a dog",), attack="pgd",
                     iterations=1, warmup=0, attack_steps=1, sampler_steps=2, bank_size=1, retain_batch=1,
                     lr=1e-5)


@pytest.mark.slow
def test_one_iteration_at_sd15_size_in_bf16(sd_tokenizer):
    from diffusers import DDIMScheduler

    unet = random_unet({**SD15_UNET, "sample_size": 8}, seed=0, dtype=torch.bfloat16)  # 8x8 latents
    encoder = random_text_encoder(SD1_TEXT, seed=1).to(torch.bfloat16)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    comps = Components(unet, encoder, sd_tokenizer, scheduler, None, "random SD1.5")
    key = "encoder.layers.11.mlp.fc2.weight"
    before = encoder.state_dict()[key].float()
    result = train_erased_encoder(comps, CONFIG, progress=False)
    assert all(math.isfinite(v) for v in result.losses)
    assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}
    after = result.encoder.state_dict()[key]
    assert after.dtype == torch.float32 and (after != before).float().mean() > 0.5
