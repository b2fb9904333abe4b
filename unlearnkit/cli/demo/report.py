"""The main job's report: run each section in turn and write index.html, the PNG panels and summary.json."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .panels import Section
from .world import DemoSettings, Progress, TinyWorld

log = logging.getLogger(__name__)
TASKS = 7  # progress-bar tasks: compose 3, erase images 1, attacks 1, unlearn 1, writing 1


def timed(section_fn, *args) -> Section:
    start = time.perf_counter()
    section = section_fn(*args)
    section.seconds = time.perf_counter() - start
    return section


def erase_and_compare(world: TinyWorld, settings: DemoSettings, out: Path, progress: Progress
                      ) -> tuple[Section, Section]:
    """The erased encoders and the exact-forgetting composition, attacked alike; the Erase and Side-by-side
    sections."""
    from ...compose.gate_model import ClassifierGate, load_gate
    from ...tinyworld.models import build_scheduler
    from ...tinyworld.tasks import Concept
    from ...tinyworld.tokenizer import clip_tokenizer
    from . import artifacts
    from .attacks import AttackModel, run_attacks, scorer_for
    from .compose_section import FORGOTTEN, composed, style_set
    from .erase_section import erase_section, erased_encoders
    from .side_by_side import side_by_side_section

    start = time.perf_counter()
    paragon, te = world.unet("paragon"), world.text_encoder
    encoders = erased_encoders(te)
    rest, _ = style_set(world).forget(FORGOTTEN)
    gate = ClassifierGate(load_gate(str(artifacts.path("gate"))), rest.names, rest.priors)
    original = AttackModel("original", paragon, te)
    models = [AttackModel(n, paragon, e) for n, e in encoders.items()]
    models.append(AttackModel("exact forgetting", composed(rest, gate), te))
    detector = Concept.parse(f"style:{artifacts.ERASED_STYLE}").detector(world.judges["style"])
    scheduler, tokenizer = build_scheduler("ddim"), clip_tokenizer()
    with progress.task("attacks: ESD, AdvUnlearn, exact forgetting"):
        bar = progress.inner(len(models) * settings.attack_prompts, "attack instances")
        runs = run_attacks(models, original, scheduler, world.vae, tokenizer, detector, settings,
                           lambda: bar.update(1))
        bar.close()
    with progress.task("erase: encoders' images"):
        scorer = scorer_for(paragon, scheduler, world.vae, tokenizer, detector, settings)
        erased_runs = {n: runs[n] for n in encoders}
        erase = erase_section(scorer, original, encoders, world.judges["style"], erased_runs, out, settings)
    erase.seconds = time.perf_counter() - start
    return erase, timed(side_by_side_section, runs, out, settings)


def glance(sections: dict[str, Section]) -> list[tuple[str, str]]:
    """One line per capability with its headline numbers (the report's opening table)."""
    c, e, u, s = (sections[k].panels for k in ("compose", "erase", "unlearn", "side_by_side"))
    slider, gated, _, forget, rights = (p.numbers for p in c)
    share = next(v for k, v in slider.items() if k.startswith("judged_"))
    return [
        ("Compose", f"slider moves the judged style {share[0]:.2f} → {share[-1]:.2f}; gated mixture: style "
         "as "
                    f"prompted {gated['style_judged_as_prompted']:.2f}, attribution matches the judge "
                    f"{gated['attribution_matches_judge']:.2f}; forgetting bold "
                    f"{forget['judged_bold_before']:.2f} "
                    f"→ {forget['judged_bold_after']:.2f}; out-of-rights request "
                    f"{'refused' if rights['refused'] else 'SERVED'}"),
        ("Erase", "judged bold: " + ", ".join(f"{k} {v:.2f}" for k, v in e[0].numbers["judged_bold"].items())
                  + "; under attack (ASR): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in e[2].numbers["asr"].items())),
        ("Unlearn", f"prompted 7 judged 7: {u[0].numbers['forgotten_judged_before']:.2f} → "
                    f"{u[0].numbers['forgotten_judged_after']:.2f}; other digits "
                    f"{u[0].numbers['others_judged_before']:.2f} → "
                    f"{u[0].numbers['others_judged_after']:.2f}; "
                    f"one layer, {u[1].numbers['patch_bytes'] / 1000:.1f} kB patch"),
        ("Side by side", "ASR on bold: " + ", ".join(f"{k} {v:.2f}" for k, v in s[0].numbers["asr"].items())),
    ]


def run_demo(out: Path, settings: DemoSettings) -> dict:
    """Every section on the tiny world's committed weights; returns the summary written to summary.json."""
    from .compose_section import compose_section
    from .html import page
    from .unlearn_section import unlearn_section

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    world, progress = TinyWorld(), Progress(TASKS, settings.progress)
    sections = {"compose": timed(compose_section, world, settings, out, progress)}
    sections["erase"], sections["side_by_side"] = erase_and_compare(world, settings, out, progress)
    sections["unlearn"] = timed(unlearn_section, world, settings, out, progress)
    order = [sections[k] for k in ("compose", "erase", "unlearn", "side_by_side")]
    with progress.task("writing the report"):
        lines = glance(sections)
        seconds = time.perf_counter() - start
        meta = (f"{settings.steps} DDIM steps, CFG {settings.guidance}, seed {settings.seed}; "
                f"{seconds:.0f} s on {torch.get_num_threads()} CPU thread(s)")
        (out / "index.html").write_text(page(order, lines, meta), encoding="utf-8")
        summary = {"seconds": round(seconds, 1), "settings": vars(settings), "glance": dict(lines),
                   "sections": {s.key: {"seconds": round(s.seconds, 1), "panels": s.numbers()}
                                for s in order},
                   "files": sorted(p.name for p in out.glob("*.png")) + ["index.html", "summary.json"]}
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
        (out / "summary.txt").write_text("\n".join(f"{k}: {v}" for k, v in lines) + "\n", encoding="utf-8")
    progress.close()
    return summary
