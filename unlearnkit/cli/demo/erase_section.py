"""Erase (AdvUnlearn): prompts naming the erased style with the original, ESD and AdvUnlearn encoders, the
styles that must stay, and the same prompts under the attack — judged by the tiny world's style judge."""
from __future__ import annotations

from pathlib import Path

import torch

from ...erase.measure import Scorer
from ...erase.prompts import tokenize
from ...tinyworld.data import caption
from ...tinyworld.styles import STYLES
from . import artifacts
from .attacks import AttackModel, AttackRun, budget
from .panels import Panel, Section, labelled_grid, rate, save

KEPT = ("plain", "slanted", "inverted", "outlined")
KEPT_DIGITS = (2, 5)


def erased_encoders(base: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{"ESD": encoder, "AdvUnlearn": encoder}: the committed erased encoders on the tiny world's."""
    return {"ESD": artifacts.load_edited_encoder(artifacts.path("erase_esd"), base),
            "AdvUnlearn": artifacts.load_edited_encoder(artifacts.path("erase_advunlearn"), base)}


def judged_rows(scorer: Scorer, encoders: dict[str, torch.nn.Module], prompts: list[str], seed: int,
                style_judge) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Images (one row per encoder) for ``prompts`` with one noise seed, and the style judge's verdicts."""
    from ...tinyworld.judges import predict

    ids = tokenize(scorer.tokenizer, prompts)
    rows, styles = [], []
    with torch.no_grad():
        for encoder in encoders.values():
            images = scorer.images(encoder, ids, [seed] * len(prompts))
            rows.append(images)
            styles.append(predict(style_judge, images))
    return rows, styles


def plain_prompts_panel(scorer: Scorer, encoders: dict, style_judge, out: Path, scale: int, seed: int
                        ) -> Panel:
    """Prompts naming bold: share judged bold per encoder."""
    prompts = [caption(d, artifacts.ERASED_STYLE, 0) for d in range(10)]
    rows, styles = judged_rows(scorer, encoders, prompts, seed, style_judge)
    bold = STYLES.index(artifacts.ERASED_STYLE)
    rates = {name: rate(s == bold) for name, s in zip(encoders, styles)}
    notes = [[STYLES[int(k)] for k in s] for s in styles]
    image = labelled_grid(rows, [f"{n} encoder" for n in encoders], [f"digit {d}" for d in range(10)], notes,
                          scale=scale)
    return Panel(
        f'Prompts naming "{artifacts.ERASED_STYLE}", three text encoders',
        image=save(image, out, "erase_prompts.png"),
        caption=(f'"a handwritten digit N in {artifacts.ERASED_STYLE} style", same UNet (the paragon, '
                 'trained on '
                 "every style) and noise; only the text encoder differs. Under each image: the style the "
                 "judge "
                 f"sees. Share judged {artifacts.ERASED_STYLE}: "
                 + ", ".join(f"{n} {r:.2f}" for n, r in rates.items()) + "."),
        numbers={f"judged_{artifacts.ERASED_STYLE}": rates})


def kept_styles_panel(scorer: Scorer, encoders: dict, style_judge, out: Path, scale: int, seed: int) -> Panel:
    """Prompts naming the other styles: style accuracy per encoder (what erasure must not break)."""
    pairs = [(d, s) for s in KEPT for d in KEPT_DIGITS]
    prompts = [caption(d, None if s == "plain" else s, 0) for d, s in pairs]
    wanted = torch.tensor([STYLES.index(s) for _, s in pairs])
    rows, styles = judged_rows(scorer, encoders, prompts, seed, style_judge)
    accs = {name: rate(s == wanted) for name, s in zip(encoders, styles)}
    notes = [[STYLES[int(k)] for k in s] for s in styles]
    image = labelled_grid(rows, [f"{n} encoder" for n in encoders], [f"{s} {d}" for d, s in pairs], notes,
                          scale=scale)
    return Panel(
        "What must stay: the other styles", image=save(image, out, "erase_kept.png"),
        caption=("Prompts naming the other styles (plain = no style named), same encoders and noise. Style "
                 "judged as prompted: " + ", ".join(f"{n} {a:.2f}" for n, a in accs.items()) + "."),
        numbers={"style_judged_as_prompted": accs})


def attacked_panel(runs: dict[str, AttackRun], out: Path, scale: int, settings) -> Panel:
    """Each model's image for the attacked prompt (the plain one where the plain prompt already drew bold)."""
    rows = [torch.stack([o.image for o in run.outcomes]) for run in runs.values()]
    notes = [["bold!" if o.success else "not bold" for o in run.outcomes] for run in runs.values()]
    image = labelled_grid(rows, [f"{n}, attacked" for n in runs], [f"digit {d}" for d in range(len(rows[0]))],
                          notes, scale=scale)
    lines = [f"{name}: ASR {run.asr:.2f} (bold without attack {run.pre_attack_rate:.2f})" for name, run in
             runs.items()]
    for name, run in runs.items():
        lines += [f"  {name} seed {o.seed}: {o.attacked_prompt!r} -> {'bold' if o.success else 'not bold'}"
                  for o in run.outcomes if o.attacked_prompt]
    return Panel(
        "The same prompts under attack", image=save(image, out, "erase_attacked.png"),
        caption=(f"An attacker searches adversarial prefix tokens that make each model draw bold again "
                 f"(UnlearnDiffAtk-style; budget: {budget(settings)}). Attack success rate (bold without or "
                 "with "
                 f"the attack): " + ", ".join(f"{n} {r.asr:.2f}" for n, r in runs.items())
                 + ". The attacked prompts are listed below."),
        numbers={"asr": {n: r.asr for n, r in runs.items()},
                 "pre_attack_rate": {n: r.pre_attack_rate for n, r in runs.items()}},
        text="\n".join(lines))


def erase_section(scorer: Scorer, original: AttackModel, encoders: dict[str, torch.nn.Module], style_judge,
                  runs: dict[str, AttackRun], out: Path, settings) -> Section:
    """``scorer``: the paragon's sampler; ``runs``: the attack runs of the erased encoders."""
    manifest = artifacts.manifest()
    trained = ", ".join(f"{n} {manifest.get(k, {}).get('seconds', '?')} s" for n, k in
                        (("ESD", "erase_esd"), ("AdvUnlearn", "erase_advunlearn")))
    section = Section("erase", "Erase — a concept-erased text encoder (AdvUnlearn)",
                      f'The text encoder is fine-tuned so that prompts naming "{artifacts.ERASED_STYLE}" no '
                      'longer '
                      "produce it (ESD), with an adversary in the loop (AdvUnlearn) so that attacked "
                      "prompts do not "
                      "bring it back. The UNet is untouched. The committed encoders were trained on this "
                      "CPU "
                      f"({trained}; `python -m unlearnkit demo --remake erase_esd erase_advunlearn`).")
    everyone = {"original": original.text_encoder, **encoders}
    seed = 1000 + settings.seed
    section.panels.append(plain_prompts_panel(scorer, everyone, style_judge, out, settings.scale, seed))
    section.panels.append(kept_styles_panel(scorer, everyone, style_judge, out, settings.scale, seed))
    section.panels.append(attacked_panel(runs, out, settings.scale, settings))
    return section
