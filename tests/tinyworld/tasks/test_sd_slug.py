"""SD SLUG on the tiny world's paragon pipeline: the K/V forget loss, one layer and one step, a patch that
erases "bold style" in generation (read by the unedited CLIP), the model left unchanged; a forced UNet layer
gives a UNet patch."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.data import load_world
from unlearnkit.tinyworld.models import LATENT_CHANNELS, text_encoder_from_clip
from unlearnkit.tinyworld.pipeline import build_pipeline
from unlearnkit.tinyworld.tasks import Concept
from unlearnkit.tinyworld.tasks.slug_generation import sd_generation_metrics, sd_search_prompts
from unlearnkit.tinyworld.tasks.slug_pairs import sd_loss_batches, tiny_sd_model
from unlearnkit.unlearn import StepSearchConfig, apply_patch, remove_patch
from unlearnkit.unlearn.sd_model import split_name
from unlearnkit.unlearn.sd_slug import SDSlugConfig, run_sd_slug

BOLD = Concept.parse("bold style")
UNET_LAYER = "unet.up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.weight"


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    clip = store.load_clip()
    pipe = build_pipeline(store.load_unet("paragon"), text_encoder_from_clip(clip), store.load_vae())
    sd = tiny_sd_model(pipe)
    forget, retain, retain_ids = sd_loss_batches(sd, pipe.vae, load_world().public_set(), BOLD, n_forget=16,
                                                 n_retain=48, draws=1)
    metrics = sd_generation_metrics(clip, pipe, BOLD, per_class=4, forget_per_class=16, unnamed=10, steps=8)
    return {"pipe": pipe, "sd": sd, "forget": forget, "retain": retain, "retain_ids": retain_ids,
            "metrics": metrics}


@torch.no_grad()
def forget_loss(batches) -> float:
    rows = [b() for b in batches]
    return sum(float(loss) * n for loss, n in rows) / sum(n for _, n in rows)


def state(sd) -> dict[str, torch.Tensor]:
    return {f"{t}.{k}": v.clone() for t, m in sd.modules.items() for k, v in m.state_dict().items()}


def test_search_prompts_of_a_style():
    p = sd_search_prompts(BOLD, per_class=2, forget_per_class=3, unnamed=4)
    assert len(p.prompts) == 4 + 3 + 2 * 4  # unnamed, bold, the 4 other styles
    assert all("bold style" in t for t, g in zip(p.prompts, p.groups.tolist()) if g == 0)
    with pytest.raises(ValueError, match="style"):
        sd_search_prompts(Concept.parse("digit:7"))


def test_sd_slug_erases_the_style_with_one_layer_and_one_step(world):
    sd = world["sd"]
    before = state(sd)
    config = SDSlugConfig(max_layers=2, search=StepSearchConfig(retain_drop=0.1, max_evals=8))
    result = run_sd_slug(sd, world["forget"], world["retain"], world["metrics"], config, world["retain_ids"])
    after_run = state(sd)
    assert all(torch.equal(before[k], after_run[k]) for k in before)  # SLUG left the model unchanged
    assert result.search.baseline[0] >= 0.9  # bold prompts read as bold before
    assert result.search.success and result.search.forget_metric <= 0.1, result.metrics()
    assert result.search.retain_metric >= result.search.baseline[1] - 0.1
    tower, name = split_name(result.layer)
    patch = result.to_patch(sd, BOLD.name)
    assert patch.target == ("unet" if tower == "unet" else "")
    apply_patch(sd.modules[tower], patch)
    changed = [k for k, v in state(sd).items() if not torch.equal(before[k], v)]
    assert changed == [result.layer]  # one layer
    assert world["metrics"]()[0] <= 0.1  # the patch erases what the search measured
    remove_patch(sd.modules[tower], patch)
    assert all(torch.equal(before[k], v) for k, v in state(sd).items())


def test_the_step_lowers_the_kv_forget_loss_on_a_forced_unet_layer(world):
    sd = world["sd"]
    config = SDSlugConfig(layer=UNET_LAYER, search=StepSearchConfig(retain_drop=1.0, max_evals=3))
    result = run_sd_slug(sd, world["forget"], world["retain"], lambda: (1.0, 1.0), config,
                         world["retain_ids"])
    assert result.layer == UNET_LAYER and result.step > 0
    patch = result.to_patch(sd, BOLD.name)
    assert patch.target == "unet" and patch.layer == UNET_LAYER.removeprefix("unet.")
    loss_before = forget_loss(world["forget"])
    apply_patch(sd.unet, patch)
    loss_after = forget_loss(world["forget"])
    remove_patch(sd.unet, patch)
    assert loss_after < 0.95 * loss_before, (loss_before, loss_after)


def test_fixed_noise_sampler_is_deterministic_and_decodes(world):
    from unlearnkit.tinyworld.tokenizer import tokenize
    from unlearnkit.unlearn.sd_sampling import ddim_timesteps, fixed_noise_generator

    assert ddim_timesteps(1000, 4).tolist() == [999, 666, 333, 0]
    pipe = world["pipe"]
    decode = lambda z: pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample  # noqa: E731
    generate = fixed_noise_generator(world["sd"], tokenize, decode, (LATENT_CHANNELS, 8, 8), steps=4, seed=3,
                                     batch=2)
    prompts = ["a handwritten digit 3 in bold style", "digit 5", "the number seven in slanted style"]
    first, again = generate(prompts), generate(prompts)
    assert first.shape == (3, 3, 16, 16) and torch.equal(first, again)
    assert not torch.allclose(first[0], first[1])
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(1000, 0)
