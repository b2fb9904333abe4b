"""AdvUnlearn vs ESD on the tiny world: erase one digit and one style, attack both, measure utility.

For each concept, the same text encoder is erased twice from the same seed — ``--attack none`` (ESD
on the text encoder) and ``--attack pgd`` (AdvUnlearn) — on ONE concept prompt; then every
(evaluation prompt, seed) instance is attacked with the same budget by the discrete
UnlearnDiffAtk-style attack (K prefix tokens) and judged by the tiny world's classifier.

Printed (last stdout line, one JSON object): asr_esd, asr_advunlearn (mean over the two concepts),
asr_soft (the same instances under the continuous-token attack), pre_attack_rate, retain_acc_drop
(judge accuracy on the other digits/styles, before − after), judge_fid_ratio (after ÷ before),
train_seconds per mode, and per-concept detail.
Paper (nudity, UnlearnDiffAtk ASR): ESD 76.1 % vs AdvUnlearn 21.1 %.

Run: ``OMP_NUM_THREADS=1 nice python bench/erase.py --json`` (~15 min on 2 shared CPU cores).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
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
MODES = {"esd": "none", "advunlearn": "pgd"}


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
    for name, attack in MODES.items():
        cfg = EraseConfig(
            concept=(train_prompt,), retain=tuple(retain), attack=attack, iterations=args.iterations,
            warmup=args.warmup, lr=args.lr, retain_weight=args.retain_weight, retain_batch=args.retain_batch,
            attack_steps=args.inner_steps, attack_lr=args.inner_lr, sampler_steps=args.train_sampler_steps,
            guidance=3.0, bank_size=2, seed=args.seed,
        )
        start = time.perf_counter()
        encoder = train_erased_encoder(comps, cfg, progress=False).encoder
        out[f"train_seconds_{name}"] = round(time.perf_counter() - start, 1)
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
    out["retain_before"] = {k: round(v, 4) for k, v in before.items()}
    return out


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def summarise(per: dict) -> dict:
    res: dict = {}
    for name in MODES:
        res[f"asr_{name}"] = mean([c[f"asr_{name}"] for c in per.values()])
    res["asr_ratio"] = round(res["asr_advunlearn"] / res["asr_esd"], 4) if res["asr_esd"] else None
    if all(f"asr_soft_{name}" in c for c in per.values() for name in MODES):
        res["asr_soft"] = {name: mean([c[f"asr_soft_{name}"] for c in per.values()]) for name in MODES}
    for key in ("pre_attack_rate", "retain_acc_drop", "judge_fid_ratio"):
        res[key] = {name: mean([c[f"{key}_{name}"] for c in per.values()]) for name in MODES}
    res["train_seconds"] = {
        name: round(sum(c[f"train_seconds_{name}"] for c in per.values()), 1) for name in MODES
    }
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--concepts", default="digit:7,style:bold")
    p.add_argument("--iterations", type=int, default=120)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--retain-weight", type=float, default=3.0, help="γ (paper 0.3; the tiny world: more)")
    p.add_argument("--retain-batch", type=int, default=5)
    p.add_argument("--retain-prompts", type=int, default=60)
    p.add_argument("--inner-steps", type=int, default=10, help="AdvUnlearn's attack steps per iteration")
    p.add_argument("--inner-lr", type=float, default=1e-3)
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
    start = time.perf_counter()
    comps = tiny_components(args.unet)
    judges = {"digit": store.load_judge("digit"), "style": store.load_judge("style")}
    per = {c: run_concept(comps, c, args, judges) for c in args.concepts.split(",")}
    res = {
        **summarise(per),
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
