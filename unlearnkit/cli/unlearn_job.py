"""One SLUG run from names and paths: load the target, build forget/retain pairs, run, write patch + plot +
summary.

Used by ``python -m unlearnkit unlearn run``. The target is the tiny world's CLIP unless ``clip_dir``
names a transformers ``CLIPModel`` folder (config.json + model.safetensors / pytorch_model.bin).
Outputs (never replaced unless ``overwrite``): ``<out>.safetensors`` (the patch), ``<out>.layers.png``
(importance vs alignment) and ``<out>.json`` (the summary, also returned). The step search measures
CLIP zero-shot accuracy, or (``search="generation"``, tiny world) images generated with the edited
text encoder (see :mod:`unlearnkit.tinyworld.tasks.slug_generation`).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import io
from ..unlearn.evaluation import Metrics
from ..unlearn.gradients import Batch
from ..unlearn.slug import SlugConfig, run_slug
from ..unlearn.step_search import StepSearchConfig
from ..unlearn.targets import load_hf_clip

logger = logging.getLogger(__name__)

DTYPES = {"layer": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SEARCHES = ("zero-shot", "generation")


@dataclass(frozen=True)
class JobOptions:
    """What to forget (a tiny-world concept or an image folder + concept text), on what, and where to
    write."""

    out: str
    forget: str | None = None  # tiny-world concept: "digit:7", "style:bold", …
    forget_images: str | None = None
    concept: str | None = None  # the patch's concept name (required with forget_images)
    retain_images: str | None = None
    clip_dir: str | None = None  # None: the tiny world's CLIP
    tower: str = "text"
    search: str = "zero-shot"  # or "generation" (tiny world, text tower): judge steps on generated images
    unet: str = "paragon"
    layer: str | None = None
    exclude_last_blocks: int = 0
    max_layers: int = 4
    retain_drop: float = 0.05
    max_evals: int = 10
    n_forget: int = 64
    n_retain: int = 128
    dtype: str = "layer"
    seed: int = 0
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        if (self.forget is None) == (self.forget_images is None):
            raise ValueError(
                "forget: give exactly one of a tiny-world concept (--forget) or an image folder "
                "(--forget-images)"
            )
        if self.forget_images is not None and not (self.concept or "").strip():
            raise ValueError("concept: --forget-images needs the concept's name (--concept 'Van Gogh')")
        if self.clip_dir is not None and self.forget is not None:
            raise ValueError(
                "forget: tiny-world concepts need the tiny world's CLIP; with --clip-dir use --forget-images"
            )
        if self.clip_dir is not None and self.retain_images is None:
            raise ValueError(
                "retain_images: with --clip-dir give retain images (--retain-images) to keep utility"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.search not in SEARCHES:
            raise ValueError(f"search: expected one of {SEARCHES}, got {self.search!r}")
        if self.search == "generation" and (self.forget is None or self.tower != "text"):
            raise ValueError(
                "search: 'generation' needs a tiny-world concept (--forget) and --tower text (the SD text "
                "encoder)"
            )


def output_paths(out: str) -> dict[str, Path]:
    """patch / plot / summary paths from ``out`` (with or without the .safetensors suffix)."""
    base = Path(out)
    if base.suffix == ".safetensors":
        base = base.with_suffix("")
    return {
        "patch": base.with_suffix(".safetensors"),
        "plot": Path(f"{base}.layers.png"),
        "summary": base.with_suffix(".json"),
    }


def check_outputs(paths: dict[str, Path], overwrite: bool) -> None:
    """Refuse before any work if an output exists (unless overwrite)."""
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output(s) {existing} already exist; choose another --out or pass --overwrite")


def _encoders(options: JobOptions):
    from ..unlearn.targets import HFClipAdapter

    if options.clip_dir is not None:
        return HFClipAdapter(
            load_hf_clip(options.clip_dir), tower=options.tower
        ), "clip_dir:" + options.clip_dir
    from ..tinyworld import store
    from ..tinyworld.tasks.slug_pairs import tiny_adapter

    return tiny_adapter(store.load_clip(), options.tower), "tinyworld"


def build_pairs(options: JobOptions, encoders) -> tuple[str, list[Batch], list[Batch], Metrics | None]:
    """(concept name, forget batches, retain batches, search metrics or None for the default)."""
    from ..unlearn.image_folders import load_image_folder

    metrics = None
    retain: list[Batch] = []
    if options.forget is not None:
        from ..tinyworld.data import load_world
        from ..tinyworld.tasks import Concept
        from ..tinyworld.tasks.slug_pairs import concept_metrics, concept_pairs

        concept = Concept.parse(options.forget)
        public = load_world().public_set()  # never the held-out split (that is for measuring)
        forget, retain = concept_pairs(public, concept, options.n_forget, options.n_retain, options.seed)
        if options.search == "generation":
            metrics = _generation_metrics(encoders.model, concept, options)
        else:
            metrics = concept_metrics(encoders, public, concept, limit=1000, seed=options.seed)
        name = options.concept or concept.name
    else:
        images, _ = load_image_folder(options.forget_images, "forget_images")
        name = options.concept.strip()
        forget = [(images[: options.n_forget], name)]
        if options.retain_images is None:  # tiny world target: its public images, a caption each
            from ..tinyworld.data import load_world
            from ..tinyworld.tasks.slug_pairs import captioned_pairs

            retain = captioned_pairs(load_world().public_set(), options.n_retain, options.seed)
    if options.retain_images is not None:
        images, captions = load_image_folder(options.retain_images, "retain_images")
        retain = [(images[: options.n_retain], captions[: options.n_retain])]
    return name, forget, retain, metrics


def _generation_metrics(clip, concept, options: JobOptions) -> Metrics:
    from ..tinyworld import store
    from ..tinyworld.models import text_encoder_from_clip
    from ..tinyworld.pipeline import build_pipeline
    from ..tinyworld.tasks.slug_generation import generation_metrics

    pipe = build_pipeline(store.load_unet(options.unet), text_encoder_from_clip(clip), store.load_vae())
    return generation_metrics(clip, pipe, concept, per_class=8, seed=options.seed + 1)


def _write_png(path: Path, image, overwrite: bool) -> None:
    io.atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), overwrite=overwrite)


def _write_json(path: Path, data: dict, overwrite: bool) -> None:
    text = json.dumps(data, indent=1)
    io.atomic_write(
        path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"), overwrite=overwrite
    )


def run_job(options: JobOptions) -> dict:
    """Run SLUG as ``options`` say and write the three outputs; returns the summary."""
    from ..unlearn.patches import save_patch
    from ..unlearn.plot import plot_layers

    options.check()
    paths = output_paths(options.out)
    check_outputs(paths, options.overwrite)
    encoders, target = _encoders(options)
    name, forget, retain, metrics = build_pairs(options, encoders)
    config = SlugConfig(
        layer=options.layer,
        exclude_last_blocks=options.exclude_last_blocks,
        progress=options.progress,
        max_layers=options.max_layers,
        search=StepSearchConfig(retain_drop=options.retain_drop, max_evals=options.max_evals),
    )
    start = time.perf_counter()
    result = run_slug(encoders, forget, retain, config, metrics=metrics)
    seconds = time.perf_counter() - start
    patch = result.to_patch(encoders, name, DTYPES[options.dtype])
    save_patch(patch, paths["patch"], overwrite=options.overwrite)
    _write_png(paths["plot"], plot_layers(result.scores, result.layer), options.overwrite)
    summary = {
        "concept": name,
        "target": target,
        "tower": options.tower,
        "layer": result.layer,
        "step": result.step,
        "patch_id": patch.id,
        "patch_bytes": paths["patch"].stat().st_size,
        "delta_dtype": str(patch.delta.dtype),
        "search_success": result.search.success,
        "search_reason": result.search.reason,
        "metrics": result.metrics(),
        "pareto_front": result.scores.front_names,
        "slug_seconds": round(seconds, 3),
        "layers_tried": [
            {
                "layer": name,
                "success": s.success,
                "step": s.step,
                "forget": s.forget_metric,
                "retain": s.retain_metric,
                "reason": s.reason,
            }
            for name, s in result.tried
        ],
        "outputs": {k: str(v) for k, v in paths.items()},
        "options": asdict(options),
    }
    _write_json(paths["summary"], summary, options.overwrite)
    return summary
