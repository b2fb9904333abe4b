"""The panel script in AUTOMATIC1111 mode against the labelled stand-in of the webui (webui_standin.py), for
what the real webui (test_a1111_real.py, over HTTP) cannot show here: the webui's rule for registering script
classes checked fast and without the webui, img2img (which the tiny world cannot run in the real webui), the
hook restored when sampling fails at a chosen step, the loaded checkpoint never copied, the cond cache cleared
exactly when the encoder changes (counted encoder calls), the refresh button, the panel's paste fields."""
import inspect
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import webui_standin as standin
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


def registered(module):
    """modules/scripts.py register_scripts_from_module: every Script subclass found in module.__dict__."""
    return [c for c in module.__dict__.values() if inspect.isclass(c) and issubclass(c, standin.Script)]


def test_the_webui_registers_only_the_panel(world):
    """`from modules.scripts import Script` in the script made the webui register the base class too: its
    title() raised at start-up and every API request naming a script failed with HTTP 422."""
    assert registered(world.module) == [world.module.UnlearnKitScript]


def test_process_before_every_sampling_is_a_no_op_in_a1111(world):
    """A1111 calls this Forge hook too; its model has no forge_objects (the mixture wraps p.sample there)."""
    p = standin.StableDiffusionProcessing(world.sd_model, "seven")
    settings = mix(("a.safetensors", 0.5), ("b.safetensors", 0.5))
    world.script.process(p, *panel.to_controls(settings))
    world.script.process_before_every_sampling(p, *panel.to_controls(settings))
    p.setup_conds()
    assert torch.isfinite(p.sample()).all() and p.unlearnkit.runs.runs


def test_img2img_mixes_from_the_init_latent_like_the_core(world):
    """img2img samples from the noised init latent through the same p.sample and UNet hook as txt2img. The
    real webui cannot run img2img on the tiny world (its VAE downsamples by 2, the webui's noise assumes 8;
    test_a1111_real.py shows the webui's own error), so the mixture from an init latent is checked here."""
    init = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 2.0  # noised init latent
    p = standin.StableDiffusionProcessing(world.sd_model, "seven")
    settings = replace(mix(("a.safetensors", 0.75), ("b.safetensors", 0.25)), evaluate="every-shard")
    world.script.process(p, *panel.to_controls(settings))
    p.setup_conds()
    out = p.sample(init.clone())
    composed = ComposedUNet([world.unets["a"], world.unets["b"]], ["a", "b"],
                            StaticGate(["a", "b"], [0.75, 0.25]), standin.ACP)
    reference = SimpleNamespace(
        model=SimpleNamespace(diffusion_model=lambda x, t, context: composed(x, t, context).sample),
        get_learned_conditioning=encoder_of(world.clip),
    )
    q = standin.StableDiffusionProcessing(reference, "seven")
    q.setup_conds()
    with torch.no_grad():
        expected = q.sample(init.clone())
    assert torch.allclose(out, expected, atol=1e-4), (out - expected).abs().max()
    assert "forward" not in world.sd_model.model.diffusion_model.__dict__  # the hook is gone after sampling


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


def test_panel_controls_paste_back_and_carry_over_to_img2img(world):
    """Each control has two infotext fields: its value from a pasted infotext (a function) and the string name
    "Send to img2img / txt2img" copies it by (listed in paste_field_names). The webui's own paste code runs on
    these in the real-webui tests; here, the contract."""
    from unlearnkit.webui import controls

    assert [c.kind for c in world.controls[:3]] == ["Checkbox", "Dropdown", "Slider"]
    assert len(world.controls) == len(panel.control_names())
    checkpoints = ["None", "a.safetensors", "b.safetensors", "base.safetensors"]
    assert world.controls[1].kwargs["choices"] == checkpoints
    encoder = world.controls[panel.control_names().index("text encoder")]
    assert encoder.kwargs["choices"] == ["None", "erased.safetensors"]
    settings = panel.PanelSettings(enabled=True, shards=(("b.safetensors", 0.4), ("a.safetensors", 0.6)),
                                   gate="density", prune_eps=0.02, text_encoder="erased.safetensors",
                                   slug_patches=("seven.safetensors",))
    params = {k: v for k, v in panel.infotext_params(settings).items()}
    fields = world.script.infotext_fields
    pasters = [(c, f) for c, f in fields if callable(f)]
    names = [(c, f) for c, f in fields if isinstance(f, str)]
    assert [c for c, _ in pasters] == [c for c, _ in names] == world.controls
    assert [f(params) for _, f in pasters] == panel.to_controls(settings)
    assert [f for _, f in names] == world.script.paste_field_names == controls.paste_names()
    assert panel.from_infotext({name: "x" for name in controls.paste_names()}) is None


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
