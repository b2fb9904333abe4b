"""The panel script in Forge mode: ``process`` + ``process_before_every_sampling`` put a shard mixture on a
clone of ``forge_objects.unet``; one CFG denoising step through Forge's sampling function then equals the
core's mixture of the shards' own ``apply_model`` (same weights for cond and uncond).

Runs against REAL Forge code (``backend.sampling.sampling_function.sampling_function_inner``,
``backend.patcher.unet.UnetPatcher``, ``backend.modules.k_model.KModel``) from UNLEARNKIT_FORGE_DIR, by
default
``../shared/hosts/forge`` beside the repository (it imports offline on CPU; it needs the `gguf` package);
also against the LABELLED STAND-IN below, which restates only that contract.
"""
import copy
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import webui_standin as standin
from tiny_models import save_checkpoint, tiny_unet
from torch import nn

from unlearnkit.webui import model_files as lib
from unlearnkit.webui import settings as panel

# Forge's backend, unmodified: $UNLEARNKIT_FORGE_DIR, else the team's snapshot beside the repository
FORGE_DIR = os.environ.get("UNLEARNKIT_FORGE_DIR") or str(
    Path(__file__).resolve().parents[3] / "shared" / "hosts" / "forge"
)


# ---- labelled stand-in of Forge's backend (restates backend/modules/k_model.py, backend/patcher/unet.py,
# ---- backend/sampling/sampling_function.py calc_cond_uncond_batch + sampling_function_inner) ----------
class StandInPrediction:
    """k_prediction.Prediction: eps model, timestep = nearest discrete t of σ."""

    prediction_type = "epsilon"
    log_sigmas = (((1 - standin.ACP) / standin.ACP) ** 0.5).log()

    def timestep(self, sigma):
        return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)


class StandInKModel(nn.Module):
    def __init__(self, diffusion_model, diffusers_scheduler=None, config=None):
        super().__init__()
        self.diffusion_model, self.predictor, self.config = diffusion_model, StandInPrediction(), config

    def apply_model(
        self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs
    ):
        sigma = t.view(-1, 1, 1, 1)
        eps = self.diffusion_model(
            x / (sigma**2 + 1) ** 0.5, self.predictor.timestep(t).float(), context=c_crossattn
        )
        return x - eps * sigma


class StandInUnetPatcher:
    def __init__(self, model, load_device=None, offload_device=None):
        self.model = model
        self.model_options = {"transformer_options": {}}
        self.extra_model_patchers_during_sampling = []

    def clone(self):
        n = StandInUnetPatcher(self.model)
        n.model_options = copy.deepcopy(self.model_options)
        n.extra_model_patchers_during_sampling = self.extra_model_patchers_during_sampling.copy()
        return n

    def set_model_unet_function_wrapper(self, wrapper):
        self.model_options["model_function_wrapper"] = wrapper

    def add_extra_model_patcher_during_sampling(self, patcher):
        self.extra_model_patchers_during_sampling.append(patcher)


def standin_sampling(model, x, sigma, uncond, cond, cond_scale, model_options):
    """Forge batches [uncond, cond] (cond_or_uncond [1, 0]) and calls the wrapper with the VE pair."""
    c = {"c_crossattn": torch.cat([uncond, cond]), "transformer_options": {}}
    args = {
        "input": torch.cat([x, x]),
        "timestep": torch.cat([sigma, sigma]),
        "c": c,
        "cond_or_uncond": [1, 0],
    }
    uncond_pred, cond_pred = model_options["model_function_wrapper"](model.apply_model, args).chunk(2)
    return uncond_pred + (cond_pred - uncond_pred) * cond_scale


def real_forge():
    forge = Path(FORGE_DIR)
    argv, sys.argv = sys.argv, ["forge", "--always-cpu"]
    sys.path.insert(0, str(forge))
    try:
        from backend.modules.k_model import KModel
        from backend.patcher.unet import UnetPatcher
        from backend.sampling.condition import compile_conditions
        from backend.sampling.sampling_function import sampling_function_inner
    finally:
        sys.argv = argv
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

    def kmodel(dm):
        dm.storage_dtype = dm.computation_dtype = torch.float32
        return KModel(dm, scheduler)

    def patcher(model):
        return UnetPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))

    def sample(model, x, sigma, uncond, cond, cond_scale, model_options):
        return sampling_function_inner(model, x, sigma, compile_conditions(uncond), compile_conditions(cond),
                                       cond_scale, model_options, seed=0)

    return SimpleNamespace(kmodel=kmodel, patcher=patcher, sample=sample)


BACKENDS = {
    "stand-in": lambda: SimpleNamespace(
        kmodel=StandInKModel, patcher=StandInUnetPatcher, sample=standin_sampling
    ),
    "real Forge": real_forge,
}


@pytest.fixture(params=list(BACKENDS))
def forge(request):
    if (
        request.param == "real Forge"
        and not (Path(FORGE_DIR) / "backend" / "sampling" / "sampling_function.py").is_file()
    ):
        pytest.skip(
            f"no Forge backend at {FORGE_DIR}: set UNLEARNKIT_FORGE_DIR to a stable-diffusion-webui-forge "
            "checkout to run against real Forge code"
        )
    return BACKENDS[request.param]()


@pytest.fixture()
def world(tmp_path, monkeypatch, forge):
    ckpt = tmp_path / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    unets = {name: tiny_unet(seed) for name, seed in (("base", 0), ("a", 1), ("b", 2))}
    checkpoints = {}
    for name, unet in unets.items():
        save_checkpoint(ckpt / f"{name}.safetensors", unet)
        checkpoints[f"{name}.safetensors"] = ckpt / f"{name}.safetensors"
    base_dm = standin.LdmUNet(unets["base"])
    unet = forge.patcher(forge.kmodel(base_dm))
    sd_model = SimpleNamespace(
        forge_objects=SimpleNamespace(unet=unet),
        sd_checkpoint_info=standin.CheckpointInfo("base.safetensors", checkpoints["base.safetensors"]),
    )
    module = standin.load_script(
        monkeypatch, standin.webui_modules(tmp_path / "models", sd_model, checkpoints)
    )
    monkeypatch.setattr(
        module, "forge_load_unet", lambda path: forge.patcher(forge.kmodel(lib.load_unet_like(base_dm, path)))
    )
    return SimpleNamespace(
        module=module, script=module.UnlearnKitScript(), sd_model=sd_model, forge=forge, base=unet
    )


def prepare(world, settings):
    p = SimpleNamespace(sd_model=world.sd_model, extra_generation_params={})
    world.sd_model.forge_objects.unet = world.base
    world.script.process(p, *panel.to_controls(settings))
    world.script.process_before_every_sampling(p, x=None, noise=None, c=None, uc=None)
    return p, p.sd_model.forge_objects.unet


def inputs():
    g = torch.Generator().manual_seed(4)
    return (torch.randn(2, 4, 8, 8, generator=g) * 3, torch.tensor([3.0, 3.0]),
            torch.randn(2, 3, 32, generator=g), torch.randn(2, 3, 32, generator=g))


@pytest.mark.parametrize("evaluate", ["every-shard", "fast"])
def test_forge_step_equals_the_core_mixture(world, evaluate):
    """every-shard: the exact mix; fast (σ = 3 > fast σ): each sample takes ONE shard, drawn from its weights,
    for cond and uncond alike."""
    settings = panel.PanelSettings(enabled=True, shards=(("a.safetensors", 0.75), ("b.safetensors", 0.25)),
                                   evaluate=evaluate)
    p, clone = prepare(world, settings)
    assert clone is not world.base and "model_function_wrapper" not in world.base.model_options
    shard_patchers = clone.extra_model_patchers_during_sampling
    assert len(shard_patchers) == 2  # Forge loads both shards to the device with the UNet
    x, sigma, cond, uncond = inputs()
    with torch.no_grad():
        out = world.forge.sample(clone.model, x, sigma, uncond, cond, 3.0, clone.model_options)
        x0 = {}
        for which, c in (("cond", cond), ("uncond", uncond)):
            x0[which] = torch.stack([s.model.apply_model(x, sigma, c_crossattn=c, transformer_options={})
                                     for s in shard_patchers], dim=1)  # (B, shard, ...)
    record = p.unlearnkit.runs.runs[0].history[0]
    assert torch.allclose(record.weights, torch.tensor([[0.75, 0.25]] * 2))
    used = torch.tensor([[0.75, 0.25]] * 2)
    if evaluate == "fast":
        assert record.evaluated == 2  # one shard per sample
        chosen = [int(torch.argmin(torch.stack([(out[b] - (x0["uncond"][b, i] + (x0["cond"][b, i] -
                                                x0["uncond"][b, i]) * 3.0)).abs().max() for i in (0, 1)])))
                  for b in range(2)]
        used = torch.nn.functional.one_hot(torch.tensor(chosen), 2).float()
    mix = {k: (used.view(2, 2, 1, 1, 1) * v).sum(dim=1) for k, v in x0.items()}
    expected = mix["uncond"] + (mix["cond"] - mix["uncond"]) * 3.0
    assert torch.allclose(out, expected, atol=1e-4), (out - expected).abs().max()
    assert p.extra_generation_params["UnlearnKit shard 1"] == "a.safetensors"
    assert p.extra_generation_params["UnlearnKit evaluate"] == evaluate


def test_forge_loaded_checkpoint_is_evaluated_through_the_host_apply_model(world):
    settings = panel.PanelSettings(
        enabled=True, shards=(("base.safetensors", 0.5), ("a.safetensors", 0.5)), gate="density"
    )
    _, clone = prepare(world, settings)
    assert len(clone.extra_model_patchers_during_sampling) == 1
    x, sigma, cond, uncond = inputs()
    with torch.no_grad():
        out = world.forge.sample(clone.model, x, sigma, uncond, cond, 1.5, clone.model_options)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_forge_refuses_to_sample_when_the_mixture_cannot_be_built(world, monkeypatch):
    settings = panel.PanelSettings(enabled=True, shards=(("a.safetensors", 1.0), ("b.safetensors", 1.0)))

    def broken(path):
        raise ValueError(f"shard {path.name!r}: not a UNet of the loaded model's architecture")

    monkeypatch.setattr(world.module, "forge_load_unet", broken)
    _, clone = prepare(world, settings)  # fails while building the wrapper: the clone refuses to sample
    x, sigma, cond, uncond = inputs()
    with pytest.raises(RuntimeError, match="UnlearnKit: shard 'a.safetensors'"):
        world.forge.sample(clone.model, x, sigma, uncond, cond, 3.0, clone.model_options)
    Path(world.module.checkpoints(standin.sys.modules["modules.sd_models"])["b.safetensors"]).unlink()
    p, _ = prepare(world, settings)  # fails in process (the file is gone): Forge's p.sample refuses
    with pytest.raises(RuntimeError, match="UnlearnKit: .*b.safetensors"):
        p.sample()


def test_forge_text_encoder_patch_is_applied_after_the_host_loads_the_clip_patcher(tmp_path, monkeypatch):
    """Forge merges LoRAs when it loads the CLIP patcher: the script loads it before editing (stand-in
    only)."""
    import types

    from tiny_models import tiny_clip
    from webui_standin import StableDiffusionProcessing

    from unlearnkit.unlearn.patches import make_patch, save_patch

    clip = tiny_clip(5)
    layer = "encoder.layers.0.mlp.fc2.weight"
    patch = make_patch(clip, layer, torch.ones_like(dict(clip.named_parameters())[layer]), "x", 1.0)
    (tmp_path / "models" / "UnlearnKit" / "slug_patches").mkdir(parents=True)
    save_patch(patch, tmp_path / "models" / "UnlearnKit" / "slug_patches" / "x.safetensors")
    holder = nn.Module()
    holder.clip_l = nn.Module()
    holder.clip_l.transformer = nn.Module()
    holder.clip_l.transformer.text_model = clip
    events = []

    def encode(prompts):
        events.append(("encode", float(dict(clip.named_parameters())[layer].sum())))
        return torch.zeros(len(prompts), 3, 32)

    clip_patcher = object()
    sd_model = SimpleNamespace(
        forge_objects=SimpleNamespace(clip=SimpleNamespace(cond_stage_model=holder, patcher=clip_patcher)),
        get_learned_conditioning=encode,
    )
    memory_management = types.ModuleType("backend.memory_management")
    memory_management.load_model_gpu = lambda patcher: events.append(("load", patcher is clip_patcher))
    backend = types.ModuleType("backend")
    backend.memory_management = memory_management
    monkeypatch.setitem(sys.modules, "backend", backend)
    monkeypatch.setitem(sys.modules, "backend.memory_management", memory_management)
    module = standin.load_script(monkeypatch, standin.webui_modules(tmp_path / "models", sd_model, {}))
    original = float(dict(clip.named_parameters())[layer].sum())
    p = StableDiffusionProcessing(sd_model, "x")
    module.UnlearnKitScript().process(
        p, *panel.to_controls(panel.PanelSettings(enabled=True, slug_patches=("x.safetensors",)))
    )
    p.setup_conds()
    assert events[0] == ("load", True)
    patched = original + patch.delta.numel()
    assert [e[0] for e in events[1:]] == ["encode", "encode"] and all(
        abs(e[1] - patched) < 1e-2 for e in events[1:]
    )
    with torch.no_grad():
        assert float(dict(clip.named_parameters())[layer].sum()) == original
