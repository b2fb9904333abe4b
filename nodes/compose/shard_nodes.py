"""ComfyUI nodes for Compose: sample from a mixture of shard models (CDM, Golatkar et al. 2023, arXiv
2308.01937).

Shard → Compose Shards → sampler; Forget Shard / Restrict Shards edit a shard set. Shard Attribution is
attribution_node.py, the gate nodes gate_nodes.py, the composed model composed_model.py. ComfyUI is
imported only inside functions; the maths lives in ``unlearnkit.compose``.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from ...unlearnkit.compose import Shard, ShardSet
from ...unlearnkit.compose.gate_registry import GATES, GateSpec, canonical_gate
from ...unlearnkit.compose.routing import (
    DEFAULT_EPS,
    DEFAULT_EVALUATE,
    DEFAULT_MC_SIGMA,
    EVALUATE,
    MAX_EPS,
    Evaluation,
)
from ...unlearnkit.compose.shards import append_forget_log, parse_tags
from .comfy_io import resolve_source
from .composed_model import compose_model
from .node_types import SHARD_GATE, SHARDS, ComposeNode, text_input

logger = logging.getLogger(__name__)

FORGET_LOG = "unlearnkit_forget_log.jsonl"
GATE_TIP = (
    "static: the slider weights. classifier: a trained Shard Gate picks shards per sample and step. "
    "density: training-free, tracks each shard's likelihood along the path (ancestral/SDE samplers); "
    "density-ode: adds a divergence probe (one extra shard call) for euler, dpm++ 2m, ..."
)
EPS_TIP = (
    "epsilon: a shard whose weight is below this is not run for that sample (per-sample, fast) or, with "
    "every-shard, when it is below it for every sample. 0 = never skip."
)
SIGMA_TIP = (
    "fast: above this noise level (σ of an SD-type schedule, 0.03..14.6; flow models count σ/(1-σ)) each "
    "sample uses one shard drawn from its weights."
)
EVALUATE_TIP = (
    "Which shards run on which samples. every-shard: all shards on every sample (exact, N models' cost). "
    "per-sample: a shard runs only on the samples whose weight reaches epsilon. fast: per-sample, and above "
    "fast_sigma each sample uses one shard drawn from its weights (an unbiased estimate; about one model's "
    "cost). The density gates need every shard's score, so fast runs as per-sample with them."
)


class ShardNode(ComposeNode):
    """Adds one model to a shard set with a slider weight (its prior λ) and optional access tags."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A model fine-tuned on one data source."}),
                "name": text_input("Shard name (empty: 'shard N')."),
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
                "access_tags": text_input("Rights a user needs for this shard (comma or space separated); "
                                          "see Restrict Shards."),
                "source": text_input("Checkpoint/LoRA file this shard came from (path or model-folder name); "
                                     "its hash goes into forget records."),
            },
        }

    RETURN_TYPES = (SHARDS,)
    RETURN_NAMES = ("shards",)
    OUTPUT_TOOLTIPS = ("The shard set with this shard added: chain more Shards, or connect Compose Shards.",)
    FUNCTION = "add"
    DESCRIPTION = "Add a model to a shard set (Compartmentalized Diffusion Models)."

    def add(self, model: Any, name: str, weight: float, shards: ShardSet | None = None, access_tags: str = "",
            source: str = "") -> tuple[ShardSet]:
        base = shards if shards is not None else ShardSet()
        name = name.strip() or f"shard {len(base) + 1}"
        path, sha = resolve_source(source)
        return (base.add(Shard(name=name, model=model, prior=float(weight), tags=parse_tags(access_tags),
                               source=path, sha256=sha)),)


class ComposeShardsNode(ComposeNode):
    """Turns a shard set into one MODEL that samples from the (gated) mixture of the shards."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"shards": (SHARDS, {"tooltip": "Shards of one model family."})},
            "optional": {  # gate and prune_eps first: widget order of workflows saved by earlier versions
                "gate": (list(GATES), {"default": "static", "tooltip": GATE_TIP}),
                "prune_eps": ("FLOAT", {"default": DEFAULT_EPS, "min": 0.0, "max": MAX_EPS, "step": 0.005,
                                        "advanced": True, "tooltip": EPS_TIP}),
                "evaluate": (list(EVALUATE), {"default": DEFAULT_EVALUATE, "tooltip": EVALUATE_TIP}),
                "fast_sigma": ("FLOAT", {"default": DEFAULT_MC_SIGMA, "min": 0.0, "max": 1000.0, "step": 0.1,
                                         "advanced": True, "tooltip": SIGMA_TIP}),
                "shard_gate": (SHARD_GATE, {"tooltip": "Trained gate for the 'classifier' choice."}),
            },
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A model whose every sampling step mixes the shards (use it like any MODEL).",)
    FUNCTION = "compose"
    DESCRIPTION = ("Sample from the mixture of shard models, mixed in x0 space at every step with static or "
                   "gated weights.")

    @classmethod
    def VALIDATE_INPUTS(cls, gate: str = "static") -> bool | str:
        """Accept the gate spellings of workflows saved by earlier versions (checked here, not by ComfyUI)."""
        try:
            canonical_gate(gate)
        except ValueError as exc:
            return str(exc)
        return True

    def compose(self, shards: ShardSet, gate: str = "static", prune_eps: float = DEFAULT_EPS,
                evaluate: str = DEFAULT_EVALUATE, fast_sigma: float = DEFAULT_MC_SIGMA,
                shard_gate: Any = None) -> tuple[Any]:
        gate = canonical_gate(gate)
        if shard_gate is not None and gate != "classifier":
            logger.warning(
                "Compose Shards: shard_gate is connected but gate is %r; the gate file is not used", gate
            )
        spec = GateSpec(gate, shard_gate if gate == "classifier" else None, net_input="shard_gate")
        return (compose_model(shards, spec, Evaluation(evaluate, prune_eps, fast_sigma)),)


class ForgetShardNode(ComposeNode):
    """Drops a shard from a set and appends a verifiable record to the forget log (CDM §3)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"shards": (SHARDS, {"tooltip": "The shard set to forget a data source from."}),
                             "name": text_input("Name of the shard to forget.")},
                "optional": {"reason": text_input("Why (e.g. a deletion request id).")}}

    RETURN_TYPES = (SHARDS, "STRING")
    RETURN_NAMES = ("shards", "record")
    OUTPUT_TOOLTIPS = ("The shard set without the forgotten shard.",
                       "The forget record (shard, file sha256, time) as JSON, also appended to the "
                       "forget log.")
    FUNCTION = "forget"
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


class RestrictShardsNode(ComposeNode):
    """Serves only the shards a user's rights cover; asking for any other is refused."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        wanted = text_input("Shard names wanted (comma separated); empty: every shard the rights cover.")
        return {"required": {"shards": (SHARDS, {"tooltip": "The shard set to serve from."}),
                             "rights": text_input("Access tags the user holds (comma or space separated).")},
                "optional": {"requested": wanted}}

    RETURN_TYPES = (SHARDS, "STRING")
    RETURN_NAMES = ("shards", "served")
    OUTPUT_TOOLTIPS = ("Only the shards the rights cover (or the ones requested).",
                       "Names of the shards served, comma separated.")
    FUNCTION = "restrict"
    DESCRIPTION = "Keep only the shards a user may use (access tags); a request for any other shard fails."

    def restrict(self, shards: ShardSet, rights: str, requested: str = "") -> tuple[ShardSet, str]:
        wanted = [n.strip() for n in requested.split(",") if n.strip()] or None
        for n in wanted or []:
            if n not in shards.names:
                raise ValueError(f"requested: shard {n!r} is not in the set (shards: {shards.names})")
        subset = shards.restrict(parse_tags(rights), wanted)
        return subset, ", ".join(subset.names)
