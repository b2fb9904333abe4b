"""TEST FIXTURE, not part of UnlearnKit: fixture nodes for the Compose and tiny-world tests (and benches).

LoRA-patched and broken (NaN) clones, savers for IMAGE and STRING outputs into the folder named
by UNLEARNKIT_TEST_OUT, and files written into / copied from ComfyUI's output folder. The host-side
fixtures of Compose's own tests and benches (seeded latents, σ lists, flow models, short memory, SD1.5-size
models, clocks, parameter bytes) are in compose_host_fixtures.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .outputs import CATEGORY, OutputNode, out_path, written


class LoraModel:
    """A clone with a seeded random LoRA (attention, 1x1 and 3x3 convs, output conv) through ComfyUI's LoRA
    loader."""

    TARGETS = (
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_v",
        "input_blocks.1.1.proj_in",
        "middle_block.0.in_layers.2",
        "out.2",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "rank": ("INT", {"default": 2, "min": 1, "max": 16}),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0})},
                "optional": {"coverage": (["few", "transformers", "attention"],)}}

    RETURN_TYPES = ("MODEL",)
    NOT_IDEMPOTENT = True
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    @classmethod
    def targets(cls, state: dict, coverage: str) -> list[str]:
        """The test's few layers; what a kohya SD1.5 LoRA trains (``transformers``: every linear of the
        transformer blocks and their proj_in / proj_out); or what diffusers' LoRA scripts train
        (``attention``: to_q, to_k, to_v, to_out.0 of every attention layer)."""
        if coverage == "few":
            return list(cls.TARGETS)
        attention = ("to_q", "to_k", "to_v", "0")  # 0: to_out.0
        wanted = {"transformers": lambda k: "transformer_blocks" in k or ".proj_" in k,
                  "attention": lambda k: ".attn" in k and k.rsplit(".", 2)[-2] in attention}
        keys = [k[len("diffusion_model."):-len(".weight")] for k, v in state.items()
                if k.endswith(".weight") and v.dim() >= 2 and wanted[coverage](k)]
        return sorted(keys)

    def patch(self, model, seed, rank, strength, coverage="few"):
        import comfy.sd

        gen = torch.Generator().manual_seed(seed)
        state = model.model.state_dict()
        lora = {}
        targets = self.targets(state, coverage)
        for target in targets:
            weight = state[f"diffusion_model.{target}.weight"]
            name = "lora_unet_" + target.replace(".", "_")
            down_shape = (rank, *weight.shape[1:])
            up_shape = (weight.shape[0], rank) + (1,) * (weight.dim() - 2)
            lora[f"{name}.lora_down.weight"] = (torch.randn(down_shape, generator=gen) / math.sqrt(
                weight[0].numel())).to(weight.dtype)  # LoRA files hold their model's dtype
            lora[f"{name}.lora_up.weight"] = torch.randn(up_shape, generator=gen).to(weight.dtype)
            lora[f"{name}.alpha"] = torch.tensor(float(rank))
        out, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0.0)
        assert len(out.patches) == len(targets), sorted(out.patches)
        return (out,)


class NaNModel:
    """A clone whose output-conv bias patch is NaN: a broken shard."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    NOT_IDEMPOTENT = True
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model):
        out = model.clone()
        bias = model.model.state_dict()["diffusion_model.out.2.bias"]
        out.add_patches({"diffusion_model.out.2.bias": (torch.full(bias.shape, float("nan")),)}, 1.0)
        return (out,)


class SaveImage(OutputNode):
    """IMAGE (B, H, W, C) in [0, 1] -> <key>.npy."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "key": ("STRING", {"default": "image"})}}

    def write(self, images, key):
        np.save(out_path(key, ".npy"), images.detach().float().cpu().numpy())
        return written(key)


class SaveText(OutputNode):
    """STRING -> <key>.txt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"text": ("STRING", {"forceInput": True}), "key": ("STRING", {"default": "text"})}
        }

    def write(self, text, key):
        out_path(key, ".txt").write_text(text)
        return written(key)


class WriteOutputFile(OutputNode):
    """Writes a test file into ComfyUI's output folder: random bytes, or a safetensors file of another
    format."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": "shard_gates/bad.safetensors"}),
                             "content": (["garbage", "other safetensors"],)}}

    NOT_IDEMPOTENT = True

    def write(self, path, content):
        import folder_paths
        from safetensors.torch import save_file

        target = Path(folder_paths.get_output_directory()) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if content == "garbage":
            target.write_bytes(b"\x07not a safetensors file" * 8)
        else:
            save_file({"weight": torch.zeros(2, 2)}, str(target), metadata={"format": "pt"})
        return written(path)


class CopyOutputFile(OutputNode):
    """Copies <ComfyUI output>/<path> to <key>.txt once ``after`` exists (a file a node wrote into
    output/)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""}), "key": ("STRING", {"default": "file"}),
                             "after": ("STRING", {"forceInput": True})}}

    def write(self, path, key, after):
        import folder_paths

        out_path(key, ".txt").write_bytes((Path(folder_paths.get_output_directory()) / path).read_bytes())
        return written(key)


NODE_CLASS_MAPPINGS = {
    "UKTestLoraModel": LoraModel,
    "UKTestNaNModel": NaNModel,
    "UKTestSaveImage": SaveImage,
    "UKTestSaveText": SaveText,
    "UKTestWriteOutputFile": WriteOutputFile,
    "UKTestCopyOutputFile": CopyOutputFile,
}
from .compose_host_fixtures import NODE_CLASS_MAPPINGS as _HOST_FIXTURES  # noqa: E402

NODE_CLASS_MAPPINGS.update(_HOST_FIXTURES)
