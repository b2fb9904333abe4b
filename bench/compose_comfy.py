"""Compose inside real ComfyUI 0.3.75 (the test harness's engine): speed, quality and attribution of the
evaluate modes, and the memory of LoRA and full-checkpoint shards.

    python bench/compose_comfy.py --json      # last stdout line: one JSON object

Speed and quality: the tiny world's 4 style shards composed by Compose Shards with a classifier gate
(trained here on the shards' own images, x_t only, so a batch mixes styles) against one model (the
paragon), the same KSampler graph otherwise: euler, 20 steps, CFG 4, batch 16 per digit 0-9, the same
seeds; variants interleaved, sampler wall time (clock nodes around KSampler) summed over the digits, median
over repeats. Quality: judge-FID of the images against held-out rendered styles; attribution: each
sample's top-credit shard against the style judge. Keys comfy_speed_ratio_4_<mode> (4 shards ÷ one model),
comfy_fid_vs_every_<mode>, comfy_attribution_acc (fast; _<mode> for each), and
comfy_shard_evals_per_sample_step_<mode> (compute: one model = 1). What one model call costs here
(comfy_call_ms_2_rows, its fixed part, and comfy_call_ms_per_row) says how far shard calls on a few rows
each stay from one call on all rows.

Memory: an SD1.5-size UNet with random weights (fp16 storage), 4 LoRA shards of rank 16 on it (every linear
of the transformer blocks, as SD1.5 LoRAs train), composed, 2 KSampler steps on an 8x8 latent; bytes of
distinct parameter storage held by the composed model and its shards ÷ the base alone
(comfy_memory_ratio_lora_4); then 4 full checkpoints (comfy_memory_ratio_full_4). Each in its own process.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "comfy")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from comfy_harness import Graph, run_graphs  # noqa: E402
from compose_graphs import STYLE_SHARDS, compose, shard_chain, style_shards  # noqa: E402

from unlearnkit.compose.gate_training import GateTrainConfig, train_gate  # noqa: E402
from unlearnkit.tinyworld import store  # noqa: E402
from unlearnkit.tinyworld.data import load_world  # noqa: E402
from unlearnkit.tinyworld.judges import judge_fid, predict  # noqa: E402
from unlearnkit.tinyworld.stages import latents_of  # noqa: E402
from unlearnkit.tinyworld.styles import NON_PLAIN, STYLES  # noqa: E402

log = logging.getLogger("bench.compose_comfy")
ENGINE = "comfy-0.3.75"
FOLDERS_ENV = "UNLEARNKIT_TEST_MODEL_FOLDERS"  # model folders the fixture pack registers in the child
GATE_FILE = "bench_style_gate.safetensors"
MODES = {"every": {"evaluate": "every-shard", "prune_eps": 0.0},
         "per_sample": {"evaluate": "per-sample", "prune_eps": 0.01},
         "fast": {"evaluate": "fast", "prune_eps": 0.01, "fast_sigma": 1.0}}


def trained_gate(out: Path, steps: int) -> Path:
    """The x_t-only classifier gate over the style shards, trained on their own images (once per out dir)."""
    folder = out / "shard_gates"
    if not (folder / GATE_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        world, vae = load_world(), store.load_vae()
        with torch.no_grad():
            latents = {s: latents_of(vae, world.shard_source("style", s).images)[0] for s in STYLE_SHARDS}
        train_gate(latents, str(folder / GATE_FILE), GateTrainConfig(steps=steps), family="tinyworld")
    return folder


def speed_graph(variant: str, batch: int, steps: int, digits: int) -> dict:
    """One graph of ``variant`` ("one" model or a mode of MODES): a clocked KSampler per digit."""
    g = Graph()
    if variant == "one":
        loader = g.node("UnlearnKitLoadTinyWorld", unet="paragon")
        chain, clip, vae = None, loader.out(1), loader.out(2)
    else:
        chain, loaders = style_shards(g)
        clip, vae = loaders[0].out(1), loaders[0].out(2)
        gate = g.node("UnlearnKitLoadShardGate", gate_name=GATE_FILE)
    negative = g.node("CLIPTextEncode", clip=clip, text="")
    if chain is None:
        g.node("UKTestCallCost", model=loader, context_dim=64, key="call cost")
    for d in range(digits):
        model = loader if chain is None else compose(g, chain, "classifier", gate, **MODES[variant])
        positive = g.node("CLIPTextEncode", clip=clip, text=f"a handwritten digit {d}")
        latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=batch)
        start = g.node("UKTestClockStart", model=model, positive=positive, negative=negative, latent=latent,
                       key=f"clock {d}")
        out = g.node("KSampler", model=start.out(0), positive=start.out(1), negative=start.out(2),
                     latent_image=start.out(3), seed=d, steps=steps, cfg=4.0, sampler_name="euler",
                     scheduler="normal", denoise=1.0)
        g.node("UKTestClockStop", samples=out, key=f"clock {d}")
        g.node("UKTestSaveImage", images=g.node("VAEDecode", samples=out, vae=vae), key=f"images {d}")
        if chain is not None:
            report = g.node("UnlearnKitShardAttribution", model=model, latent=out, max_samples=1,
                            filename_prefix="")
            g.node("UKTestSaveText", text=report.out(1), key=f"report {d}")
    return g.prompt()


def images_of(result, digits: int) -> torch.Tensor:
    """The run's images of every digit as (N, 3, 16, 16) in [-1, 1]."""
    arrays = [result.latent(f"images {d}") for d in range(digits)]
    return torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2).float() * 2 - 1


def reports_of(result, digits: int) -> list[dict]:
    return [json.loads((result.out_dir / f"report {d}.txt").read_text()) for d in range(digits)]


def run_speed(args: argparse.Namespace, out: Path) -> dict:
    """Interleaved repeats of every variant in one ComfyUI process; medians and judged quality."""
    variants = ["one", *MODES]
    graphs = {}
    for r in range(args.repeats):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:  # rotate the order
            graphs[f"{v} {r}"] = speed_graph(v, args.batch, args.steps, args.digits)
    run = run_graphs(ENGINE, graphs, out / "comfy-speed")
    for result in run.results.values():
        result.assert_ok()
    seconds = {v: [sum(run[f"{v} {r}"].record(f"clock {d}")["seconds"] for d in range(args.digits))
                   for r in range(args.repeats)] for v in variants}
    median = {v: statistics.median(s) for v, s in seconds.items()}
    last = {v: run[f"{v} {args.repeats - 1}"] for v in variants}  # same seeds in every repeat
    res = judged(last, args)
    for mode in MODES:
        res[f"comfy_seconds_4_{mode}"] = median[mode]
        res[f"comfy_speed_ratio_4_{mode}"] = median[mode] / median["one"]
    cost = {int(k): v for k, v in last["one"].record("call cost")["ms"].items()}
    res.update({"comfy_seconds_one_model": median["one"], "comfy_call_ms_2_rows": cost[2],
                "comfy_call_ms_per_row": (cost[128] - cost[8]) / 120})
    return res


def judged(results: dict, args: argparse.Namespace) -> dict:
    """Judge-FID of each variant ÷ every-shard's, attribution accuracy, compute and style mix per mode."""
    judges = {"digit": store.load_judge("digit"), "style": store.load_judge("style")}
    world = load_world()
    real = torch.cat([world.rendered(world.held_out, s).images for s in NON_PLAIN])
    with torch.no_grad():
        images = {v: images_of(r, args.digits) for v, r in results.items()}
        fid = {v: judge_fid(judges["digit"], x, real) for v, x in images.items()}
        styles = {v: predict(judges["style"], x).tolist() for v, x in images.items()}
    res = {"comfy_fid_one_model": fid["one"], "comfy_fid_every": fid["every"]}
    for mode in MODES:
        reports, seen = reports_of(results[mode], args.digits), styles[mode]
        top = [STYLES.index(s) for rep in reports for s in rep["top_shard"]]
        res[f"comfy_fid_vs_every_{mode}"] = fid[mode] / fid["every"]
        res[f"comfy_attribution_acc_{mode}"] = float(np.mean([t == j for t, j in zip(top, seen)]))
        res[f"comfy_shard_evals_per_sample_step_{mode}"] = float(
            np.mean([sum(rep["evaluations"]) / (args.batch * args.steps) for rep in reports]))
        res[f"comfy_styles_per_batch_{mode}"] = float(  # distinct styles the judge sees in one KSampler batch
            np.mean([len(set(seen[d * args.batch:(d + 1) * args.batch])) for d in range(args.digits)]))
    res["comfy_attribution_acc"] = res["comfy_attribution_acc_fast"]
    return res


def memory_graph(kind: str, steps: int) -> dict:
    """4 shards of an SD1.5-size UNet (rank-16 LoRAs on one base, or full checkpoints), composed and sampled;
    parameter bytes held by the composition and by the base alone."""
    g = Graph()
    base = g.node("UKTestSD15Model", seed=0)
    if kind == "lora":
        shards = [g.node("UKTestLoraModel", model=base, seed=k, rank=16, strength=1.0,
                         coverage="transformers") for k in range(1, 5)]
    else:
        shards = [base] + [g.node("UKTestSD15Model", seed=k) for k in range(1, 4)]
    mix = compose(g, shard_chain(g, *[(m, f"{kind} {k}", 1.0) for k, m in enumerate(shards, start=1)]))
    latent = g.node("KSampler", model=mix, seed=0, steps=steps, cfg=4.0, sampler_name="euler",
                    scheduler="normal", positive=g.conditioning(1, 768), negative=g.conditioning(2, 768),
                    latent_image=g.empty_latent(64, batch=1), denoise=1.0)
    g.node("UKTestParameterBytes", model=mix, key="composed", after=latent)
    g.node("UKTestParameterBytes", model=base, key="base", after=latent)
    return g.prompt()


def run_memory(out: Path) -> dict:
    res = {}
    for kind in ("lora", "full"):  # each in its own ComfyUI process: memory is given back in between
        result = run_graphs(ENGINE, {kind: memory_graph(kind, steps=2)}, out / f"comfy-memory-{kind}")[kind]
        held = {k: result.assert_ok().record(k)["bytes"] for k in ("composed", "base")}
        res[f"comfy_memory_ratio_{kind}_4"] = held["composed"] / held["base"]
        res[f"comfy_memory_bytes_{kind}_4"] = held["composed"]
    res["comfy_memory_bytes_base"] = held["base"]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--batch", type=int, default=16, help="samples per digit (a KSampler batch)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (median)")
    p.add_argument("--digits", type=int, default=10, help="KSampler runs per graph, one per digit 0..")
    p.add_argument("--gate-steps", type=int, default=600)
    p.add_argument("--skip-memory", action="store_true", help="skip the SD1.5-size memory part (~8 GB RAM)")
    p.add_argument("--out", default="unlearnkit-out/bench-compose-comfy")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ[FOLDERS_ENV] = f"shard_gates={trained_gate(out, args.gate_steps)}"
    res: dict = {"engine": ENGINE, "batch": args.batch, "steps": args.steps, "repeats": args.repeats}
    for name, fn in [("speed", lambda: run_speed(args, out)), ("memory", lambda: run_memory(out))]:
        if name == "memory" and args.skip_memory:
            continue
        t0 = time.perf_counter()
        res.update(fn())
        log.info("%s done in %.0f s", name, time.perf_counter() - t0)
        (out / "result.json").write_text(json.dumps(res, indent=1))
    line = json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()})
    print(line if args.json else json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
