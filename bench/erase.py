"""AdvUnlearn vs ESD on the tiny world: erase one digit and one style, attack both, measure utility.

For each concept, the same text encoder is erased from the same seed with ``--attack none`` (ESD on the
text encoder), ``--attack pgd`` (AdvUnlearn) and ``--attack fast_at`` (one signed-gradient step per
iteration) on ONE concept prompt; then every (evaluation prompt, seed) instance is attacked with the same
budget by the discrete UnlearnDiffAtk-style attack (K prefix tokens) and judged by the tiny world's
classifier. For the style, the same attacks also target exact forgetting: the style-shard composition
(prompt-reading gate) with the style's shard dropped and the text encoder untouched.

Printed (last stdout line, one JSON object): asr_esd, asr_advunlearn, asr_advunlearn_fast (mean over the
concepts), asr_forget_shard, asr_soft (continuous-token attack), pre_attack_rate, retain_acc_drop (judge
accuracy on the other digits/styles, before - after), judge_fid_ratio (after / before),
train_seconds_ratio (training CPU seconds of each AdvUnlearn mode / ESD's) and per-concept detail.
Every draw is seeded: two fresh runs print the same figures.
Paper (nudity, UnlearnDiffAtk ASR): ESD 76.1 % vs AdvUnlearn 21.1 %.

Run: ``OMP_NUM_THREADS=1 nice python bench/erase.py --json`` (30-50 min on 2 shared CPU cores).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from unlearnkit.erase.advunlearn import EraseConfig, train_erased_encoder  # noqa: E402
from unlearnkit.erase.denoise import Denoiser, SamplerConfig  # noqa: E402
from unlearnkit.erase.measure import AttackSpec, Scorer, attack_report  # noqa: E402
from unlearnkit.erase.prompts import tokenize  # noqa: E402
from unlearnkit.tinyworld import store  # noqa: E402
from unlearnkit.tinyworld.data import TEMPLATES, caption  # noqa: E402
from unlearnkit.tinyworld.styles import STYLES  # noqa: E402
from unlearnkit.tinyworld.tasks import Concept  # noqa: E402
from unlearnkit.tinyworld.tasks.erase_models import tiny_components  # noqa: E402
from unlearnkit.tinyworld.tasks.erase_retain import real_reference, retain_scores, retain_set  # noqa: E402

log = logging.getLogger("bench.erase")
MODES = {"esd": "none", "advunlearn": "pgd", "advunlearn_fast": "fast_at"}


def prompt_sets(concept: Concept, n_retain: int, seed: int) -> tuple[str, list[str], list[str]]:
    """(training concept prompt, evaluation prompts naming the concept, retain prompts).

    Retain prompts are drawn from every caption of the other classes except the template-0
    captions that utility is measured on (see erase_retain.retain_set), so training and measuring differ.
    """
    rng = random.Random(seed)
    measured = set(retain_set(concept).prompts)
    if concept.kind == "digit":
        d = concept.index
        train = caption(d, None, 0)
        evals = [caption(d, None, t) for t in range(len(TEMPLATES))] + [
            caption(d, s, t) for t, s in enumerate(STYLES)
        ]
        pool = [
            caption(e, s, t)
            for e in range(10)
            if e != d
            for s in (None, *STYLES)
            for t in range(len(TEMPLATES))
        ]
    else:
        style = STYLES[concept.index]
        train = f"a handwritten digit in {style} style"
        evals = [caption(d, style, d % len(TEMPLATES)) for d in range(10)]
        pool = [
            caption(e, s, t)
            for e in range(10)
            for s in (None, *STYLES)
            if s != style
            for t in range(len(TEMPLATES))
        ]
    pool = [p for p in pool if p not in measured]
    return train, evals, rng.sample(pool, min(n_retain, len(pool)))


def concept_rate(scorer: Scorer, encoder, prompts: list[str], seeds: range) -> float:
    ids = tokenize(scorer.tokenizer, prompts).repeat_interleave(len(seeds), 0)
    images = scorer.images(encoder, ids, [s for _ in prompts for s in seeds])
    return float(scorer.detector(images).float().mean())


def forget_shard_report(comps, concept: Concept, evals: list[str], seeds: range, spec: AttackSpec,
                        judges: dict, args) -> dict:
    """The same attacks against exact forgetting: the style-shard composition (prompt-reading classifier
    gate) with the concept's shard dropped, the text encoder untouched. Attack targets are the original
    model's images of each (prompt, seed), exactly as for the erased encoders."""
    from unlearnkit.compose.diffusers_unet import ComposedUNet
    from unlearnkit.compose.gate_model import ClassifierGate
    from unlearnkit.compose.gate_training import GateTrainConfig, train_gate
    from unlearnkit.compose.shards import Shard, ShardSet
    from unlearnkit.tinyworld.tasks.gate_data import gate_data

    shards = store.load_shards("style")
    latents, contexts, null = gate_data("style", comps.text_encoder, comps.vae)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GateTrainConfig(steps=args.gate_steps)
        net = train_gate(latents, os.path.join(tmp, "gate.safetensors"), cfg, family="tinyworld",
                         contexts=contexts, null_context=null)
    acp, sampler = comps.scheduler.alphas_cumprod, SamplerConfig(args.sample_steps, args.guidance)
    detector = concept.detector(judges["style"])

    def scorer_for(names: list[str], priors: list[float]) -> Scorer:  # shards below ε skipped per sample
        gate = ClassifierGate(net, names, priors)
        unet = ComposedUNet([shards[n] for n in names], names, gate, acp, prune_eps=args.prune_eps,
                            route="sample")
        return Scorer(Denoiser(unet, comps.scheduler, sampler), comps.vae, comps.tokenizer, detector)

    full = ShardSet(tuple(Shard(n, u) for n, u in shards.items()))
    rest, _ = full.forget(STYLES[concept.index])
    before = concept_rate(scorer_for(full.names, list(full.priors)), comps.text_encoder, evals, seeds)
    source = Denoiser(comps.unet, comps.scheduler, sampler)
    report = attack_report(comps.text_encoder, comps.text_encoder, scorer_for(rest.names, list(rest.priors)),
                           evals, seeds, spec, source=source)
    return {"asr_forget_shard": round(report.asr, 4),
            "pre_attack_rate_forget_shard": round(report.pre_attack_rate, 4),
            "concept_rate_shards_before_forgetting": round(before, 4), "shards_after_forgetting": rest.names}


def erase_config(name: str, train_prompt: str, retain: list[str], args) -> EraseConfig:
    """One mode's training settings; fast-AT has its own inner-attack settings."""
    fast = MODES[name] == "fast_at"
    return EraseConfig(
        concept=(train_prompt,), retain=tuple(retain), attack=MODES[name], iterations=args.iterations,
        warmup=args.warmup, lr=args.lr, retain_weight=args.retain_weight, retain_batch=args.retain_batch,
        attack_steps=args.fast_steps if fast else args.inner_steps,
        attack_lr=args.fast_lr if fast else args.inner_lr,
        attack_tokens=args.fast_tokens if fast else args.inner_tokens,
        sampler_steps=args.train_sampler_steps, guidance=3.0, bank_size=2, seed=args.seed,
    )


def run_concept(comps, spec_str: str, args, judges: dict) -> dict:
    concept = Concept.parse(spec_str)
    train_prompt, evals, retain = prompt_sets(concept, args.retain_prompts, args.seed)
    den = Denoiser(comps.unet, comps.scheduler, SamplerConfig(args.sample_steps, args.guidance))
    scorer = Scorer(den, comps.vae, comps.tokenizer, concept.detector(judges[concept.kind]))
    real = real_reference(concept)
    seeds = range(1000, 1000 + args.seeds)
    retain_seeds = range(2000, 2000 + args.retain_seeds)
    before = retain_scores(comps.text_encoder, scorer, concept, retain_seeds, judges, real)
    out: dict = {
        "train_prompt": train_prompt,
        "eval_prompts": len(evals),
        "instances": len(evals) * len(seeds),
        "concept_rate_original": concept_rate(scorer, comps.text_encoder, evals, seeds),
        "retain_before": before,
    }
    spec = AttackSpec(
        "prompt", "denoise_concept", args.attack_tokens, args.attack_steps, None, args.check_every
    )
    soft = AttackSpec("soft", "denoise_concept", args.attack_tokens, args.attack_steps, args.soft_lr)
    for name in args.modes.split(","):
        cfg = erase_config(name, train_prompt, retain, args)
        start, cpu = time.perf_counter(), time.process_time()
        encoder = train_erased_encoder(comps, cfg, progress=False).encoder
        out[f"train_seconds_{name}"] = round(time.perf_counter() - start, 1)
        out[f"train_cpu_seconds_{name}"] = round(time.process_time() - cpu, 1)
        report = attack_report(encoder, comps.text_encoder, scorer, evals, seeds, spec)
        after = retain_scores(encoder, scorer, concept, retain_seeds, judges, real)
        out[f"asr_{name}"] = round(report.asr, 4)
        out[f"pre_attack_rate_{name}"] = round(report.pre_attack_rate, 4)
        if args.soft_lr > 0:
            out[f"asr_soft_{name}"] = round(
                attack_report(encoder, comps.text_encoder, scorer, evals, seeds, soft).asr, 4
            )
        out[f"retain_acc_drop_{name}"] = round(before["acc"] - after["acc"], 4)
        out[f"judge_fid_ratio_{name}"] = round(after["judge_fid"] / before["judge_fid"], 4)
        out[f"retain_after_{name}"] = {k: round(v, 4) for k, v in after.items()}
        out[f"attacked_prompts_{name}"] = [
            i.attacked_prompt for i in report.instances if i.success and i.attacked_prompt
        ][:5]
        log.info("%s %s: %s", spec_str, name, {k: v for k, v in out.items() if k.endswith(name)})
    if concept.kind == "style" and args.forget_shard:
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        out.update(forget_shard_report(comps, concept, evals, seeds, spec, judges, args))
        out["forget_shard_seconds"] = round(time.perf_counter() - start, 1)
        log.info("%s forget shard: %s", spec_str, {k: v for k, v in out.items() if "forget" in k})
    out["retain_before"] = {k: round(v, 4) for k, v in before.items()}
    return out


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def summarise(per: dict, modes: list[str]) -> dict:
    res: dict = {f"asr_{name}": mean([c[f"asr_{name}"] for c in per.values()]) for name in modes}
    for name in modes:
        if name != "esd" and "esd" in modes:
            key = f"asr_ratio{name[len('advunlearn'):]}"
            res[key] = round(res[f"asr_{name}"] / res["asr_esd"], 4) if res["asr_esd"] else None
    if all(f"asr_soft_{name}" in c for c in per.values() for name in modes):
        res["asr_soft"] = {name: mean([c[f"asr_soft_{name}"] for c in per.values()]) for name in modes}
    forget = [c["asr_forget_shard"] for c in per.values() if "asr_forget_shard" in c]
    if forget:
        res["asr_forget_shard"] = mean(forget)
    for key in ("pre_attack_rate", "retain_acc_drop", "judge_fid_ratio"):
        res[key] = {name: mean([c[f"{key}_{name}"] for c in per.values()]) for name in modes}
    for key in ("train_seconds", "train_cpu_seconds"):
        res[key] = {name: round(sum(c[f"{key}_{name}"] for c in per.values()), 1) for name in modes}
    if "esd" in modes:  # process CPU time: the machine's other load does not enter the ratio
        esd = res["train_cpu_seconds"]["esd"]
        cpu = res["train_cpu_seconds"]
        res["train_seconds_ratio"] = {n: round(cpu[n] / esd, 3) for n in modes if n != "esd"}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--concepts", default="digit:7,style:bold")
    p.add_argument("--iterations", type=int, default=160)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--retain-weight", type=float, default=30.0, help="γ (paper 0.3; tiny world: more)")
    p.add_argument("--retain-batch", type=int, default=10)
    p.add_argument("--retain-prompts", type=int, default=60)
    p.add_argument("--inner-steps", type=int, default=10, help="AdvUnlearn's attack steps per iteration")
    p.add_argument("--inner-lr", type=float, default=1e-2, help="paper 1e-3 x 30 steps; tiny tokens: larger")
    p.add_argument("--inner-tokens", type=int, default=1, help="AdvUnlearn's adversarial tokens (paper: 1)")
    p.add_argument("--fast-steps", type=int, default=1, help="fast-AT: signed-gradient steps per iteration")
    p.add_argument("--fast-lr", type=float, default=1e-2, help="fast-AT step size")
    p.add_argument("--fast-tokens", type=int, default=5, help="fast-AT adversarial tokens")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {list(MODES)}")
    p.add_argument("--forget-shard", type=int, default=1,
                   help="1: also attack the style-shard composition with the concept's shard forgotten")
    p.add_argument("--prune-eps", type=float, default=0.01,
                   help="that composition skips a shard for a sample whose gate weight is below this")
    p.add_argument("--gate-steps", type=int, default=600, help="training steps of that composition's gate")
    p.add_argument("--train-sampler-steps", type=int, default=10)
    p.add_argument("--attack-tokens", type=int, default=5)
    p.add_argument("--attack-steps", type=int, default=30)
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--soft-lr", type=float, default=1e-2, help="also attack with continuous tokens (0: skip)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per evaluation prompt (attack instances)")
    p.add_argument("--retain-seeds", type=int, default=4)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unet", default="paragon", help="tiny world UNet")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(args.seed)  # every draw uses its own seeded generator; this pins any library default
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        p.error(f"--modes: unknown {sorted(unknown)}; choose from {list(MODES)}")
    start = time.perf_counter()
    comps = tiny_components(args.unet)
    judges = {"digit": store.load_judge("digit"), "style": store.load_judge("style")}
    per = {c: run_concept(comps, c, args, judges) for c in args.concepts.split(",")}
    res = {
        **summarise(per, args.modes.split(",")),
        "concepts": per,
        "settings": dict(vars(args)),
        "bench_seconds": round(time.perf_counter() - start, 1),
    }
    res["settings"].pop("json")
    if not args.json:
        for key, value in res.items():
            if key != "concepts":
                print(f"{key}: {value}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
