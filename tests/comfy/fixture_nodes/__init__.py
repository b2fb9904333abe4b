"""TEST FIXTURE, not part of UnlearnKit: custom nodes the real-ComfyUI test harness loads.

They build tiny seeded SD1.5-architecture models in code, seeded conditioning, and write
results (latents as .npy, model state as .json) into the folder named by the environment
variable UNLEARNKIT_TEST_OUT, under the ``key`` given in the graph. Runs inside ComfyUI only.
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch

from .compose_fixtures import NODE_CLASS_MAPPINGS as COMPOSE_FIXTURES
from .outputs import CATEGORY, out_path

LABEL_ATTR = "unlearnkit_test_label"



def tiny_unet_config(context_dim: int, model_channels: int, in_channels: int) -> dict:
    """An SD1.5-layout UNet config (two levels, one res block each) small enough for CPU tests."""
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": in_channels,
        "model_channels": model_channels, "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
        "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
        "context_dim": context_dim, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def seeded_init_(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter from a seeded generator (ComfyUI builds layers uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def build_tiny_model(seed: int, context_dim: int, model_channels: int, in_channels: int, prediction: str):
    """A ModelPatcher over a seeded tiny SD1.5-architecture BaseModel."""
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(tiny_unet_config(context_dim, model_channels, in_channels))
    if hasattr(config, "set_inference_dtype"):
        config.set_inference_dtype(torch.float32, None)
    model_type = (
        comfy.model_base.ModelType.V_PREDICTION if prediction == "v" else comfy.model_base.ModelType.EPS
    )
    model = comfy.model_base.BaseModel(config, model_type=model_type, device=mm.unet_offload_device())
    seeded_init_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


class TinyModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "context_dim": ("INT", {"default": 32, "min": 8, "max": 1024}),
            "model_channels": ("INT", {"default": 32, "min": 32, "max": 320, "step": 32}),
            "in_channels": ("INT", {"default": 4, "min": 1, "max": 16}),
            "prediction": (["eps", "v"],),
            "label": ("STRING", {"default": ""}),
        }}

    RETURN_TYPES = ("MODEL",)
    NOT_IDEMPOTENT = True  # each node builds its own module, as separate checkpoint loads would
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, seed, context_dim, model_channels, in_channels, prediction, label):
        patcher = build_tiny_model(seed, context_dim, model_channels, in_channels, prediction)
        setattr(patcher.model, LABEL_ATTR, label or f"seed{seed}")
        return (patcher,)


class Conditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "context_dim": ("INT", {"default": 32, "min": 8, "max": 4096}),
            "tokens": ("INT", {"default": 8, "min": 1, "max": 77}),
        }, "optional": {"pooled": ("INT", {"default": 0, "min": 0, "max": 4096})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, seed, context_dim, tokens, pooled=0):
        """Seeded (1, tokens, context_dim) states; ``pooled`` > 0 adds a pooled output (SDXL reads one)."""
        gen = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, tokens, context_dim), generator=gen)
        return ([[cond, {"pooled_output": torch.randn((1, pooled), generator=gen)} if pooled else {}]],)


class PatchModel:
    """A clone with a seeded 'diff' weight patch on the output conv: what a LoRA loader makes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0})}}

    RETURN_TYPES = ("MODEL",)
    NOT_IDEMPOTENT = True  # each node makes its own clone and patch objects, as separate LoRA loads do
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, seed, strength):
        out = model.clone()
        gen = torch.Generator().manual_seed(seed)
        patches = {}
        for key, weight in model.model.state_dict().items():
            if key.startswith("diffusion_model.out.") and key.endswith("weight"):
                patches[key] = (0.5 * torch.randn(weight.shape, generator=gen),)
        out.add_patches(patches, strength)
        return (out,)


class _Scale:
    """attn2 output patch (both versions) or apply_model wrapper (0.3.x) that scales by a constant."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, *args, **kwargs):
        if len(args) == 2 and isinstance(args[0], torch.Tensor):  # attn2_output_patch(n, extra_options)
            return args[0] * self.scale
        executor, *rest = args  # wrapper(executor, *args, **kwargs)
        return executor(*rest, **kwargs) * self.scale


class ScaleModel:
    """A clone with a non-weight patch: cross-attention output or (0.3.x) apply_model output scaled."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "where": (["attn2_output", "apply_model_wrapper"],),
                             "scale": ("FLOAT", {"default": 0.0, "min": -10.0, "max": 10.0})}}

    RETURN_TYPES = ("MODEL",)
    NOT_IDEMPOTENT = True
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, where, scale):
        out = model.clone()
        if where == "attn2_output":
            out.set_model_attn2_output_patch(_Scale(scale))
        elif hasattr(out, "add_wrapper_with_key"):  # 0.3.x only; 2024-03 returns the plain clone
            out.add_wrapper_with_key("apply_model", "unlearnkit_test", _Scale(scale))
        return (out,)


class SaveLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "key": ("STRING", {"default": "latent"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY

    def save(self, samples, key):
        np.save(out_path(key, ".npy"), samples["samples"].detach().float().cpu().numpy())
        return {"ui": {"unlearnkit_test": [key]}}


def model_state(patcher) -> dict:
    """What a node might have changed on a MODEL: model_options, wrappers, patches, extra models."""
    options = patcher.model_options
    return {
        "model_options_keys": sorted(options),
        "transformer_options": sorted(options.get("transformer_options", {})),
        "has_model_function_wrapper": "model_function_wrapper" in options,
        "n_weight_patches": len(patcher.patches),
        "additional_models": sorted(getattr(patcher, "additional_models", {})),
        "wrappers": sorted(k for k, v in getattr(patcher, "wrappers", {}).items() if v),
        "label": getattr(patcher.model, LABEL_ATTR, None),
    }


class ModelState:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "key": ("STRING", {"default": "state"})},
                "optional": {"after": ("LATENT",)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "record"
    CATEGORY = CATEGORY

    def record(self, model, key, after=None):
        out_path(key, ".json").write_text(json.dumps(model_state(model)))
        return {"ui": {"unlearnkit_test": [key]}}


class LoadedModels:
    """Labels of the tiny models ComfyUI's model management holds loaded (after ``after`` ran)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"after": ("LATENT",), "key": ("STRING", {"default": "loaded"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "record"
    CATEGORY = CATEGORY

    def record(self, after, key):
        import comfy.model_management as mm

        labels = []
        for loaded in mm.current_loaded_models:
            patcher = loaded.model
            label = getattr(getattr(patcher, "model", None), LABEL_ATTR, None)
            if label is not None:
                labels.append(label)
        out_path(key, ".json").write_text(json.dumps({"labels": labels}))
        return {"ui": {"unlearnkit_test": [key]}}


NODE_CLASS_MAPPINGS = {
    "UKTestTinyModel": TinyModel,
    "UKTestConditioning": Conditioning,
    "UKTestPatchModel": PatchModel,
    "UKTestScaleModel": ScaleModel,
    "UKTestSaveLatent": SaveLatent,
    "UKTestModelState": ModelState,
    "UKTestLoadedModels": LoadedModels,
}
from .clip_fixtures import NODE_CLASS_MAPPINGS as _CLIP_FIXTURES  # noqa: E402  (Erase/Unlearn node tests)
from .clip_fixtures import register_test_folders  # noqa: E402
from .erase_fixtures import NODE_CLASS_MAPPINGS as _ERASE_FIXTURES  # noqa: E402

NODE_CLASS_MAPPINGS.update(_CLIP_FIXTURES)
NODE_CLASS_MAPPINGS.update(_ERASE_FIXTURES)
register_test_folders()  # test-only: model folders named by $UNLEARNKIT_TEST_MODEL_FOLDERS
NODE_CLASS_MAPPINGS.update(COMPOSE_FIXTURES)
NODE_DISPLAY_NAME_MAPPINGS = {k: f"{k} (test fixture)" for k in NODE_CLASS_MAPPINGS}
