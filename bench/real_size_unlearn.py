"""Unlearn (SLUG) at real size through the core (bench/real_size.py's Unlearn operations).

SLUG: one pass (per-layer gradients over every candidate layer, importance / alignment, the Pareto front,
a step search of 3 evaluations on the first candidate) on open_clip's ViT-L-14 (text and image towers) and
on a transformers CLIPModel ViT-L/14 whose text tower is SD1.5's text encoder (text tower only), seeded
random weights in the operation's dtype, 2 forget images of one concept and 2 retain images with captions
(the minutes go to the image tower at 224 px; more images only scale them).
Check: finite scores and step, the patch (in the model's dtype) changes its layer when applied and its
removal gives the layer's bytes back.

Patches: SD1.5's text encoder (CLIPTextModel) in fp32, or in fp16 and bf16 for the half operation; two
patches on one layer and one on another, applied, stacked, removed in another order. Check: each applied
layer equals original + Σ deltas rounded once to its dtype (never lost, never upcast), the encoder's output
stays close to the fp32 model's with the same patches, and removal restores every byte.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fixtures")]

from real_size_models import (  # noqa: E402
    SD1_TEXT,
    random_hf_clip_vit_l,
    random_open_clip_vit_l,
    random_text_encoder,
)

from unlearnkit.unlearn import SlugConfig, apply_patch, make_patch, remove_patch, run_slug  # noqa: E402
from unlearnkit.unlearn.step_search import StepSearchConfig  # noqa: E402
from unlearnkit.unlearn.targets import HFClipAdapter, OpenClipAdapter  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONCEPT = "Elon Musk"
CAPTIONS = ["a photo of a dog", "a red car on a street"]
IMAGES = len(CAPTIONS)  # per set
SEARCH_EVALS = 3
PATCH_LAYERS = ("encoder.layers.7.mlp.fc1.weight", "encoder.layers.3.self_attn.q_proj.weight")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def images(seed: int, count: int = IMAGES) -> torch.Tensor:
    """Normalised (count, 3, 224, 224) image batches (smooth random fields, as CLIP sees photos)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn((count, 3, 14, 14), generator=gen)
    return torch.nn.functional.interpolate(coarse, size=224, mode="bilinear", align_corners=False)


def slug_once(adapter, work: Path) -> dict:
    """One SLUG pass; its patch applied and removed on the model (bytes compared)."""
    # random weights recognise no one, so a trained model's search would stop at once: an unreachable
    # forget target keeps it searching for its 3 evaluations, as on a model that knows the concept
    config = SlugConfig(max_layers=1, progress=False,
                        search=StepSearchConfig(max_evals=SEARCH_EVALS, forget_target=-1.0))
    result = run_slug(adapter, forget=[(images(1), CONCEPT)], retain=[(images(2), CAPTIONS)], config=config)
    patch = result.to_patch(adapter, CONCEPT)
    params = dict(adapter.model.named_parameters())
    before = params[result.layer].detach().clone()
    name = apply_patch(adapter.model, patch)
    changed = float((params[name].detach().float() - before.float()).abs().max())
    remove_patch(adapter.model, patch)
    restored = torch.equal(params[name].detach(), before)
    scores = np.array([result.scores.importance, result.scores.alignment], dtype=np.float64)
    finite = bool(np.isfinite(scores).all() and np.isfinite(result.step))
    np.save(work / "forget_similarity.npy", np.array([result.similarity_before]))
    evals = int(result.metrics()["search_evals"])
    ok = finite and changed > 0 and restored and patch.delta.dtype == before.dtype and evals == SEARCH_EVALS
    return {"ok": ok, "layer": result.layer, "step": result.step, "kept": "forget_similarity.npy",
            "tolerance_vs_fp32": 0.05,
            "evaluations": evals,
            "check": f"layer {result.layer}, step {result.step:.3g} ({evals} evaluations), finite {finite}, "
                     f"patch {patch.delta.dtype} changes the layer by {changed:.3g}, "
                     f"restored exactly {restored}"}


def run_slug_open_clip(dtype: str, work: Path) -> dict:
    model = random_open_clip_vit_l(seed=0).to(device=device(), dtype=DTYPES[dtype])
    return slug_once(OpenClipAdapter(model, tower="both"), work)


def run_slug_sd15_text(dtype: str, work: Path) -> dict:
    model = random_hf_clip_vit_l(seed=0).to(device=device(), dtype=DTYPES[dtype])
    return slug_once(HFClipAdapter(model, tower="text"), work)


def deltas(encoder: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Three deltas of SLUG's size (a few % of the layer's scale): two on one layer, one on another."""
    gen = torch.Generator().manual_seed(3)
    params = dict(encoder.named_parameters())
    layers = [PATCH_LAYERS[0], PATCH_LAYERS[0], PATCH_LAYERS[1]]
    return [(n, 0.05 * params[n].float().std() * torch.randn(params[n].shape, generator=gen)) for n in layers]


def stacked(original: torch.Tensor, patches: list) -> torch.Tensor:
    """original + each delta in turn, in float32, rounded once to the layer's dtype."""
    total = original.float()
    for patch in patches:
        total = total + patch.delta.float()
    return total.to(original.dtype)


def patched_output(encoder: torch.nn.Module, dtype: torch.dtype, ids: torch.Tensor) -> dict:
    """The encoder in ``dtype`` with the three patches stacked: per-layer exactness, output, restore."""
    model = encoder.to(dtype)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    patches = [make_patch(model, n, d, CONCEPT, 1.0) for n, d in deltas(model)]
    for patch in patches:
        apply_patch(model, patch)
    params = dict(model.named_parameters())
    exact = all(torch.equal(params[n], stacked(original[n], [p for p in patches if p.layer == n]))
                for n in PATCH_LAYERS)
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state.float()
    for patch in (patches[1], patches[2], patches[0]):
        remove_patch(model, patch)
    restored = all(torch.equal(p.detach(), original[n]) for n, p in model.named_parameters())
    return {"exact": exact, "restored": restored, "out": out}


def run_patches(dtype: str, work: Path) -> dict:
    import open_clip

    ids = open_clip.tokenize(["a photo of Elon Musk", "a painting of a lighthouse"], context_length=77)
    reference = patched_output(random_text_encoder(SD1_TEXT, seed=1), torch.float32, ids)["out"]
    dtypes = ["fp32"] if dtype == "fp32" else ["fp16", "bf16"]
    checks, ok = [], True
    for name in dtypes:
        got = patched_output(random_text_encoder(SD1_TEXT, seed=1), DTYPES[name], ids)
        error = float((got["out"] - reference).abs().max() / reference.abs().max())
        fine = got["exact"] and got["restored"] and error <= (1e-6 if name == "fp32" else 0.05)
        ok = ok and fine
        checks.append(f"{name}: patched layers exact {got['exact']}, output vs fp32 {error:.2g}, "
                      f"restored {got['restored']}")
    return {"ok": ok, "check": "; ".join(checks)}
