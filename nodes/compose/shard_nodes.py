"""ComfyUI nodes for Compose: sample from a mixture of shard models (CDM, Golatkar et al. 2023, arXiv
2308.01937).

Shard → Compose Shards → sampler; Forget Shard / Restrict Shards edit a shard set; Shard
Attribution plots the gate weights of the last sampling run. Gate nodes live in gate_nodes.py,
the composed model in composed_model.py. ComfyUI is imported only inside functions; the maths lives
in ``unlearnkit.compose``.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

import numpy as np
import torch

from ...unlearnkit import io
from ...unlearnkit.compose import Shard, ShardSet
from ...unlearnkit.compose.attribution import attribution_plot, attribution_report
from ...unlearnkit.compose.shards import append_forget_log, parse_tags
from . import gate_nodes
from .composed_model import GATES, GateChoice, compose_model, find_mixture

logger = logging.getLogger(__name__)

SHARDS = "SHARDS"
SHARD_GATE = gate_nodes.SHARD_GATE
CATEGORY = "UnlearnKit/Compose"
FORGET_LOG = "unlearnkit_forget_log.jsonl"
SOURCE_FOLDERS = ("checkpoints", "loras", "diffusion_models", "unet")


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime: float, size: int) -> str:
    return io.file_sha256(path)


def resolve_source(source: str) -> tuple[str, str]:
    """(path, sha256) of a shard's source file: an absolute path or a name in a ComfyUI model folder."""
    source = source.strip()
    if not source:
        return "", ""
    path = source if os.path.isabs(source) else None
    if path is None:
        import folder_paths

        for folder in SOURCE_FOLDERS:
            try:
                path = folder_paths.get_full_path(folder, source)
            except KeyError:  # folder not registered in this ComfyUI
                path = None
            if path:
                break
    if not path or not os.path.isfile(path):
        raise ValueError(
            f"source: file {source!r} not found (give a path or a name in "
            f"models/{'|'.join(SOURCE_FOLDERS[:2])})"
        )
    stat = os.stat(path)
    return path, _sha256(path, stat.st_mtime, stat.st_size)


class ShardNode:
    """Adds one model to a shard set with a slider weight (its prior λ) and optional access tags."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A model fine-tuned on one data source."}),
                "name": ("STRING", {"default": "", "tooltip": "Shard name (empty: 'shard N')."}),
                "weight": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "display": "slider",
                        "tooltip": "Prior weight; weights are normalised to sum to 1.",
                    },
                ),
            },
            "optional": {
                "shards": (SHARDS, {"tooltip": "Shards to add this one to."}),
                "access_tags": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Rights a user needs for this shard "
                        "(comma or space separated); see Restrict Shards.",
                    },
                ),
                "source": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Checkpoint/LoRA file this shard came from "
                        "(path or model-folder name); its hash goes into forget records.",
                    },
                ),
            },
        }

    RETURN_TYPES = (SHARDS,)
    RETURN_NAMES = ("shards",)
    FUNCTION = "add"
    CATEGORY = CATEGORY
    DESCRIPTION = "Add a model to a shard set (Compartmentalized Diffusion Models)."

    def add(self, model: Any, name: str, weight: float, shards: ShardSet | None = None, access_tags: str = "",
            source: str = "") -> tuple[ShardSet]:
        base = shards if shards is not None else ShardSet()
        name = name.strip() or f"shard {len(base) + 1}"
        path, sha = resolve_source(source)
        return (base.add(Shard(name=name, model=model, prior=float(weight), tags=parse_tags(access_tags),
                               source=path, sha256=sha)),)


class ComposeShardsNode:
    """Turns a shard set into one MODEL that samples from the (gated) mixture of the shards."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"shards": (SHARDS, {"tooltip": "Shards of one model family."})},
            "optional": {
                "gate": (
                    list(GATES),
                    {
                        "default": "static",
                        "tooltip": (
                            "static: the slider weights. classifier: a trained Shard Gate picks shards per "
                            "sample and step. "
                            "density: training-free, tracks each shard's likelihood along the path "
                            "(ancestral/SDE samplers); "
                            "density (ODE sampler): adds a divergence probe (one extra shard call) for "
                            "euler, dpm++ 2m, ..."
                        ),
                    },
                ),
                "prune_eps": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 0.5,
                        "step": 0.005,
                        "display": "slider",
                        "tooltip": "Skip shards whose weight is below this for every sample (faster; 0 = "
                        "off).",
                    },
                ),
                "shard_gate": (SHARD_GATE, {"tooltip": "Trained gate for the 'classifier' choice."}),
            },
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "compose"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Sample from the mixture of shard models, mixed in x0 space at every step with static or "
                   "gated weights.")

    def compose(
        self, shards: ShardSet, gate: str = "static", prune_eps: float = 0.0, shard_gate: Any = None
    ) -> tuple[Any]:
        if shard_gate is not None and gate != "classifier":
            logger.warning(
                "Compose Shards: shard_gate is connected but gate is %r; the gate file is not used", gate
            )
        choice = GateChoice(gate, shard_gate if gate == "classifier" else None)
        return (compose_model(shards, choice, prune_eps),)


class ForgetShardNode:
    """Drops a shard from a set and appends a verifiable record to the forget log (CDM §3)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "shards": (SHARDS,),
                "name": ("STRING", {"default": "", "tooltip": "Name of the shard to forget."}),
            },
            "optional": {
                "reason": ("STRING", {"default": "", "tooltip": "Why (e.g. a deletion request id)."})
            },
        }

    RETURN_TYPES = (SHARDS, "STRING")
    RETURN_NAMES = ("shards", "record")
    FUNCTION = "forget"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Forget a data source: the shard is dropped (no retraining; a classifier gate masks it) and a record "
        f"(shard, file hash, time) is appended to output/{FORGET_LOG}."
    )

    def forget(self, shards: ShardSet, name: str, reason: str = "") -> tuple[ShardSet, str]:
        import folder_paths

        name = name.strip()
        if name not in shards.names:
            raise ValueError(f"name: shard {name!r} is not in the set (shards: {shards.names})")
        rest, record = shards.forget(name, reason=reason.strip())
        log = append_forget_log(os.path.join(folder_paths.get_output_directory(), FORGET_LOG), record)
        logger.info("Forget Shard: %s (logged to %s)", name, log)
        return rest, record.to_json()


class RestrictShardsNode:
    """Serves only the shards a user's rights cover; asking for any other is refused."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "shards": (SHARDS,),
                "rights": (
                    "STRING",
                    {"default": "", "tooltip": "Access tags the user holds (comma or space separated)."},
                ),
            },
            "optional": {
                "requested": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Shard names wanted (comma separated); "
                        "empty: every shard the rights cover.",
                    },
                )
            },
        }

    RETURN_TYPES = (SHARDS, "STRING")
    RETURN_NAMES = ("shards", "served")
    FUNCTION = "restrict"
    CATEGORY = CATEGORY
    DESCRIPTION = "Keep only the shards a user may use (access tags); a request for any other shard fails."

    def restrict(self, shards: ShardSet, rights: str, requested: str = "") -> tuple[ShardSet, str]:
        wanted = [n.strip() for n in requested.split(",") if n.strip()] or None
        for n in wanted or []:
            if n not in shards.names:
                raise ValueError(f"requested: shard {n!r} is not in the set (shards: {shards.names})")
        subset = shards.restrict(parse_tags(rights), wanted)
        return subset, ", ".join(subset.names)


def pil_to_image(picture: Any) -> torch.Tensor:
    """PIL image -> ComfyUI IMAGE (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)[None]


class ShardAttributionNode:
    """Which shard made each sample: gate weights per step of the last run of a composed model (CDM Fig.
    3)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Compose Shards output the sampler used."}),
                "max_samples": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Samples to plot."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "unlearnkit/attribution",
                        "tooltip": "Where the JSON report is saved in the output folder (empty: not saved).",
                    },
                ),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "The sampled latent: makes this node run after sampling."}),
                "image": ("IMAGE", {"tooltip": "Or the decoded image, for the same purpose."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "report")
    OUTPUT_NODE = True
    FUNCTION = "attribute"
    CATEGORY = CATEGORY
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
