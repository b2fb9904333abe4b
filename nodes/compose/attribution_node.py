"""ComfyUI node Shard Attribution: which shard made each sample — the gate weights per step of the last
sampling run of a composed model (CDM Fig. 3). ComfyUI is imported only inside functions."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from ...unlearnkit.compose.attribution import attribution_plot, attribution_report
from .comfy_io import pil_to_image
from .composed_model import find_mixture
from .node_types import ComposeNode, text_input

logger = logging.getLogger(__name__)


class ShardAttributionNode(ComposeNode):
    """Which shard made each sample: gate weights per step of the last run of a composed model (CDM Fig.
    3)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Compose Shards output the sampler used."}),
                "max_samples": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Samples to plot."}),
                "filename_prefix": text_input("Where the JSON report is saved in the output folder (empty: "
                                              "not saved).", "unlearnkit/attribution"),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "The sampled latent: makes this node run after sampling."}),
                "image": ("IMAGE", {"tooltip": "Or the decoded image, for the same purpose."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "report")
    OUTPUT_TOOLTIPS = ("Each shard's weight against the sampling step, one panel per sample.",
                       "The same as JSON: per-step weights, each sample's credit and top shard.")
    OUTPUT_NODE = True
    FUNCTION = "attribute"
    DESCRIPTION = ("Plot each shard's weight against the sampling step per sample, with a JSON report "
                   "(credit, top shard).")

    def attribute(
        self, model: Any, max_samples: int, filename_prefix: str, latent: Any = None, image: Any = None
    ) -> dict:
        if latent is None and image is None:
            raise ValueError(
                "latent/image: connect the sampled LATENT (or decoded IMAGE) so attribution runs after "
                "sampling"
            )
        mixture = find_mixture(model)
        if mixture.composer is None or not mixture.composer.history:
            raise ValueError("model: no sampling run recorded yet; sample with this composed model first")
        history, names = mixture.composer.history, list(mixture.names)
        report = attribution_report(history, names)
        text = json.dumps(report)
        if filename_prefix.strip():
            self._save(filename_prefix.strip(), text)
        plot = pil_to_image(attribution_plot(history, names, max_samples=max_samples))
        return {"ui": {"text": [json.dumps({"top_shard": report["top_shard"]})]}, "result": (plot, text)}

    @staticmethod
    def _save(prefix: str, text: str) -> None:
        import folder_paths

        folder, name, counter, _, _ = folder_paths.get_save_image_path(
            prefix, folder_paths.get_output_directory()
        )
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}_{counter:05}_.json")
        with open(path, "w") as f:
            f.write(text)
        logger.info("Shard Attribution: report saved to %s", path)
