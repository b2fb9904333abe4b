"""Unlearn (SLUG): the committed one-layer patch — images before/after, the chosen layer on the importance /
alignment plot, the patch's size — judged by the tiny world's digit judge."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ...tinyworld.data import caption
from ...tinyworld.tasks import Concept
from ...unlearn import LayerScores, PatchMismatchError, apply_patch, load_patch, plot_layers, remove_patch
from . import artifacts
from .panels import Panel, Section, labelled_grid, rate, save
from .world import DemoSettings, Progress, TinyWorld

SAMPLES = 8  # images per digit prompt


@contextlib.contextmanager
def patched(modules: dict[str, torch.nn.Module], patch) -> Iterator[str]:
    """Apply the patch to whichever module holds its layer (text encoder or UNet); yields that module's "
    "name."""
    for name, module in modules.items():
        try:
            apply_patch(module, patch)
        except PatchMismatchError:
            continue
        try:
            yield name
        finally:
            remove_patch(module, patch)
        return
    raise PatchMismatchError(f"patch for layer {patch.layer!r}: fits none of {list(modules)}")


def layer_scores(sidecar: dict) -> LayerScores:
    return LayerScores(list(sidecar["names"]), np.asarray(sidecar["importance"]),
                       np.asarray(sidecar["alignment"]),
                       np.asarray(sidecar["front"], dtype=np.int64))


def before_after(world: TinyWorld, patch, concept: Concept, settings: DemoSettings, out: Path) -> Panel:
    """Prompts for the forgotten digit and for the others, with and without the patch; judged digits."""
    unet = world.unet("paragon")
    others = [d for d in range(10) if d != concept.index]
    prompts = [caption(concept.index, None, 0)] * SAMPLES + [caption(d, None, 0) for d in others]
    before = world.images(unet, prompts, settings)
    with patched({"text encoder": world.text_encoder, "UNet": unet}, patch) as where:
        after = world.images(unet, prompts, settings)
    judged = {k: world.judged("digit", x) for k, x in (("before", before), ("after", after))}
    own = {k: rate(v[:SAMPLES] == concept.index) for k, v in judged.items()}
    kept = {k: rate(v[SAMPLES:] == torch.tensor(others)) for k, v in judged.items()}
    rows = [before[:SAMPLES], after[:SAMPLES], before[SAMPLES:], after[SAMPLES:]]
    notes = [[str(int(k)) for k in judged[w][sl]] for w, sl in
             (("before", slice(0, SAMPLES)), ("after", slice(0, SAMPLES)), ("before", slice(SAMPLES, None)),
              ("after", slice(SAMPLES, None)))]
    labels = [f'"{prompts[0]}"', "  … with the SLUG patch", "other digits", "  … with the SLUG patch"]
    image = labelled_grid(rows, labels, notes=notes, scale=settings.scale)
    return Panel(
        f"SLUG patch: {concept.name} before / after", image=save(image, out, "unlearn_before_after.png"),
        caption=(f"The paragon UNet with the original text encoder, then with the SLUG patch applied to its "
                 f"{where} (same noise). Under each image: the digit the judge reads. Prompted "
                 f"{concept.index}, judged {concept.index}: {own['before']:.2f} → {own['after']:.2f}; the "
                 f"other digits judged as prompted: {kept['before']:.2f} → {kept['after']:.2f}."),
        numbers={"forgotten_judged_before": own["before"], "forgotten_judged_after": own["after"],
                 "others_judged_before": kept["before"], "others_judged_after": kept["after"],
                 "patched": where})


def tried_story(sidecar: dict) -> str:
    """Which layers the step search tried, in SLUG's order, and which one it kept."""
    tried = sidecar.get("tried", [])
    failed = [t["layer"] for t in tried if not t["success"]]
    text = ("SLUG tries the candidates in Pareto order with a step search on generated images; "
            if tried else "")
    if failed:
        text += f"{', '.join(failed)} did not forget without hurting the other digits; "
    verdict = "met both targets." if sidecar["search_success"] else "forgot most while utility held."
    return text + f"{sidecar['layer']} with step {sidecar['step']:.3g} {verdict}"


def layer_panel(sidecar: dict, patch_file: Path, patch, out: Path) -> Panel:
    """The importance / alignment plot with the chosen layer, and the patch's size."""
    image = plot_layers(layer_scores(sidecar), sidecar["layer"])
    size = patch_file.stat().st_size
    params = int(patch.delta.numel())
    return Panel(
        "Which layer: importance vs gradient alignment", image=save(image, out, "unlearn_layers.png"),
        caption=(f"One gradient pass ranks every layer by importance for the forget set (up) and by how much "
                 "its forget gradient aligns with the retain gradient (right); blue: the Pareto front (no "
                 "layer "
                 f"is both more important and less aligned), red: the chosen layer. {tried_story(sidecar)} "
                 "The "
                 f"patch is that one layer's change: {params:,} numbers in {patch.delta.dtype}, a "
                 f"{size / 1000:.1f} kB file."),
        numbers={"layer": sidecar["layer"], "step": round(float(sidecar["step"]), 4), "patch_bytes": size,
                 "patch_numbers": params, "slug_seconds": sidecar.get("slug_seconds")})


def unlearn_section(world: TinyWorld, settings: DemoSettings, out: Path, progress: Progress) -> Section:
    patch_file = artifacts.path("slug", 0)
    sidecar = json.loads(artifacts.path("slug", 1).read_text())
    patch = load_patch(patch_file)
    concept = Concept.parse(sidecar["concept"])
    section = Section("unlearn", "Unlearn — a one-layer patch (SLUG)",
                      f"From images of {concept.name} and the concept's name, SLUG computes one gradient "
                      "pass, picks "
                      "a single layer and a step size, and stores the change as a patch file that can be "
                      "applied, "
                      f"stacked and removed byte-exactly (made in {sidecar.get('slug_seconds', '?')} s on "
                      "this CPU; "
                      f"`python -m unlearnkit demo --remake slug`).")
    with progress.task("unlearn: SLUG patch"):
        section.panels.append(before_after(world, patch, concept, settings, out))
    section.panels.append(layer_panel(sidecar, patch_file, patch, out))
    return section
