"""Compose at real size inside ComfyUI 0.3.75 (bench/real_size.py's Compose operations).

One ComfyUI process per operation, one graph (the models are built once): an SD1.5- or SDXL-size base with
seeded random weights (fixture UKTestSD15Model) in the operation's dtype, 4 rank-16 LoRA shards of it (ΔW
about 0.4x W; on SD1.5 every linear of the transformer blocks, as kohya's scripts train them, on SDXL the
attention layers, as diffusers' scripts do) or 2 full SD1.5 checkpoints. Timing: KSampler, euler,
``steps`` steps on an 8x8 latent (64 px), the base alone and the composition (evaluate fast), each twice
(the faster counts).
Checks, each from one Euler step σ=3 -> 0 (which returns the CFG-combined x0): every shard alone; the
composition with every gate (static, classifier with a random gate file, density, density-ode; every
shard evaluated) against Σ_k w_k x0_k with the weights its attribution report recorded (one set for cond and
uncond); the static mix with cond and uncond in separate calls; ``fast`` above σ 1 gives each sample one
shard's x0; finite outputs; the composition holds the base's dtype (parameter bytes).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "comfy")]

from comfy_harness import Graph, Ref, run_graphs  # noqa: E402
from compose_graphs import compose, shard_chain  # noqa: E402

from unlearnkit.compose.gate_model import GateConfig, GateNet, save_gate  # noqa: E402

ENGINE = "comfy-0.3.75"
FOLDERS_ENV = "UNLEARNKIT_TEST_MODEL_FOLDERS"
GATE_FILE = "real_size_gate.safetensors"
SIGMA, CFG, BATCH = 3.0, 3.0, 2
ARCH = {"sd15": {"context": 768, "pooled": 0, "lora": "transformers"},
        "sdxl": {"context": 2048, "pooled": 1280, "lora": "attention"}}
GATES = ("static", "classifier", "density", "density-ode")
EVERY = {"evaluate": "every-shard", "prune_eps": 0.0}
FAST = {"evaluate": "fast", "prune_eps": 0.01, "fast_sigma": 1.0}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# ΔW about 0.4x W per layer: as trained LoRAs, not above (random LoRAs of several times W's size make the
# random network chaotic: float rounding alone then tells W x + ΔW x from (W + ΔW) x)
LORA_STRENGTH = 0.1
TOLERANCE = {"fp32": 2e-3, "bf16": 6e-2, "fp16": 2e-2}  # max |error| ÷ max |expected x0|


def write_gate(folder: Path, names: tuple[str, ...]) -> str:
    """A seeded, untrained classifier gate over ``names`` (weights differ per sample); its folder entry."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = GateNet(GateConfig(names=names, latent_shape=(4, 8, 8), family="real-size"))
    with torch.no_grad():
        net.head.weight.mul_(10.0)
    save_gate(str(folder / GATE_FILE), net)
    return f"shard_gates={folder}"


class Sampling:
    """Conditioning, latents and samplers of one architecture in a graph."""

    def __init__(self, g: Graph, arch: str) -> None:
        self.g, spec = g, ARCH[arch]
        self.positive, self.negative = (g.node("UKTestConditioning", seed=s, context_dim=spec["context"],
                                               tokens=77, pooled=spec["pooled"]) for s in (1, 2))

    def one_step(self, model: Ref, key: str) -> Ref:
        """SamplerCustom from a seeded latent at σ straight to 0 (no added noise): the CFG x0, saved."""
        g = self.g
        out = g.node("SamplerCustom", model=model, add_noise=False, noise_seed=0, cfg=CFG,
                     positive=self.positive, negative=self.negative,
                     sampler=g.node("KSamplerSelect", sampler_name="euler"),
                     sigmas=g.node("UKTestSigmas", sigma=SIGMA),
                     latent_image=g.node("UKTestLatent", seed=5, batch=BATCH, size=8))
        g.save_latent(out, key)
        return out

    def timed(self, model: Ref, key: str, steps: int) -> None:
        g = self.g
        start = g.node("UKTestClockStart", model=model, positive=self.positive, negative=self.negative,
                       latent=g.empty_latent(64, batch=1), key=key)
        out = g.node("KSampler", model=start.out(0), positive=start.out(1), negative=start.out(2),
                     latent_image=start.out(3), seed=0, steps=steps, cfg=CFG, sampler_name="euler",
                     scheduler="normal", denoise=1.0)
        g.node("UKTestClockStop", samples=out, key=key)


def shard_models(g: Graph, kind: str, arch: str, dtype: str) -> tuple[Ref, dict[str, Ref]]:
    """(base, {name: shard}): 4 LoRA clones of one base, or 2 full checkpoints."""
    base = g.node("UKTestSD15Model", seed=0, arch=arch, dtype=dtype)
    if kind == "lora4":
        return base, {f"l{k}": g.node("UKTestLoraModel", model=base, seed=k, rank=16, strength=LORA_STRENGTH,
                                      coverage=ARCH[arch]["lora"]) for k in range(1, 5)}
    return base, {"f1": base, "f2": g.node("UKTestSD15Model", seed=1, arch=arch, dtype=dtype)}


def compose_graph(kind: str, arch: str, dtype: str, steps: int) -> dict:
    g = Graph()
    s = Sampling(g, arch)
    base, shards = shard_models(g, kind, arch, dtype)
    chain = shard_chain(g, *[(m, n, 0.1 * k) for k, (n, m) in enumerate(shards.items(), start=1)])
    composed = compose(g, chain)  # the defaults: evaluate fast
    for repeat in range(2):
        s.timed(base, f"time base {repeat}", steps)
        s.timed(composed, f"time composed {repeat}", steps)
    for name, model in shards.items():
        s.one_step(model, f"alone {name}")
    gate = g.node("UnlearnKitLoadShardGate", gate_name=GATE_FILE)
    for kind_of_gate in GATES:
        extra = {"shard_gate": gate} if kind_of_gate == "classifier" else {}
        model = compose(g, chain, kind_of_gate, **extra, **EVERY)
        out = s.one_step(model, f"mix {kind_of_gate}")
        report = g.node("UnlearnKitShardAttribution", model=model, latent=out, max_samples=1,
                        filename_prefix="")
        g.node("UKTestSaveText", text=report.out(1), key=f"report {kind_of_gate}")
        if kind_of_gate == "static":
            s.one_step(g.node("UKTestShortOfMemory", model=model), "mix static apart")
            g.node("UKTestParameterBytes", model=model, key="bytes composed", after=out)
    s.one_step(compose(g, chain, "classifier", gate, **FAST), "mix fast")
    g.node("UKTestParameterBytes", model=base, key="bytes base")
    return g.prompt()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def mixture_errors(result, names: list[str]) -> dict[str, float]:
    """Each gate's composed x0 against Σ_k w_k x0_k (weights from its report) and the one-shard fast draws."""
    alone = np.stack([result.latent(f"alone {n}") for n in names])  # (N, B, C, H, W)
    errors = {}
    for gate in GATES:
        report = json.loads((result.out_dir / f"report {gate}.txt").read_text())
        weights = np.array(report["weights"])[:, 0, :]  # (B, N): the one step's weights
        expected = np.einsum("bn,nbchw->bchw", weights, alone)
        errors[gate] = relative_error(result.latent(f"mix {gate}"), expected)
        if gate == "static":
            errors["static apart"] = relative_error(result.latent("mix static apart"), expected)
    fast = result.latent("mix fast")
    errors["fast one shard"] = max(min(relative_error(fast[b], alone[k, b]) for k in range(len(names)))
                                   for b in range(BATCH))
    return errors


def seconds_of(result, key: str) -> float:
    return min(result.record(f"{key} {r}")["seconds"] for r in range(2))


def run_compose(kind: str, arch: str, dtype: str, work: Path, steps: int = 2) -> dict:
    """One Compose operation: its timing, its checks and the latents kept for the fp32 comparison."""
    names = ["l1", "l2", "l3", "l4"] if kind == "lora4" else ["f1", "f2"]
    os.environ[FOLDERS_ENV] = write_gate(work / "shard_gates", tuple(names))
    graph = compose_graph(kind, arch, dtype, steps)
    run = run_graphs(ENGINE, {"op": graph}, work / "comfy")
    result = run["op"].assert_ok()
    errors = mixture_errors(result, names)
    held = {k: result.record(f"bytes {k}")["bytes"] for k in ("composed", "base")}
    dtypes = result.record("bytes composed")["dtypes"]
    finite = all(np.isfinite(result.latent(f"mix {g}")).all() for g in GATES)
    tolerance = TOLERANCE[dtype]
    ok = finite and max(errors.values()) <= tolerance and dtypes == [str(DTYPES[dtype])]
    np.save(work / "mix_static.npy", result.latent("mix static"))
    base_s, composed_s = seconds_of(result, "time base"), seconds_of(result, "time composed")
    return {"ok": bool(ok), "seconds": result.seconds, "base_seconds": base_s, "composed_seconds": composed_s,
            "seconds_ratio": composed_s / base_s, "errors": errors, "tolerance": tolerance,
            "memory_ratio": held["composed"] / held["base"], "base_bytes": held["base"],
            "kept": "mix_static.npy", "tolerance_vs_fp32": TOLERANCE[dtype],
            "check": f"finite {finite}, max x0 error {max(errors.values()):.2g} (tolerance {tolerance:g}), "
                     f"UNet weights {dtypes}, held {held['composed'] / held['base']:.2f}x the base"}
