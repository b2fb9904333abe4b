"""SLUG: Single Layer Unlearning Gradient (Cai et al. 2024, arXiv 2407.11867).

A few forget image-text pairs and some retain pairs -> one gradient pass -> one layer, one step
-> a tiny patch file that can be applied to, stacked on and removed from CLIP / the SD text encoder::

    enc = OpenClipAdapter(model)                       # or HFClipAdapter(clip_model, tower="text")
    result = run_slug(enc, forget=[(images, "Elon Musk")], retain=[(imgs, captions)])
    patch = result.to_patch(enc, concept="Elon Musk")
    save_patch(patch, "elon.safetensors"); apply_patch(model, patch); remove_patch(model, patch)
    plot_layers(result.scores, result.layer)           # PIL image of importance vs alignment

SD (a style in generation): ``run_sd_slug(SDModel(text_encoder, unet, alphas_cumprod), kv_batches(...),
denoising_batches(...), metrics)`` - the text encoder's layers and the UNet's cross-attention K/V are the
candidates; a UNet layer's patch has ``target="unet"``.

Files: ``apply_patches_to_file(src, out, [patch paths])``. Baselines: ``gradient_ascent``, ``ga_ft``.
"""
from .adapter import ClipAdapter, EncoderPair, Encoders, candidate_layers
from .evaluation import class_metrics, forget_similarity, make_evaluator, prepare_pairs, zero_shot_metrics
from .ga_ft import GaFtConfig, ga_ft
from .gradient_ascent import BaselineResult, GradientAscentConfig, gradient_ascent
from .gradients import LayerGradients, contrastive_loss, forget_loss, layer_gradients
from .layer_step import slug_delta, stepped_layer
from .pareto import (
    LayerScores,
    alignment,
    choose_layer,
    exclude_last_blocks,
    importance,
    layer_scores,
    pareto_front,
    pareto_ranks,
    relative_depth,
)
from .patch_files import apply_patches_to_file, apply_patches_to_state
from .patches import (
    Patch,
    PatchMismatchError,
    applied_patches,
    apply_patch,
    check_patch,
    layer_sha256,
    load_patch,
    make_patch,
    remove_patch,
    save_patch,
    stack_signature,
)
from .plot import PlotStyle, plot_array, plot_layers
from .sd_model import SDModel
from .sd_slug import SDSlugConfig, SDSlugResult, run_sd_slug
from .slug import SlugConfig, SlugResult, pick_search, run_slug
from .step_search import StepSearchConfig, StepSearchResult, initial_step, search_step
from .targets import HFClipAdapter, OpenClipAdapter

__all__ = [
    "ClipAdapter", "EncoderPair", "Encoders", "candidate_layers", "class_metrics", "forget_similarity",
    "make_evaluator", "prepare_pairs", "zero_shot_metrics", "GaFtConfig", "ga_ft", "BaselineResult",
    "GradientAscentConfig", "gradient_ascent", "LayerGradients", "contrastive_loss", "forget_loss",
    "layer_gradients", "LayerScores", "alignment", "choose_layer", "exclude_last_blocks", "importance",
    "layer_scores", "pareto_front", "pareto_ranks", "relative_depth", "apply_patches_to_file",
    "apply_patches_to_state", "Patch", "PatchMismatchError", "applied_patches", "apply_patch", "check_patch",
    "layer_sha256", "load_patch", "make_patch", "remove_patch", "save_patch", "stack_signature", "PlotStyle",
    "plot_array", "plot_layers", "SlugConfig", "SlugResult", "pick_search", "run_slug", "StepSearchConfig",
    "StepSearchResult", "initial_step", "search_step", "HFClipAdapter", "OpenClipAdapter", "slug_delta",
    "stepped_layer", "SDModel", "SDSlugConfig", "SDSlugResult", "run_sd_slug",
]
