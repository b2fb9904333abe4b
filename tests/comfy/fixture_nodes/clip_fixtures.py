"""TEST FIXTURE, not part of UnlearnKit: CLIP-side fixture nodes for the Erase / Unlearn node tests.

- ComfyUI's own SD1 CLIP object (``SD1ClipModel`` + ``SD1Tokenizer``, keys ``clip_l.transformer.…``) built
  from an HF text-encoder safetensors file the test wrote (random weights, any size via a config json);
- encoding with an ``after`` input (to order it after other nodes), writing the conditioning (.npy) and
  ComfyUI's token ids (.json); images from a folder of PNGs; strings, image batches and patcher state
  written under ``$UNLEARNKIT_TEST_OUT``; a MODEL's weight as ComfyUI loads it (patches applied).
- ``UNLEARNKIT_TEST_MODEL_FOLDERS="name=path;name=path"`` adds test model folders at import, so combo
  widgets (text encoders, SLUG patches) list the test's files.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch

from .outputs import CATEGORY, out_path

FOLDERS_ENV = "UNLEARNKIT_TEST_MODEL_FOLDERS"
HF_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.")


def register_test_folders() -> None:
    import folder_paths

    for entry in filter(None, os.environ.get(FOLDERS_ENV, "").split(";")):
        name, _, path = entry.partition("=")
        folder_paths.add_model_folder_path(name, path)
        paths = folder_paths.folder_names_and_paths[getattr(folder_paths, "map_legacy", str)(name)][0]
        paths.insert(0, paths.pop(paths.index(path)))  # first: where nodes write (never the cached engine's)



def build_sd1_clip(weights: str, config: str, fp32: bool):
    """ComfyUI's SD1 CLIP (as its checkpoint loaders build it) holding the HF text encoder in ``weights``."""
    import comfy.cli_args
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    from safetensors.torch import load_file

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    if (
        config
    ):  # 0.3.x's default SD1CheckpointClipModel takes no config: use the plain SDClipModel (as 2024-03)
        target.params.update(clip_model=comfy.sd1_clip.SDClipModel, textmodel_json_config=config)
    if "model_options" in inspect.signature(comfy.sd.CLIP.__init__).parameters:  # 0.3.x
        clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32} if fp32 else {})
    else:  # 2024-03: the dtype comes from the command line flags
        args, old = comfy.cli_args.args, comfy.cli_args.args.fp32_text_enc
        args.fp32_text_enc = fp32 or old
        try:
            clip = comfy.sd.CLIP(target)
        finally:
            args.fp32_text_enc = old
    state = load_file(weights)
    state = {("text_model." + k if k.startswith(HF_ROOTS) else k): v for k, v in state.items()}
    missing, unexpected = clip.load_sd(state)
    missing = [k for k in missing if not k.endswith(("text_projection.weight", "position_ids"))]
    if missing or unexpected:
        raise ValueError(
            f"fixture: {weights} does not fit ComfyUI's SD1 CLIP: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}"
        )
    with torch.no_grad():  # 0.3.x leaves the (unused) projection uninitialised
        projection = clip.cond_stage_model.clip_l.transformer.text_projection.weight
        projection.copy_(torch.eye(projection.shape[0], dtype=projection.dtype))
    return clip


class ClipFromFile:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"weights": ("STRING", {"default": ""}), "config": ("STRING", {"default": ""}),
                             "precision": (["fp32", "comfy default"],)}}

    RETURN_TYPES = ("CLIP",)
    NOT_IDEMPOTENT = True
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, weights, config, precision):
        return (build_sd1_clip(weights, config, precision == "fp32"),)


class Encode:
    """What CLIPTextEncode does (tokenize, encode_from_tokens), plus writing cond and token ids; ``after``
    orders it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP",),
                "text": ("STRING", {"default": ""}),
                "key": ("STRING", {"default": "cond"}),
            },
            "optional": {"after": ("CONDITIONING",)},
        }

    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_NODE = True
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, clip, text, key, after=None):
        tokens = clip.tokenize(text)
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        np.save(out_path(key, ".npy"), cond.detach().float().cpu().numpy())
        ids = {name: [[int(t[0]) for t in chunk] for chunk in chunks] for name, chunks in tokens.items()}
        out_path(key, ".json").write_text(json.dumps({"ids": ids, "patches": len(clip.patcher.patches)}))
        return ([[cond, {"pooled_output": pooled}]],)


class SaveConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "key": ("STRING", {"default": "cond"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY

    def save(self, conditioning, key):
        np.save(out_path(key, ".npy"), conditioning[0][0].detach().float().cpu().numpy())
        return {"ui": {"unlearnkit_test": [key]}}


class LoadImages:
    """PNG files of a folder (sorted) as an IMAGE batch (B, H, W, 3) in [0, 1]; ``count`` 0 gives an empty
    batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": ("STRING", {"default": ""}),
                "count": ("INT", {"default": 8, "min": 0, "max": 4096}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, folder, count):
        from PIL import Image

        files = sorted(Path(folder).glob("*.png"))[:count]
        if not files:
            return (torch.zeros((0, 16, 16, 3)),)
        arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files]
        return (torch.from_numpy(np.stack(arrays)),)


class SaveValue:
    """Writes a STRING (e.g. a file path) and/or an IMAGE batch an UnlearnKit node returned."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"key": ("STRING", {"default": "value"})},
                "optional": {"text": ("STRING", {"forceInput": True}), "images": ("IMAGE",)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY

    def save(self, key, text=None, images=None):
        if text is not None:
            out_path(key, ".json").write_text(json.dumps({"text": text}))
        if images is not None:
            np.save(out_path(key, ".npy"), images.detach().float().cpu().numpy())
        return {"ui": {"unlearnkit_test": [key]}}


class LoadedWeight:
    """Loads a MODEL the way sampling does (ComfyUI patches its weights in place) and writes the weight whose
    key ends with ``name`` (.npy) and the clone's number of weight patches (.json)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "name": ("STRING", {"default": ""}),
                             "key": ("STRING", {"default": "weight"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY

    def save(self, model, name, key):
        import comfy.model_management

        comfy.model_management.load_models_gpu([model])
        state = model.model.state_dict()
        [hit] = [k for k in state if k.endswith(name)]
        np.save(out_path(key, ".npy"), state[hit].detach().float().cpu().numpy())
        out_path(key, ".json").write_text(json.dumps({"key": hit, "patches": len(model.patches)}))
        return {"ui": {"unlearnkit_test": [key]}}


class RealSizeClip:
    """ComfyUI's own SD1 (CLIP-L), SD2 (OpenCLIP-H) or SDXL (CLIP-L + OpenCLIP-G) CLIP at full size, seeded
    random weights in ``dtype``."""

    DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (["sd1", "sd2", "sdxl"],), "dtype": (list(cls.DTYPES),),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CLIP",)
    NOT_IDEMPOTENT = True
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, family, dtype, seed):
        import comfy.sd
        import comfy.sd1_clip
        import comfy.sdxl_clip
        import comfy.supported_models_base
        import comfy.text_encoders.sd2_clip as sd2_clip  # ComfyUI 0.3.x

        from . import seeded_init_

        kinds = {"sd1": (comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel),
                 "sd2": (sd2_clip.SD2Tokenizer, sd2_clip.SD2ClipModel),
                 "sdxl": (comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)}
        target = comfy.supported_models_base.ClipTarget(*kinds[family])
        clip = comfy.sd.CLIP(target, model_options={"dtype": self.DTYPES[dtype]})
        seeded_init_(clip.cond_stage_model, seed)
        return (clip,)


class ClipWeightsMatch:
    """Writes <key>.json {"compared", "missing", "max_error"}: the CLIP's weights with its patches applied (as
    ComfyUI's CLIPSave reads them) against a reference safetensors file in its keys, cast to its dtype."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "reference": ("STRING", {"default": ""}),
                             "key": ("STRING", {"default": "weights"}), "after": ("CONDITIONING",)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "compare"
    CATEGORY = CATEGORY

    def compare(self, clip, reference, key, after):
        import comfy.model_management as mm
        from safetensors.torch import load_file

        mm.load_models_gpu([clip.load_model()], force_patch_weights=True)
        state = clip.cond_stage_model.state_dict()
        errors, missing = [], []
        for name, value in load_file(reference).items():
            if name not in state:
                missing.append(name)
                continue
            errors.append(float((state[name].float() - value.to(state[name].dtype).float()).abs().max()))
        report = {"compared": len(errors), "missing": missing[:5], "max_error": max(errors, default=0.0)}
        out_path(key, ".json").write_text(json.dumps(report))
        return {"ui": {"unlearnkit_test": [key]}}


NODE_CLASS_MAPPINGS = {
    "UKTestLoadedWeight": LoadedWeight,
    "UKTestRealSizeClip": RealSizeClip,
    "UKTestClipWeightsMatch": ClipWeightsMatch,
    "UKTestClipFromFile": ClipFromFile,
    "UKTestEncode": Encode,
    "UKTestSaveConditioning": SaveConditioning,
    "UKTestLoadImages": LoadImages,
    "UKTestSaveValue": SaveValue,
}
