"""LABELLED STAND-IN of the few webui objects the UnlearnKit script touches — not webui code.

Used only for what the real webuis cannot run here: the real AUTOMATIC1111 v1.10.1 runs end to end over
HTTP (test_a1111_real.py), but cannot run img2img on the tiny world (VAE factor 2), cannot be interrupted at
a chosen sampling step, and does not expose how often it computes conds; Forge is present only as its
backend code, not its processing and UI (test_script_forge.py). Fast checks of the webui's
script-registration rule and of the panel's paste fields use it too.

Each class restates only the contract the glue relies on, naming where the real one lives in
AUTOMATIC1111/stable-diffusion-webui (and lllyasviel/stable-diffusion-webui-forge, same names):
``modules.scripts.Script`` / ``AlwaysVisible``, ``modules.shared`` (``models_path``, ``sd_model``),
``modules.sd_models`` (``checkpoints_list`` of ``CheckpointInfo``, ``list_models``),
``modules.processing.StableDiffusionProcessing`` (class-level ``cached_c`` / ``cached_uc`` lists,
``setup_conds`` with ``get_conds_with_caching``, ``sample``), the sampler loop of
``modules/sd_samplers_cfg_denoiser.py`` + k-diffusion's ``CompVisDenoiser`` (x_in = [cond rows; uncond
rows], UNet(x·c_in, sigma_to_t(σ), context) -> eps), an LDM ``sd_model``, and ``gradio`` components.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

from unlearnkit import io

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "extensions" / "sd-webui-unlearnkit" / "scripts" / "unlearnkit_script.py"
BETAS = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
ACP = torch.cumprod(1 - BETAS, 0)


class Script:
    """modules/scripts.py Script: the attributes the runner reads."""

    infotext_fields = None
    paste_field_names = None
    is_img2img = False

    def elem_id(self, item_id):
        return f"script_unlearnkit_{item_id}"


class CheckpointInfo:
    """modules/sd_models.py CheckpointInfo: name (relative, with extension) and filename (absolute)."""

    def __init__(self, name, filename):
        self.name, self.filename, self.title = name, str(filename), name
        self.calls = 0

    def calculate_shorthash(self):
        """sha256 of the file, first 10 hex digits (the webui caches it in its hash cache)."""
        self.calls += 1
        return io.file_sha256(self.filename)[:10]


class LdmUNet(nn.Module):
    """LDM UNetModel's call convention, forward(x, timesteps=None, context=None, **kw) -> eps, over a
    diffusers UNet."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.out_channels = unet.config.out_channels

    def forward(self, x, timesteps=None, context=None, **kwargs):
        return self.unet(x, timesteps, encoder_hidden_states=context).sample


class A1111Model(nn.Module):
    """LatentDiffusion as the webui holds it: model.diffusion_model, alphas_cumprod, parameterization,
    sd_checkpoint_info, cond_stage_model (the hijacked text encoder) and get_learned_conditioning."""

    def __init__(self, unet, cond_stage_model, encode, checkpoint):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = LdmUNet(unet)
        self.cond_stage_model = cond_stage_model
        self.register_buffer("alphas_cumprod", ACP.clone())
        self.parameterization = "eps"
        self.sd_checkpoint_info = checkpoint
        self._encode = encode

    def get_learned_conditioning(self, prompts):
        self.encoder_calls = getattr(self, "encoder_calls", 0) + 1
        return self._encode(prompts)


class StableDiffusionProcessing:
    """modules/processing.py: class-level cond caches shared by instances, conds with caching, sample()."""

    cached_c = [None, None]
    cached_uc = [None, None]

    def __init__(self, sd_model, prompt, steps=4, cfg_scale=3.0, batch_size=2, seed=0):
        self.sd_model, self.prompt, self.steps, self.cfg_scale = sd_model, prompt, steps, cfg_scale
        self.batch_size, self.seed = batch_size, seed
        self.extra_generation_params = {}
        self.cached_c = StableDiffusionProcessing.cached_c
        self.cached_uc = StableDiffusionProcessing.cached_uc
        self.computed_conds = 0
        self.interrupt_at_step = None

    def get_conds_with_caching(self, prompts, cache):
        if cache[0] is not None and cache[0] == prompts:
            return cache[1]
        self.computed_conds += 1
        cache[1] = self.sd_model.get_learned_conditioning(prompts)
        cache[0] = prompts
        return cache[1]

    def setup_conds(self):
        self.c = self.get_conds_with_caching([self.prompt] * self.batch_size, self.cached_c)
        self.uc = self.get_conds_with_caching([""] * self.batch_size, self.cached_uc)

    def sample(self, x=None):
        """Euler (k-diffusion sample_euler, churn 0) with the CFGDenoiser batch layout."""
        sigmas = torch.tensor([14.6, 6.0, 2.0, 0.6, 0.0])[: self.steps + 1]
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.batch_size, 4, 8, 8, generator=g) * sigmas[0] if x is None else x
        unet = self.sd_model.model.diffusion_model
        for i in range(len(sigmas) - 1):
            if self.interrupt_at_step == i:
                raise RuntimeError("stand-in sampler: interrupted")
            sigma = sigmas[i].expand(x.shape[0])
            x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
            c_in = 1 / (sigma_in**2 + 1) ** 0.5
            eps = unet(
                x_in * c_in.view(-1, 1, 1, 1), sigma_to_t(sigma_in), context=torch.cat([self.c, self.uc])
            )
            out = x_in - eps * sigma_in.view(-1, 1, 1, 1)
            cond, uncond = out.chunk(2)
            denoised = uncond + (cond - uncond) * self.cfg_scale
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigmas[i + 1] - sigmas[i])
        return x


def sigma_to_t(sigma):
    """k-diffusion CompVisDenoiser.sigma_to_t (not quantized)."""
    log_sigmas = (((1 - ACP) / ACP) ** 0.5).log()
    dists = sigma.log() - log_sigmas[:, None]
    low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    w = ((log_sigmas[low] - sigma.log()) / (log_sigmas[low] - log_sigmas[low + 1])).clamp(0, 1)
    return (1 - w) * low + w * (low + 1)


class Processed:
    """modules/processing.py Processed: images and infotexts lists."""

    def __init__(self, images, infotexts):
        self.images, self.infotexts = images, infotexts


# ---- gradio --------------------------------------------------------------------------------------
class Component:
    def __init__(self, kind, value=None, **kwargs):
        self.kind, self.value, self.kwargs, self.clicks = kind, value, kwargs, []
        self.label = kwargs.get("label")

    def click(self, fn=None, inputs=None, outputs=None, **kwargs):
        self.clicks.append((fn, inputs, outputs))


class Layout:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def gradio_standin():
    """gradio's component constructors with the keyword arguments the panel uses, and gr.update."""
    gr = types.ModuleType("gradio")
    gr.Accordion = gr.Row = gr.Column = gr.Group = Layout
    gr.created = []  # every component made, in order (for tests)

    def maker(kind):
        def make(value=None, **kwargs):
            gr.created.append(Component(kind, value, **kwargs))
            return gr.created[-1]
        return make

    for kind in ("Checkbox", "Dropdown", "Slider", "Button"):
        setattr(gr, kind, maker(kind))
    gr.update = lambda **kw: {"__type__": "update", **kw}
    return gr


# ---- wiring --------------------------------------------------------------------------------------
def webui_modules(models_path, sd_model, checkpoints):
    """sys.modules entries for modules.{scripts,shared,sd_models,processing} and gradio."""
    mods = {name: types.ModuleType(name) for name in ("modules", "modules.scripts", "modules.shared",
                                                       "modules.sd_models", "modules.processing")}
    mods["modules.scripts"].Script = Script
    mods["modules.scripts"].AlwaysVisible = object()
    shared = mods["modules.shared"]
    shared.models_path, shared.sd_model = str(models_path), sd_model
    sd_models = mods["modules.sd_models"]
    sd_models.checkpoints_list = {name: CheckpointInfo(name, path) for name, path in checkpoints.items()}
    sd_models.list_models = lambda: None
    mods["modules.processing"].StableDiffusionProcessing = StableDiffusionProcessing
    for name in ("scripts", "shared", "sd_models", "processing"):
        setattr(mods["modules"], name, mods[f"modules.{name}"])
    mods["gradio"] = gradio_standin()
    return mods


def load_script(monkeypatch, mods):
    """Put the stand-in modules in place and load the script the way modules/script_loading.py does."""
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("unlearnkit_script.py", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
