"""The demo's committed artifacts for the tiny world: one maker and one loader per artifact.

The main job uses only committed weights. What takes too long to train while a user waits is made once by
``python -m unlearnkit demo --remake [NAME ...]`` and committed under ``unlearnkit/tinyworld/weights/demo``:

  gate_style_prompt.safetensors   CDM classifier gate over the four style shards that also reads the prompt
  erase_bold_esd.safetensors      ESD-erased text encoder for "bold style" (the changed tensors only)
  erase_bold_advunlearn.safetensors   the same with AdvUnlearn's adversarial inner attack
  slug_digit7.safetensors         SLUG patch forgetting digit 7 (+ slug_digit7.json: layer scores, search)
  manifest.json                   how each artifact was made: settings, seconds, file sizes

Each artifact is one :class:`Artifact` (file names, a ``make(folder)`` function returning its manifest entry):
swap a maker to change how an artifact is made; the report's sections only load them.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import io

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parents[2] / "tinyworld" / "weights" / "demo"
ERASED_STYLE = "bold"
SLUG_CONCEPT = "digit:7"
# ESD / AdvUnlearn on the tiny world (lr 1e-3 and a strong retain term γ = 30: the tiny encoder drifts fast)
ERASE_SETTINGS = dict(iterations=160, warmup=60, lr=1e-3, retain_weight=30.0, retain_batch=10,
                      attack_steps=10,
                      attack_lr=1e-2, sampler_steps=10, guidance=3.0, bank_size=2, seed=0)
ERASE_RETAIN_PROMPTS = 60
GATE_STEPS = 600


@dataclass(frozen=True)
class Artifact:
    """One committed artifact: its files in the demo folder and the function that (re)makes them there."""

    name: str
    files: tuple[str, ...]
    make: Callable[[Path], dict]
    how: str  # one line for the manifest and the report


def erase_prompts(style: str = ERASED_STYLE, n_retain: int = ERASE_RETAIN_PROMPTS, seed: int = 0
                  ) -> tuple[str, list[str]]:
    """(training prompt naming the style, retain prompts): other styles' captions, not the measured ones."""
    from ...tinyworld.data import TEMPLATES, caption
    from ...tinyworld.styles import STYLES
    from ...tinyworld.tasks import Concept
    from ...tinyworld.tasks.erase_retain import retain_set

    measured = set(retain_set(Concept.parse(f"style:{style}")).prompts)
    pool = [caption(d, s, t) for d in range(10) for s in (None, *STYLES) if s != style
            for t in range(len(TEMPLATES))]
    pool = [p for p in pool if p not in measured]
    return f"a handwritten digit in {style} style", random.Random(seed).sample(pool, min(n_retain, len(pool)))


def _plain_key(key: str) -> str:
    return key.removeprefix("text_model.")


def changed_tensors(base: torch.nn.Module, edited: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Floating tensors of ``edited`` that differ from ``base`` (keys without ``text_model.``), as fp16."""
    old = base.state_dict()
    return {_plain_key(k): v.detach().half().contiguous() for k, v in edited.state_dict().items()
            if v.is_floating_point() and not torch.equal(v, old[k])}


def load_edited_encoder(path: Path, base: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``base`` with the tensors stored in ``path`` (refused if one does not fit)."""
    import copy

    tensors, meta = io.load_state_dict(path)
    model = copy.deepcopy(base).eval()
    state = model.state_dict()
    by_plain = {_plain_key(k): k for k in state}
    unknown = [k for k in tensors if k not in by_plain or state[by_plain[k]].shape != tensors[k].shape]
    if unknown:
        raise ValueError(f"{path}: tensors {unknown[:3]} do not fit the tiny world's text encoder; "
                         "re-make the demo artifacts with `python -m unlearnkit demo --remake`")
    model.load_state_dict({by_plain[k]: v.float() for k, v in tensors.items()}, strict=False)
    return model


def make_erased(mode: str) -> Callable[[Path], dict]:
    """Maker of the ESD (mode "esd") or AdvUnlearn ("advunlearn") encoder erasing ERASED_STYLE."""

    def make(folder: Path) -> dict:
        from ...erase.advunlearn import EraseConfig, train_erased_encoder
        from ...tinyworld.tasks.erase_models import tiny_components

        concept, retain = erase_prompts()
        config = EraseConfig(concept=(concept,), retain=tuple(retain),
                             attack="none" if mode == "esd" else "pgd",
                             **ERASE_SETTINGS)
        comps = tiny_components("paragon")
        start = time.perf_counter()
        encoder = train_erased_encoder(comps, config).encoder
        seconds = time.perf_counter() - start
        tensors = changed_tensors(comps.text_encoder, encoder)
        path = folder / f"erase_{ERASED_STYLE}_{mode}.safetensors"
        io.save_safetensors(path, tensors, {"format": "pt", "unlearnkit.kind": "text_encoder_changed_tensors",
                                            "unlearnkit.erase.mode": mode,
                                            "unlearnkit.erase.config": json.dumps(config.to_dict())},
                            overwrite=True)
        return {"seconds": round(seconds, 1), "tensors": len(tensors), "config": config.to_dict()}

    return make


def make_gate(folder: Path) -> dict:
    """Prompt-reading CDM gate over the style shards (as bench/compose.py trains it)."""
    from ...compose.gate_training import GateTrainConfig, train_gate
    from ...tinyworld import store
    from ...tinyworld.tasks.gate_data import gate_data

    latents, contexts, null = gate_data("style", store.load_text_encoder(), store.load_vae())
    start = time.perf_counter()
    train_gate(latents, str(folder / "gate_style_prompt.safetensors"), GateTrainConfig(steps=GATE_STEPS),
               family="tinyworld", overwrite=True, contexts=contexts, null_context=null)
    return {"seconds": round(time.perf_counter() - start, 1), "steps": GATE_STEPS, "shards": list(latents)}


def make_slug(folder: Path) -> dict:
    """SLUG on the tiny CLIP's text tower forgetting SLUG_CONCEPT, the step searched on generated images."""
    from ...tinyworld import store
    from ...tinyworld.data import load_world
    from ...tinyworld.models import text_encoder_from_clip
    from ...tinyworld.pipeline import build_pipeline
    from ...tinyworld.tasks import Concept
    from ...tinyworld.tasks.slug_generation import generation_metrics
    from ...tinyworld.tasks.slug_pairs import concept_pairs, tiny_adapter
    from ...unlearn import SlugConfig, StepSearchConfig, run_slug, save_patch

    concept = Concept.parse(SLUG_CONCEPT)
    clip = store.load_clip()
    enc = tiny_adapter(clip, "text")
    pipe = build_pipeline(store.load_unet("paragon"), text_encoder_from_clip(clip), store.load_vae())
    metrics = generation_metrics(clip, pipe, concept, per_class=8, seed=1)
    forget, retain = concept_pairs(load_world().public_set(), concept, 64, 128, 0)
    config = SlugConfig(max_layers=4, search=StepSearchConfig(retain_drop=0.05, max_evals=10))
    start = time.perf_counter()
    result = run_slug(enc, forget, retain, config, metrics=metrics)
    seconds = time.perf_counter() - start
    save_patch(result.to_patch(enc, concept.name, torch.float16), folder / "slug_digit7.safetensors",
               overwrite=True)
    scores = result.scores
    sidecar = {"concept": concept.spec, "layer": result.layer, "step": result.step,
               "search_success": result.search.success, "search_reason": result.search.reason,
               "names": scores.names, "importance": scores.importance.tolist(),
               "alignment": scores.alignment.tolist(), "front": scores.front.tolist(),
               "slug_seconds": round(seconds, 2),
               "tried": [{"layer": n, "success": t.success, "step": t.step, "forget": t.forget_metric,
                          "retain": t.retain_metric} for n, t in result.tried]}
    (folder / "slug_digit7.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return {"seconds": round(seconds, 1), "layer": result.layer, "search": "generation, 8 images per class"}


ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (
    Artifact("gate", ("gate_style_prompt.safetensors",), make_gate,
             f"compose.train_gate on the style shards' images + pooled captions, {GATE_STEPS} steps, seed 0"),
    Artifact("erase_esd", (f"erase_{ERASED_STYLE}_esd.safetensors",), make_erased("esd"),
             f"erase.train_erased_encoder, attack none (ESD), {ERASE_SETTINGS['iterations']} iterations"),
    Artifact("erase_advunlearn", (f"erase_{ERASED_STYLE}_advunlearn.safetensors",), make_erased("advunlearn"),
             f"erase.train_erased_encoder, attack pgd (AdvUnlearn), {ERASE_SETTINGS['iterations']} "
             "iterations"),
    Artifact("slug", ("slug_digit7.safetensors", "slug_digit7.json"), make_slug,
             "unlearn.run_slug on the tiny CLIP text tower, step searched on generated images"),
)}


def path(name: str, index: int = 0, folder: Path = DEMO_DIR) -> Path:
    """File ``index`` of artifact ``name``; FileNotFoundError naming the remake command when missing."""
    file = folder / ARTIFACTS[name].files[index]
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing; re-make it with `python -m unlearnkit demo --remake {name}`")
    return file


def manifest(folder: Path = DEMO_DIR) -> dict:
    """How the committed artifacts were made ({} when the manifest is missing)."""
    file = folder / "manifest.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def remake(names: list[str] | None = None, folder: Path = DEMO_DIR) -> dict:
    """Re-make the named artifacts (all by default) into ``folder``; returns and writes the manifest."""
    unknown = sorted(set(names or []) - set(ARTIFACTS))
    if unknown:
        raise ValueError(f"--remake: unknown artifact(s) {unknown}; expected some of {sorted(ARTIFACTS)}")
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    made = manifest(folder)
    for name in names or list(ARTIFACTS):
        art = ARTIFACTS[name]
        log.info("making demo artifact %s (%s)", name, art.how)
        entry = art.make(folder)
        entry.update(how=art.how, command=f"python -m unlearnkit demo --remake {name}",
                     bytes={f: (folder / f).stat().st_size for f in art.files})
        made[name] = entry
        manifest_path.write_text(json.dumps(made, indent=1, sort_keys=True) + "\n")
    return made
