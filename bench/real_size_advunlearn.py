"""AdvUnlearn at SD1.5 size through the core (bench/real_size.py's Erase training operation).

A diffusers UNet2DConditionModel and a CLIPTextModel of SD1.5's sizes with seeded random weights, both in
the operation's dtype, SD's DDIM schedule, SD1.x's tokenizer (built offline), 8x8 latents (64 px), DDIM
sampling of 2 steps, one trajectory per prompt; 2 iterations, each with one PGD attack step. Check: finite
losses, the trained encoder moved away from the original (a half-precision encoder trains in float32 master
weights, the result is float32), and the UNet keeps the dtype it was given (no silent upcast).
``seconds_per_iteration``: the second iteration's wall time (the first follows the trajectory sampling).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fixtures")]

from real_size_models import SD1_TEXT, SD15_UNET, random_text_encoder, random_unet  # noqa: E402

from unlearnkit.erase import Components, EraseConfig, train_erased_encoder  # noqa: E402
from unlearnkit.erase.distributed import Runtime  # noqa: E402
from unlearnkit.tinyworld.models import build_scheduler  # noqa: E402
from unlearnkit.tinyworld.tokenizer import clip_tokenizer  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONFIG = EraseConfig(concept=("a photo of a church",), retain=("a photo of a dog", "a photo of a tree"),
                     attack="pgd", iterations=2, warmup=0, attack_steps=1, sampler_steps=2, bank_size=1,
                     retain_batch=1, lr=1e-5)


def components(dtype: torch.dtype, device: torch.device) -> Components:
    unet = random_unet({**SD15_UNET, "sample_size": 8}, seed=0, dtype=dtype).to(device)
    encoder = random_text_encoder(SD1_TEXT, seed=1).to(device=device, dtype=dtype)
    return Components(unet, encoder, clip_tokenizer(), build_scheduler("ddim"), None, "random SD1.5")


def moved(before: dict[str, torch.Tensor], after: torch.nn.Module) -> float:
    """Largest change of any encoder weight."""
    return max(float((p.float() - before[n].float()).abs().max()) for n, p in after.named_parameters())


def run_advunlearn(dtype: str, work: Path) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    comps = components(DTYPES[dtype], device)
    before = {n: p.detach().clone() for n, p in comps.text_encoder.named_parameters()}
    stamps = [time.perf_counter()]
    result = train_erased_encoder(comps, CONFIG, runtime=Runtime(device=device), progress=False,
                                  on_step=lambda done: stamps.append(time.perf_counter()))
    losses = np.array(result.losses)
    dtypes = sorted({str(p.dtype) for p in result.encoder.parameters()})
    unet_dtypes = sorted({str(p.dtype) for p in comps.unet.parameters()})
    change = moved(before, result.encoder)
    np.save(work / "losses.npy", losses)
    ok = bool(np.isfinite(losses).all() and change > 0 and dtypes == ["torch.float32"]
              and unet_dtypes == [str(DTYPES[dtype])])
    return {"ok": ok, "seconds": result.seconds, "seconds_per_iteration": stamps[-1] - stamps[-2],
            "losses": losses.tolist(), "kept": "losses.npy", "tolerance_vs_fp32": 0.1,
            "check": f"losses {np.round(losses, 4).tolist()}, encoder moved {change:.3g}, "
                     f"trained encoder {dtypes}, UNet {unet_dtypes}"}
