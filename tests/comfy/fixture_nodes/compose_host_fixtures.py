"""TEST FIXTURE, not part of UnlearnKit: what Compose's ComfyUI tests and benches feed the engine and read.

Seeded latents and σ lists (to drive one sampler step from a known state), a flow-type model through
ComfyUI's own ModelSamplingSD3, a model whose memory estimate makes ComfyUI evaluate cond and uncond
apart (its own low-memory batching), an SD1.5-size model with random weights, wall clocks around a
sampler, one model call's cost by batch size, and the bytes of distinct parameter storage a MODEL holds.
Runs inside ComfyUI only.
"""
from __future__ import annotations

import json
import math
import time

import torch

from .outputs import CATEGORY, OutputNode, out_path, written

SD15_UNET = {  # the unet_config ComfyUI detects for an SD1.5 checkpoint
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
CLOCK = {}


class Latent:
    """LATENT with seeded N(0, 1) samples (B, 4, size, size)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "batch": ("INT", {"default": 2, "min": 1, "max": 64}),
                             "size": ("INT", {"default": 8, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, seed, batch, size):
        gen = torch.Generator().manual_seed(seed)
        return ({"samples": torch.randn((batch, 4, size, size), generator=gen)},)


class Sigmas:
    """SIGMAS [σ, 0]: one sampler step from σ straight to the denoised estimate."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigma": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.0001})}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, sigma):
        return (torch.tensor([sigma, 0.0]),)


class FlowModel:
    """A clone with ComfyUI's own flow (CONST) model sampling, as its ModelSamplingSD3 node sets it."""

    @classmethod
    def INPUT_TYPES(cls):
        shift = ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0})
        return {"required": {"model": ("MODEL",), "shift": shift}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, shift):
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # ComfyUI 0.3.x

        return ModelSamplingSD3().patch(model, shift)


class _NoRoom:
    """memory_required that never fits: ComfyUI then runs each cond of a step in its own model call."""

    def __call__(self, input_shape, *args, **kwargs):
        return math.inf


class ShortOfMemory:
    """A clone ComfyUI believes too big to batch cond with uncond (its low-memory path, uncond first)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model):
        out = model.clone()
        out.add_object_patch("memory_required", _NoRoom())
        return (out,)


SDXL_UNET = {  # the unet_config ComfyUI detects for an SDXL base checkpoint
    **SD15_UNET, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
    "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64, "num_heads": -1,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
}
DTYPES = {"fp16": (torch.float16, torch.float32), "bf16": (torch.bfloat16, None),
          "fp32": (torch.float32, None)}  # storage, compute (None: the storage dtype)


class SD15Model:
    """A ModelPatcher over an SD1.5-size (or SDXL-size) BaseModel with seeded random weights: stored in fp16
    and computed in fp32 (the default), or stored and computed in bf16 / fp32 (``dtype``)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})},
                "optional": {"arch": (["sd15", "sdxl"],), "dtype": (list(DTYPES),)}}

    RETURN_TYPES = ("MODEL",)
    NOT_IDEMPOTENT = True
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, seed, arch="sd15", dtype="fp16"):
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.supported_models

        from . import seeded_init_

        storage, compute = DTYPES[dtype]
        family = comfy.supported_models.SDXL if arch == "sdxl" else comfy.supported_models.SD15
        config = family({**(SDXL_UNET if arch == "sdxl" else SD15_UNET), "dtype": storage})
        config.set_inference_dtype(storage, compute)
        model = config.get_model({}, device=mm.unet_offload_device())
        seeded_init_(model.diffusion_model, seed)
        model.diffusion_model.to(storage)
        return (comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                 offload_device=mm.unet_offload_device()),)


class ClockStart:
    """Passes a sampler's inputs through once they exist and starts the clock ``key``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",),
                             "negative": ("CONDITIONING",), "latent": ("LATENT",),
                             "key": ("STRING", {"default": "clock"})}}

    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT")
    NOT_IDEMPOTENT = True
    FUNCTION = "start"
    CATEGORY = CATEGORY

    def start(self, model, positive, negative, latent, key):
        CLOCK[key] = time.perf_counter()
        return model, positive, negative, latent


class ClockStop(OutputNode):
    """Writes <key>.json {"seconds"} since ClockStart ``key``, once ``samples`` exist."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "key": ("STRING", {"default": "clock"})}}

    def write(self, samples, key):
        out_path(key, ".json").write_text(json.dumps({"seconds": time.perf_counter() - CLOCK.pop(key)}))
        return written(key)


def held_tensors(patcher) -> list[torch.Tensor]:
    """Every tensor a MODEL holds for its weights: module parameters and buffers, ComfyUI's backups of
    patched weights, weight patches, and for a composed MODEL its shards' and its forward-time deltas."""
    found = list(patcher.model.state_dict(keep_vars=True).values())
    for saved in getattr(patcher, "backup", {}).values():
        found.append(getattr(saved, "weight", saved))
    found += list(_tensors(getattr(patcher, "patches", {})))
    mixture = patcher.model_options.get("model_function_wrapper")
    for shard in getattr(mixture, "patchers", ()):
        if shard is not patcher:
            found += held_tensors(shard)
    for deltas in getattr(getattr(mixture, "clones", None), "_cache", {}).values():
        for d in deltas.values():
            found += list(_tensors([d.dw, d.db, *[(x.up, x.down) for x in d.terms]]))
    return found


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif hasattr(value, "weights"):  # 0.3.x weight adapters (LoRAAdapter)
        yield from _tensors(value.weights)


def distinct_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared tensors counted once)."""
    seen = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device.type)] = storage.nbytes()
    return sum(seen.values())


class ParameterBytes(OutputNode):
    """Writes <key>.json {"bytes", "dtypes"}: distinct parameter storage a MODEL holds (after ``after`` ran)
    and the dtypes of its UNet's parameters."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "key": ("STRING", {"default": "bytes"})},
                "optional": {"after": ("LATENT",)}}

    def write(self, model, key, after=None):
        dtypes = sorted({str(p.dtype) for p in model.model.diffusion_model.parameters()})
        out_path(key, ".json").write_text(json.dumps({"bytes": distinct_bytes(held_tensors(model)),
                                                      "dtypes": dtypes}))
        return written(key)


class ModelSamplingTable(OutputNode):
    """Writes <key>.json: the model's sampling sigmas, σ(t) at ``ts`` and timestep(σ) at ``sigmas``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "ts": ("STRING", {"default": "0, 10.5"}),
                             "sigmas": ("STRING", {"default": "1.0"}),
                             "key": ("STRING", {"default": "table"})}}

    def write(self, model, ts, sigmas, key):
        ms = model.object_patches.get("model_sampling", model.model.model_sampling)
        t = torch.tensor([float(v) for v in ts.split(",")])
        s = torch.tensor([float(v) for v in sigmas.split(",")])
        table = {"sigmas": ms.sigmas.tolist(), "sigma_of_t": ms.sigma(t).tolist(),
                 "t_of_sigma": ms.timestep(s).tolist()}
        out_path(key, ".json").write_text(json.dumps(table))
        return written(key)


class CallCost(OutputNode):
    """Writes <key>.json {"ms": {rows: ms}}: one model call (apply_model) at a few batch sizes."""

    @classmethod
    def INPUT_TYPES(cls):
        width = ("INT", {"default": 64, "min": 8, "max": 4096})
        key = ("STRING", {"default": "cost"})
        return {"required": {"model": ("MODEL",), "context_dim": width, "key": key}}

    def write(self, model, context_dim, key, calls=5):
        import comfy.model_management as mm

        mm.load_models_gpu([model])
        ms = {}
        for rows in (2, 8, 32, 128):
            x, sigma = torch.randn(rows, 4, 8, 8), torch.full((rows,), 3.0)
            c = {"c_crossattn": torch.randn(rows, 8, context_dim), "transformer_options": {}}
            model.model.apply_model(x, sigma, **c)
            start = time.perf_counter()
            for _ in range(calls):
                model.model.apply_model(x, sigma, **c)
            ms[rows] = (time.perf_counter() - start) / calls * 1000
        out_path(key, ".json").write_text(json.dumps({"ms": ms}))
        return written(key)


NODE_CLASS_MAPPINGS = {f"UKTest{node.__name__}": node for node in (
    Latent, Sigmas, FlowModel, ShortOfMemory, SD15Model, ClockStart, ClockStop, ParameterBytes,
    ModelSamplingTable, CallCost)}
