"""Erase at real size (bench/real_size.py's Erase operations).

Swaps: ComfyUI 0.3.75's own SD1 (CLIP-L), SD2 (OpenCLIP-H) and SDXL (CLIP-L + OpenCLIP-G) CLIP objects with
seeded random weights in the operation's dtype (fixture UKTestRealSizeClip); a random encoder of the same
size written in every layout people ship for that family, fp16 as shipped, each swapped in by Swap Text
Encoder in its own graph. Check: every encoder weight of the swapped clone equals the file's (in the CLIP's
dtype), its conditioning is finite and differs from the input CLIP's, which is unchanged.

AdvUnlearn: 2 iterations at SD1.5 size through the core (diffusers UNet2DConditionModel and CLIPTextModel
in the operation's dtype, SD's DDIM schedule, 8x8 latents, 2 DDIM sampling steps, one PGD attack step each).
Check: finite losses, the trained encoder moved, and it keeps the dtype it was given.
"""
from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "comfy"), str(ROOT / "tests" / "fixtures")]

from comfy_harness import Graph, run_graphs  # noqa: E402
from real_size_models import SD1_TEXT, SD2_TEXT, SDXL_G_TEXT, random_text_encoder  # noqa: E402

from unlearnkit import io  # noqa: E402
from unlearnkit.textencoders.layouts import from_hf  # noqa: E402

ENGINE = "comfy-0.3.75"
FOLDERS_ENV = "UNLEARNKIT_TEST_MODEL_FOLDERS"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROMPT = "a painting of a lighthouse in the style of van gogh"
SD1_FILES = {"sd1_hf/": "hf folder", "sd1_hf.safetensors": "hf",
             "sd1_text_model.safetensors": "hf_text_model", "sd1_ldm.safetensors": "ldm_sd1",
             "sd1_comfy.safetensors": "comfyui_sd1", "sd1_advunlearn.pt": "diffusers_text_encoder"}
SD2_FILES = {"sd2_hf/": "hf folder", "sd2_ldm.safetensors": "ldm_sd2_open_clip",
             "sd2_open_clip.safetensors": "open_clip", "sd2_comfy.safetensors": "comfyui_sd2"}
SDXL_G_FILES = {"sdxl_g_hf/": "hf folder", "sdxl_g_sgm.safetensors": "sgm_open_clip_g"}
SWAPS = {  # family -> [(the CLIP's encoder a file replaces, its config, {file name: layout})]
    "sd1": [("clip_l", SD1_TEXT, SD1_FILES)],
    "sd2": [("clip_h", SD2_TEXT, SD2_FILES)],
    "sdxl": [("clip_l", SD1_TEXT, {"sdxl_l_hf.safetensors": "hf", "sdxl_l_sgm.safetensors": "sgm_clip_l"}),
             ("clip_g", SDXL_G_TEXT, SDXL_G_FILES)],
}
OPEN_CLIP_PREFIXES = {"ldm_sd2_open_clip": "cond_stage_model.model.", "open_clip": "",
                      "sgm_open_clip_g": "conditioner.embedders.1.model."}
EXTRA_PREFIXES = {"sgm_clip_l": "conditioner.embedders.0.transformer.text_model."}


def to_open_clip(hf: dict, prefix: str) -> dict:
    """HF CLIPTextModel keys -> open_clip's text tower keys (what SD2 / SDXL checkpoints hold)."""
    out = {prefix + "token_embedding.weight": hf["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": hf["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": hf["final_layer_norm.weight"],
           prefix + "ln_final.bias": hf["final_layer_norm.bias"]}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    layers = {int(k.split(".")[2]) for k in hf if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [hf[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out.update({f"{dst}{b}.{kind}": hf[f"{src}{a}.{kind}"] for a, b in names.items()})
    return out


def write_layout(model, hf: dict, folder: Path, name: str, layout: str) -> None:
    path = folder / name
    if layout == "hf folder":
        path.mkdir()
        model.config.to_json_file(path / "config.json")
        io.save_safetensors(path / "model.safetensors", hf)
    elif layout in OPEN_CLIP_PREFIXES:
        io.save_safetensors(path, to_open_clip(hf, OPEN_CLIP_PREFIXES[layout]))
    elif layout in EXTRA_PREFIXES:
        io.save_safetensors(path, {EXTRA_PREFIXES[layout] + k: v for k, v in hf.items()})
    elif name.endswith(".pt"):
        torch.save(from_hf(hf, layout), path)
    else:
        io.save_safetensors(path, from_hf(hf, layout))


def write_sources(family: str, folder: Path) -> dict[str, tuple[str, str]]:
    """Every file of ``family``, written from seeded random encoders (fp16, as shipped); {entry: (clip key
    prefix, reference file)} where the reference holds the encoder in the CLIP's keys."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for seed, (target, config, files) in enumerate(SWAPS[family], start=1):
        model = random_text_encoder(config, seed, fp16_exact=True)
        hf = {k: v.half().contiguous() for k, v in model.state_dict().items()}
        for name, layout in files.items():
            write_layout(model, hf, folder, name.rstrip("/"), layout)
            entry = name + "model.safetensors" if name.endswith("/") else name
            entries[entry] = target
        io.save_safetensors(folder / f"reference_{target}.safetensors",
                            {f"{target}.transformer.text_model.{k}": v for k, v in hf.items()})
        del model, hf
        gc.collect()
    return entries


def swap_graph(family: str, dtype: str, entry: str, reference: Path) -> dict:
    g = Graph()
    clip = g.node("UKTestRealSizeClip", family=family, dtype=dtype, seed=0)
    before = g.node("UKTestEncode", clip=clip, text=PROMPT, key="before")
    swapped = g.node("UnlearnKitSwapTextEncoder", clip=clip, encoder_name=entry)
    after = g.node("UKTestEncode", clip=swapped, text=PROMPT, key="swapped", after=before)
    g.node("UKTestClipWeightsMatch", clip=swapped, reference=str(reference), key="swapped weights",
           after=after)
    g.node("UKTestEncode", clip=clip, text=PROMPT, key="input after", after=after)
    return g.prompt()


def swap_check(result) -> tuple[bool, str]:
    weights = result.record("swapped weights")
    before, swapped, again = (result.latent(k) for k in ("before", "swapped", "input after"))
    finite = bool(np.isfinite(swapped).all())
    changed = float(np.abs(swapped - before).max()) > 1e-3
    untouched = bool(np.array_equal(before, again))
    ok = weights["max_error"] == 0.0 and weights["compared"] > 0 and finite and changed and untouched
    return ok, (f"{weights['compared']} weights equal the file's: {weights['max_error'] == 0.0}, "
                f"finite {finite}, changed {changed}, input untouched {untouched}")


def run_swaps(family: str, dtype: str, work: Path) -> dict:
    folder = work / "clip"
    entries = write_sources(family, folder)
    os.environ[FOLDERS_ENV] = f"clip={folder}"
    graphs = {entry: swap_graph(family, dtype, entry, folder / f"reference_{target}.safetensors")
              for entry, target in entries.items()}
    run = run_graphs(ENGINE, graphs, work / "comfy", unload_between=True)
    checks = {}
    for entry, result in run.results.items():
        checks[entry] = swap_check(result) if result.success else (False, result.error_text[-300:])
    failed = {k: why for k, (ok, why) in checks.items() if not ok}
    seconds = sum(r.seconds for r in run.results.values())
    return {"ok": not failed, "seconds": seconds, "layouts": len(checks),
            "check": f"{len(checks) - len(failed)}/{len(checks)} layouts swap exactly"
                     + (f"; failed {json.dumps(failed)[:600]}" if failed else "")}
