"""TEST FIXTURE, not part of UnlearnKit: nodes for the Erase Concept tests.

``UKTestInterruptAt`` passes a CLIP through and arms ComfyUI's progress hook to press Cancel (what the UI's
button does: ``interrupt_current_processing``) when a progress bar reaches ``step``; it disarms itself.
``UKTestFamilyModel`` builds a tiny random SD2.x (OpenCLIP-H, v-prediction) or SDXL (CLIP-L + OpenCLIP-G,
pooled + size conditioning) MODEL and CLIP from ComfyUI's own classes, inside inference_mode like a loader.
"""
from __future__ import annotations

import functools
import json
import math
import os
import tempfile

import torch

from .outputs import CATEGORY

G_SPECIAL = {"start": 49406, "end": 49407, "pad": 0}


class InterruptAt:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "step": ("INT", {"default": 1, "min": 1})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "arm"
    CATEGORY = CATEGORY

    def arm(self, clip, step):
        import comfy.model_management as mm
        import comfy.utils

        def hook(value, total, preview=None, *args, **kwargs):
            if value >= step:
                comfy.utils.set_progress_bar_global_hook(None)
                mm.interrupt_current_processing(True)

        comfy.utils.set_progress_bar_global_hook(hook)
        return (clip,)


def tiny_te_config(width: int, act: str, folder: str, name: str) -> str:
    cfg = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": act,
           "hidden_size": width, "intermediate_size": 2 * width, "num_attention_heads": 2,
           "num_hidden_layers": 3, "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
           "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1, "projection_dim": width,
           "torch_dtype": "float32"}
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def seeded_(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.numel() == 0:
                continue
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def sd2_target(tmp: str):
    import comfy.sd1_clip
    import comfy.supported_models_base

    try:
        from comfy.text_encoders import sd2_clip  # 0.3.x
    except ImportError:
        from comfy import sd2_clip  # 2024-03
    cfg = tiny_te_config(32, "gelu", tmp, "h.json")
    tower = functools.partial(comfy.sd1_clip.SDClipModel, textmodel_json_config=cfg, layer="hidden",
                              layer_idx=-2, special_tokens=G_SPECIAL)  # what SD2ClipHModel sets

    class TinySD2ClipModel(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, **kw):
            keep = ("device", "dtype", "model_options")
            super().__init__(device=device, dtype=dtype, clip_name="h",
                             clip_model=lambda **a: tower(**{k: v for k, v in a.items() if k in keep}))

    return comfy.supported_models_base.ClipTarget(sd2_clip.SD2Tokenizer, TinySD2ClipModel)


def projected_pooled() -> dict:
    """0.3.x asks SDXL's G tower for its projected pooled output; 2024-03 always returns it."""
    import inspect

    import comfy.sd1_clip

    params = inspect.signature(comfy.sd1_clip.SDClipModel.__init__).parameters
    return {"return_projected_pooled": True} if "return_projected_pooled" in params else {}


def sdxl_target(tmp: str):
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base

    l_cfg = tiny_te_config(32, "quick_gelu", tmp, "l.json")
    g_cfg = tiny_te_config(48, "gelu", tmp, "g.json")

    class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, **kw):
            torch.nn.Module.__init__(self)
            common = {"layer": "hidden", "layer_idx": -2, "device": device, "dtype": dtype,
                      "layer_norm_hidden_state": False}
            self.clip_l = comfy.sd1_clip.SDClipModel(textmodel_json_config=l_cfg, **common)
            self.clip_g = comfy.sd1_clip.SDClipModel(textmodel_json_config=g_cfg, special_tokens=G_SPECIAL,
                                                     **common, **projected_pooled())
            self.dtypes = {dtype}

    return comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel)


def make_clip(family: str):
    import comfy.sd

    with tempfile.TemporaryDirectory() as tmp:
        target = sd2_target(tmp) if family == "sd2" else sdxl_target(tmp)
        try:
            clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
        except TypeError:  # 2024-03
            clip = comfy.sd.CLIP(target)
    seeded_(clip.cond_stage_model, 1)
    return clip


def make_model(family: str, context_dim: int, adm: int | None):
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4,
                   "use_spatial_transformer": True, "legacy": False, "adm_in_channels": adm,
                   "dtype": torch.float32, "in_channels": 4,
                   "model_channels": 64, "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
                   "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
                   "context_dim": context_dim, "num_heads": 4, "transformer_depth_output": [1, 1, 1, 1],
                   "use_temporal_attention": False, "use_temporal_resblock": False}
    if family == "sd2":
        config = comfy.supported_models.SD20(unet_config)
        cls, mtype = comfy.model_base.BaseModel, comfy.model_base.ModelType.V_PREDICTION  # SD2-768-v
    else:
        unet_config["num_classes"] = "sequential"
        config = comfy.supported_models.SDXL(unet_config)
        cls, mtype = comfy.model_base.SDXL, comfy.model_base.ModelType.EPS
    if hasattr(config, "set_inference_dtype"):
        config.set_inference_dtype(torch.float32, None)
    model = cls(config, model_type=mtype, device=mm.unet_offload_device())
    seeded_(model, 2)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


class FamilyModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (["sd2", "sdxl"],), "context_dim": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, family, context_dim):
        """context_dim 0: the CLIP's own width (another value makes a mismatched pair)."""
        clip = make_clip(family)
        width = 32 if family == "sd2" else 32 + 48
        adm = None if family == "sd2" else 48 + 6 * 256
        return make_model(family, context_dim or width, adm), clip


NODE_CLASS_MAPPINGS = {"UKTestInterruptAt": InterruptAt, "UKTestFamilyModel": FamilyModel}
