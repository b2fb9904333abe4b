"""Reproduce CDM on the tiny world: composition quality, forgetting, attribution, speed.

    python bench/compose.py --json      # last stdout line: one JSON object

Figures (issue "Compose"): fid_ratio_8split (gated 8-shard composition ÷ paragon, judge-FID;
paper: ≤ 1.10) and naive averaging's ratio; forget_seconds / forget_ratio; attribution_acc;
forgotten_style_rate; speed_ratio_4 with pruning variants and gate_overhead.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from unlearnkit import io  # noqa: E402
from unlearnkit.compose.diffusers_unet import ComposedUNet  # noqa: E402
from unlearnkit.compose.gate_model import ClassifierGate, GateNet  # noqa: E402
from unlearnkit.compose.gate_training import GateTrainConfig, gate_accuracy, train_gate  # noqa: E402
from unlearnkit.compose.gates import StaticGate  # noqa: E402
from unlearnkit.compose.shards import Shard, ShardSet  # noqa: E402
from unlearnkit.tinyworld import store  # noqa: E402
from unlearnkit.tinyworld.data import caption, load_world, shard_names  # noqa: E402
from unlearnkit.tinyworld.judges import judge_fid, predict  # noqa: E402
from unlearnkit.tinyworld.models import build_scheduler  # noqa: E402
from unlearnkit.tinyworld.pipeline import build_pipeline, pipeline_images  # noqa: E402
from unlearnkit.tinyworld.stages import latents_of  # noqa: E402
from unlearnkit.tinyworld.styles import NON_PLAIN, STYLES  # noqa: E402
from unlearnkit.tinyworld.tasks.gate_data import gate_data  # noqa: E402

log = logging.getLogger("bench.compose")
ACP = build_scheduler("ddim").alphas_cumprod


def styled_prompts(k: int, styles=NON_PLAIN) -> tuple[list[str], torch.Tensor]:
    """k × "a handwritten digit N in S style" per digit and style, with style labels."""
    pairs = [(d, s) for d in range(10) for s in styles for _ in range(k)]
    return [caption(d, s, 0) for d, s in pairs], torch.tensor([STYLES.index(s) for _, s in pairs])


def shard_latents(shard_set: str, vae) -> dict[str, torch.Tensor]:
    world = load_world()
    return {n: latents_of(vae, world.shard_source(shard_set, n).images)[0] for n in shard_names(shard_set)}


def trained_gate(shard_set: str, vae, steps: int, out_dir: Path, te=None) -> GateNet:
    """A classifier gate on the shards' latents; with the text encoder te it also reads the prompt."""
    path = out_dir / f"gate_{shard_set}{'_prompt' if te is not None else ''}.safetensors"
    cfg = GateTrainConfig(steps=steps)
    if te is None:
        return train_gate(shard_latents(shard_set, vae), str(path), cfg, family="tinyworld", overwrite=True)
    latents, contexts, null = gate_data(shard_set, te, vae)
    return train_gate(
        latents, str(path), cfg, family="tinyworld", overwrite=True, contexts=contexts, null_context=null
    )


def sample(unet, te, vae, prompts, steps: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Images in [-1, 1] and wall seconds for one pipeline run (batch = all prompts)."""
    pipe = build_pipeline(unet, te, vae)
    t0 = time.perf_counter()
    with torch.no_grad():
        img = pipeline_images(pipe, prompts, steps=steps, guidance=4.0, seed=seed)
    return img, time.perf_counter() - t0


def composed(shards: dict, gate, **kw) -> ComposedUNet:
    return ComposedUNet(list(shards.values()), list(shards), gate, ACP, **kw)


def fid_8split(te, vae, judges, real, k: int, steps: int, gate_steps: int, out_dir: Path) -> dict:
    shards = store.load_shards("split")
    prompts, _ = styled_prompts(k)
    gate = ClassifierGate(trained_gate("split", vae, gate_steps, out_dir), list(shards), [1] * len(shards))
    fid = {}
    for name, unet in [("paragon", store.load_unet("paragon")), ("gated", composed(shards, gate)),
                       ("naive", composed(shards, StaticGate(list(shards), [1] * len(shards))))]:
        img, _ = sample(unet, te, vae, prompts, steps)
        fid[name] = judge_fid(judges["digit"], img, real)
    return {
        "fid_paragon": fid["paragon"],
        "fid_gated_8split": fid["gated"],
        "fid_naive_8split": fid["naive"],
        "fid_ratio_8split": fid["gated"] / fid["paragon"],
        "fid_ratio_8split_naive": fid["naive"] / fid["paragon"],
    }


def forgetting(retrain_probe_steps: int) -> dict:
    """Dropping a shard vs retraining the paragon (or one shard) without that source."""
    from unlearnkit.tinyworld.loops import train_unet
    from unlearnkit.tinyworld.stages import unet_inputs

    paths = {n: store.unet_path(f"split/{n}") for n in shard_names("split")}
    shard_set = ShardSet(tuple(Shard(n, store.load_unet(f"split/{n}"), source=str(path),
                                     sha256=io.file_sha256(path)) for n, path in paths.items()))
    t0 = time.perf_counter()
    rest, record = shard_set.forget("split3", reason="bench")
    composed({s.name: s.model for s in rest}, StaticGate(rest.names, rest.priors))
    forget_seconds = time.perf_counter() - t0
    text_states, vae = unet_inputs(store.WEIGHTS_DIR)
    world = load_world()
    data = world.private_set()
    data = data.where(~torch.isin(data.sources, world.private[world.split_of == 3]))  # all private but split3
    cfg = store.read_config()["training"]["steps"]

    def seconds_per_step(batch: int) -> float:
        unet = store.load_unet("base")
        t0 = time.perf_counter()
        train_unet(unet, latents_of(vae, data.images), data, text_states, retrain_probe_steps, 0,
                   "retrain probe", batch=batch)
        return (time.perf_counter() - t0) / retrain_probe_steps

    retrain_paragon = seconds_per_step(64) * cfg["paragon"]
    retrain_shard = seconds_per_step(cfg.get("shard_batch", 64)) * cfg["split"]
    return {
        "forget_seconds": forget_seconds,
        "retrain_paragon_seconds": retrain_paragon,
        "forget_ratio": retrain_paragon / forget_seconds,
        "retrain_shard_seconds": retrain_shard,
        "retrain_paragon_over_shard": retrain_paragon / retrain_shard,
        "forget_record": json.loads(record.to_json()),
    }


def attribution_and_forgetting(te, vae, judges, k: int, steps: int, gate_steps: int, out_dir: Path) -> dict:
    """Style shards: who made each sample (attribution), prompt-following, and forgetting "bold"."""
    from unlearnkit.compose.attribution import attribution_plot, credit, weight_trajectory

    shards = store.load_shards("style")
    world = load_world()
    held = {n: latents_of(vae, world.rendered(world.held_out, n).images)[0] for n in shards}
    out: dict = {}
    for tag, net in (("xt", trained_gate("style", vae, gate_steps, out_dir)),
                     ("prompt", trained_gate("style", vae, gate_steps, out_dir, te=te))):
        suffix = "" if tag == "prompt" else "_xt_gate"
        if tag == "xt":
            out["gate_acc_sigma_0.5"] = gate_accuracy(net, held, 0.5)
            out["gate_acc_sigma_5"] = gate_accuracy(net, held, 5.0)
        unet = composed(shards, ClassifierGate(net, list(shards), [1] * len(shards)))
        prompts, styles = styled_prompts(k)
        img, _ = sample(unet, te, vae, prompts, steps)
        judged = predict(judges["style"], img)
        history = unet.composer.history
        top = credit(weight_trajectory(history)).argmax(1)
        top_style = torch.tensor([STYLES.index(list(shards)[i]) for i in top.tolist()])
        out[f"attribution_acc{suffix}"] = float((top_style == judged).float().mean())
        out[f"style_acc_gated{suffix}"] = float((judged == styles).float().mean())
        attribution_plot(history, list(shards)).save(out_dir / f"attribution_style_{tag}.png")
        # forget "bold": its logit is masked, its shard is never loaded again; prompt for bold before/after
        prompts, _ = styled_prompts(k, ("bold",))
        bold = STYLES.index("bold")
        img, _ = sample(
            composed(shards, ClassifierGate(net, list(shards), [1] * len(shards))), te, vae, prompts, steps
        )
        out[f"bold_rate_before_forgetting{suffix}"] = float(
            (predict(judges["style"], img) == bold).float().mean()
        )
        rest, _ = ShardSet(tuple(Shard(n, u) for n, u in shards.items())).forget("bold")
        unet = composed({s.name: s.model for s in rest}, ClassifierGate(net, rest.names, rest.priors))
        img, _ = sample(unet, te, vae, prompts, steps)
        out[f"forgotten_style_rate{suffix}"] = float((predict(judges["style"], img) == bold).float().mean())
    return out


def speed(te, vae, judges, real, k: int, steps: int, gate_steps: int, out_dir: Path, repeats: int) -> dict:
    """4 gated style shards vs one model, same steps and batch, interleaved repeats (median)."""
    shards = store.load_shards("style")
    net = trained_gate("style", vae, gate_steps, out_dir, te=te)
    one = store.load_unet("paragon")
    prompts, _ = styled_prompts(k)

    def variant(**kw):
        return composed(
            shards,
            ClassifierGate(net, list(shards), [1] * 4),
            generator=torch.Generator().manual_seed(0),
            **kw,
        )

    variants = {
        "one_model": lambda: one,
        "full": lambda: variant(),
        "prune_batch": lambda: variant(prune_eps=0.01),
        "prune_sample": lambda: variant(prune_eps=0.01, route="sample"),
        "prune_sample_mc": lambda: variant(prune_eps=0.01, route="sample", mc_sigma=1.0),
    }
    times = {n: [] for n in variants}
    imgs, costs = {}, {}
    for _ in range(repeats):
        for name, make in variants.items():
            unet = make()
            img, sec = sample(unet, te, vae, prompts, steps)
            times[name].append(sec)
            imgs[name] = img
            if isinstance(unet, ComposedUNet):
                h = [r for r in unet.composer.history if r.weights.shape[0] == len(prompts)]
                costs[name] = sum(r.evaluated for r in h) / (len(h) * len(prompts))
    med = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    fid = {n: judge_fid(judges["digit"], imgs[n], real) for n in variants}
    out = {f"seconds_{n}": med[n] for n in variants}
    out.update({f"speed_ratio_{n}": med[n] / med["one_model"] for n in variants if n != "one_model"})
    out.update({f"fid_{n}": fid[n] for n in variants})
    out.update({f"fid_vs_full_{n}": fid[n] / fid["full"] for n in variants if n not in ("one_model", "full")})
    out.update({f"shard_evals_per_sample_step_{n}": c for n, c in costs.items()})
    best = min(
        (n for n in variants if n.startswith("prune") and fid[n] <= 1.02 * fid["full"]),
        key=lambda n: med[n],
        default=None,
    )
    out["speed_ratio_4"] = med[best] / med["one_model"] if best else None
    out["speed_ratio_4_variant"] = best
    out["gate_overhead"] = gate_overhead(ClassifierGate(net, list(shards), [1] * 4), one, len(prompts))
    return out


def gate_overhead(gate: ClassifierGate, unet, batch: int, calls: int = 5) -> float:
    """One gate call ÷ one UNet call on the same CFG batch."""
    x = torch.randn(2 * batch, 4, 8, 8)
    ctx = torch.randn(2 * batch, 77, 64)
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(calls):
            gate(x[:batch], torch.full((batch,), 2.0))
        g = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(calls):
            unet(x, 500, encoder_hidden_states=ctx)
        u = time.perf_counter() - t0
    return g / u


def adding_a_shard(vae, gate_steps: int, out_dir: Path) -> dict:
    """Continual learning: a 4th style joins a 3-style gate — warm start vs from scratch, same short
    budget."""
    lat = shard_latents("style", vae)
    world = load_world()
    held = {n: latents_of(vae, world.rendered(world.held_out, n).images)[0] for n in lat}
    three = {n: lat[n] for n in list(lat)[:3]}
    old = train_gate(
        three, str(out_dir / "gate_3.safetensors"), GateTrainConfig(steps=gate_steps), overwrite=True
    )
    short = GateTrainConfig(steps=max(20, gate_steps // 10), seed=1)
    warm = train_gate(lat, str(out_dir / "gate_4w.safetensors"), short, init=old, overwrite=True)
    cold = train_gate(lat, str(out_dir / "gate_4c.safetensors"), short, overwrite=True)
    return {"add_shard_steps": short.steps, "add_shard_acc_warm": gate_accuracy(warm, held, 0.5),
            "add_shard_acc_scratch": gate_accuracy(cold, held, 0.5)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--k", type=int, default=5, help="samples per digit and style")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--gate-steps", type=int, default=600)
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    p.add_argument("--out", default="unlearnkit-out/bench-compose")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    te, vae = store.load_text_encoder(), store.load_vae()
    judges = {"digit": store.load_judge("digit"), "style": store.load_judge("style")}
    world = load_world()
    real = torch.cat([world.rendered(world.held_out, s).images for s in NON_PLAIN])
    res: dict = {"k": args.k, "steps": args.steps, "gate_steps": args.gate_steps}
    for name, fn in [
        ("fid", lambda: fid_8split(te, vae, judges, real, args.k, args.steps, args.gate_steps, out_dir)),
        ("forget", lambda: forgetting(20)),
        (
            "attribution",
            lambda: attribution_and_forgetting(te, vae, judges, args.k, args.steps, args.gate_steps, out_dir),
        ),
        (
            "speed",
            lambda: speed(te, vae, judges, real, args.k, args.steps, args.gate_steps, out_dir, args.repeats),
        ),
        ("add", lambda: adding_a_shard(vae, args.gate_steps, out_dir)),
    ]:
        t0 = time.perf_counter()
        res.update(fn())
        log.info("%s done in %.0f s", name, time.perf_counter() - t0)
        (out_dir / "result.json").write_text(json.dumps(res, indent=1, default=float))
    line = json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()})
    print(line if args.json else json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
