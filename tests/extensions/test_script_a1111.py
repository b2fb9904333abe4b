"""The panel script in AUTOMATIC1111 mode, against the labelled stand-in of the webui (webui_standin.py):
a mixed generation equals the core's mixture (diffusers ComposedUNet) on the same inputs, the UNet
forward hook is restored after sampling (also when sampling fails), encoder edits change the conds and
clear the webui's cached conds exactly when the encoder changes, settings round-trip through infotext."""
import json
import re
from types import SimpleNamespace

import pytest
import torch
import webui_standin as standin
from PIL import Image
from tiny_models import save_checkpoint, tiny_clip, tiny_unet
from torch import nn

from unlearnkit import io
from unlearnkit.compose.diffusers_unet import ComposedUNet
from unlearnkit.compose.gates import StaticGate
from unlearnkit.unlearn.patches import make_patch, save_patch
from unlearnkit.webui import settings as panel


class CondStage(nn.Module):
    """A1111's hijacked cond_stage_model layout: wrapped.transformer.text_model.<HF keys>."""

    def __init__(self, text_model):
        super().__init__()
        self.wrapped = nn.Module()
        self.wrapped.transformer = nn.Module()
        self.wrapped.transformer.text_model = text_model


def token_ids(prompts):
    return torch.tensor([[(ord(ch) % 97) + 3 for ch in (p + " " * 8)[:8]] for p in prompts])


def encoder_of(text_model):
    def encode(prompts):
        with torch.no_grad():
            return text_model(input_ids=token_ids(prompts)).last_hidden_state
    return encode


@pytest.fixture()
def world(tmp_path, monkeypatch):
    models = tmp_path / "models"
    ckpt = models / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    unets = {name: tiny_unet(seed) for name, seed in (("base", 0), ("a", 1), ("b", 2))}
    for name, unet in unets.items():
        save_checkpoint(ckpt / f"{name}.safetensors", unet)
    clip = tiny_clip(5)
    (models / "UnlearnKit" / "text_encoders").mkdir(parents=True)
    erased = tiny_clip(6)
    io.save_safetensors(models / "UnlearnKit" / "text_encoders" / "erased.safetensors", erased.state_dict())
    (models / "UnlearnKit" / "slug_patches").mkdir(parents=True)
    layer = "encoder.layers.1.mlp.fc1.weight"
    patch = make_patch(
        clip, layer, torch.randn_like(dict(clip.named_parameters())[layer]) * 0.5, "digit seven", 1.0
    )
    save_patch(patch, models / "UnlearnKit" / "slug_patches" / "seven.safetensors")
    checkpoints = {f"{n}.safetensors": ckpt / f"{n}.safetensors" for n in unets}
    sd_model = standin.A1111Model(unets["base"], CondStage(clip), encoder_of(clip),
                                  standin.CheckpointInfo("base.safetensors", checkpoints["base.safetensors"]))
    module = standin.load_script(monkeypatch, standin.webui_modules(models, sd_model, checkpoints))
    monkeypatch.setattr(standin.StableDiffusionProcessing, "cached_c", [None, None])
    monkeypatch.setattr(standin.StableDiffusionProcessing, "cached_uc", [None, None])
    script = module.UnlearnKitScript()
    controls = script.ui(False)
    return SimpleNamespace(module=module, script=script, controls=controls, sd_model=sd_model, unets=unets,
                           clip=clip, erased=erased, models=models)


def run(world, settings, prompt="seven", **kw):
    p = standin.StableDiffusionProcessing(world.sd_model, prompt, **kw)
    world.script.process(p, *panel.to_controls(settings))
    p.setup_conds()
    return p, p.sample()


def mix(*shards):
    return panel.PanelSettings(enabled=True, shards=tuple(shards))


def test_mixed_generation_equals_the_core_mixture_and_the_hook_is_removed(world):
    unet = world.sd_model.model.diffusion_model
    p, out = run(world, mix(("a.safetensors", 0.75), ("b.safetensors", 0.25)))
    assert "forward" not in unet.__dict__
    composed = ComposedUNet(
        [world.unets["a"], world.unets["b"]], ["a", "b"], StaticGate(["a", "b"], [0.75, 0.25]), standin.ACP
    )
    reference = SimpleNamespace(
        model=SimpleNamespace(diffusion_model=lambda x, t, context: composed(x, t, context).sample),
        get_learned_conditioning=encoder_of(world.clip),
    )
    q = standin.StableDiffusionProcessing(reference, "seven")
    q.setup_conds()
    with torch.no_grad():
        expected = q.sample()
    assert torch.allclose(out, expected, atol=1e-4), (out - expected).abs().max()
    plain = run(world, panel.PanelSettings())[1]
    assert not torch.allclose(out, plain, atol=1e-3)  # the mixture is not the loaded model
    history = p.unlearnkit.runs.runs[0].history
    assert len(history) == 4 and torch.allclose(history[0].weights, torch.tensor([[0.75, 0.25]] * 2))


def test_loaded_checkpoint_as_a_shard_uses_the_loaded_unet(world):
    _, out = run(world, mix(("base.safetensors", 1.0), ("a.safetensors", 0.0)))
    assert torch.allclose(out, run(world, panel.PanelSettings())[1], rtol=1e-4, atol=1e-4)
    assert len(world.module.SHARDS) == 0  # zero-weight shard never loaded, the base never copied


def test_hook_restored_when_sampling_fails(world):
    unet = world.sd_model.model.diffusion_model
    p = standin.StableDiffusionProcessing(world.sd_model, "seven")
    p.interrupt_at_step = 2
    world.script.process(p, *panel.to_controls(mix(("a.safetensors", 0.5), ("b.safetensors", 0.5))))
    p.setup_conds()
    with pytest.raises(RuntimeError, match="interrupted"):
        p.sample()
    assert "forward" not in unet.__dict__
    assert torch.allclose(run(world, panel.PanelSettings())[1], run(world, panel.PanelSettings())[1])


def test_settings_that_cannot_run_refuse_to_sample(world):
    p = standin.StableDiffusionProcessing(world.sd_model, "seven")
    bad = panel.PanelSettings(
        enabled=True, shards=(("a.safetensors", 1.0),), gate="classifier", gate_file="missing.safetensors"
    )
    world.script.process(p, *panel.to_controls(bad))
    with pytest.raises(RuntimeError, match="UnlearnKit: gate: 'missing.safetensors' not found"):
        p.sample()


def test_text_encoder_swap_changes_conds_restores_weights_and_clears_the_cond_cache(world):
    before = {k: v.clone() for k, v in world.sd_model.cond_stage_model.state_dict().items()}
    p1, _ = run(world, panel.PanelSettings(), steps=1)
    p2, _ = run(world, panel.PanelSettings(), steps=1)
    assert (p1.computed_conds, p2.computed_conds) == (2, 0)  # no edits: the webui's cache is kept
    calls = world.sd_model.encoder_calls
    p3, _ = run(world, panel.PanelSettings(enabled=True, text_encoder="erased.safetensors"), steps=1)
    assert (
        world.sd_model.encoder_calls == calls + 3
    )  # one warm-up (host LoRA merge) before editing, cond, uncond
    assert p3.computed_conds == 2 and torch.allclose(p3.c, encoder_of(world.erased)(["seven"] * 2), atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in world.sd_model.cond_stage_model.state_dict().items())
    p4, _ = run(world, panel.PanelSettings(), steps=1)
    assert p4.computed_conds == 2 and torch.equal(p4.c, p1.c)  # conds of the erased encoder not reused
    p5, _ = run(world, panel.PanelSettings(enabled=True, slug_patches=("seven.safetensors",)), steps=1)
    assert p5.computed_conds == 2 and not torch.allclose(p5.c, p1.c)
    assert all(torch.equal(before[k], v) for k, v in world.sd_model.cond_stage_model.state_dict().items())


RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # modules/infotext_utils.py


def parse_like_webui(params):
    text = ", ".join(
        f"{k}: {json.dumps(v) if any(c in str(v) for c in ',:') else v}" for k, v in params.items()
    )
    return {k: json.loads(v) if v.startswith('"') else v for k, v in RE_PARAM.findall(text)}


def test_panel_controls_and_infotext_round_trip(world):
    assert [c.kind for c in world.controls[:3]] == ["Checkbox", "Dropdown", "Slider"]
    assert len(world.controls) == len(panel.control_names())
    assert world.controls[1].kwargs["choices"] == [
        "None",
        "a.safetensors",
        "b.safetensors",
        "base.safetensors",
    ]
    assert world.controls[-2].kwargs["choices"] == ["None", "erased.safetensors"]
    settings = panel.PanelSettings(enabled=True, shards=(("b.safetensors", 0.4), ("a.safetensors", 0.6)),
                                   gate="density", prune_eps=0.02, text_encoder="erased.safetensors",
                                   slug_patches=("seven.safetensors",))
    p = standin.StableDiffusionProcessing(world.sd_model, "seven")
    world.script.process(p, *panel.to_controls(settings))
    assert (
        p.extra_generation_params["UnlearnKit shard hash 1"]
        == io.file_sha256(world.models / "Stable-diffusion" / "b.safetensors")[:10]
    )
    pasted = parse_like_webui(p.extra_generation_params)
    fields = world.script.infotext_fields
    assert [c for c, _ in fields] == world.controls
    assert [fn(pasted) for _, fn in fields] == panel.to_controls(settings)


def test_refresh_button_lists_new_files(world):
    (world.models / "UnlearnKit" / "gates").mkdir(parents=True)
    (world.models / "UnlearnKit" / "gates" / "g.safetensors").write_bytes(b"x")
    gr = standin.sys.modules["gradio"]
    button = next(c for c in gr.created if c.kind == "Button")
    fn, inputs, outputs = button.clicks[0]
    updates = fn()
    assert len(updates) == len(outputs) == panel.MAX_SHARDS + 3
    gate_file = world.controls[panel.control_names().index("gate file")]
    assert updates[outputs.index(gate_file)]["choices"] == ["None", "g.safetensors"]


def test_attribution_plot_is_added_to_the_outputs(world):
    p, _ = run(world, mix(("a.safetensors", 0.5), ("b.safetensors", 0.5)))
    processed = standin.Processed([Image.new("RGB", (8, 8))], ["info"])
    world.script.postprocess(
        p, processed, *panel.to_controls(mix(("a.safetensors", 0.5), ("b.safetensors", 0.5)))
    )
    assert (
        len(processed.images) == 2
        and isinstance(processed.images[1], Image.Image)
        and processed.infotexts == ["info", "info"]
    )
