"""ComfyUI nodes for the CDM classifier gate: Train Shard Gate and Load Shard Gate.

Gate files live in ``models/shard_gates/`` (put downloaded gates there) and
``output/shard_gates/`` (where Train Shard Gate writes); both are listed by Load Shard Gate.
ComfyUI is imported only inside functions; training is ``unlearnkit.compose.gate_training``.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ...unlearnkit.compose.gate_model import GateNet
from ...unlearnkit.compose.gate_training import GateTrainConfig, gate_accuracy, train_gate
from .comfy_io import (
    gate_files,
    gate_path,
    gate_summary,
    load_gate_as,
    output_gate_path,
    register_gate_folder,
)
from .gate_inputs import (
    MAX_IMAGE_INPUTS,
    Unprompted,
    comfy_progress,
    encode_images,
    numbered_inputs,
    shard_contexts,
)
from .node_types import SHARD_GATE, SHARDS, ComposeNode, text_input

logger = logging.getLogger(__name__)

RETRAIN_HINT = "; set if_exists to 'retrain' or choose another filename"


def reusable(net: GateNet, names: list[str], shape: tuple, context_dim: int, path: str) -> GateNet:
    """An existing gate file's net if it was trained for these shards, latents and prompt width."""
    c = net.config
    if list(c.names) == names and tuple(c.latent_shape) == shape and c.context_dim == context_dim:
        return net
    raise ValueError(
        f"filename: {os.path.basename(path)!r} exists but was trained for shards {list(c.names)} on latents "
        f"{tuple(c.latent_shape)}, prompt width {c.context_dim} (now {names}, {shape}, {context_dim})"
        + RETRAIN_HINT
    )


def trained(latents: dict, contexts: dict | None, null_context: Any, path: str, cfg: GateTrainConfig,
            family: str, init_gate: GateNet | None) -> GateNet:
    """train_gate outside ComfyUI's inference mode (inference tensors cannot be saved for backward)."""
    with torch.inference_mode(False), torch.enable_grad():
        latents = {k: v.clone() for k, v in latents.items()}
        if contexts is not None:
            contexts, null_context = {k: v.clone() for k, v in contexts.items()}, null_context.clone()
        return train_gate(latents, path, cfg, family=family, checkpoint_path=path + ".partial.pt",
                          overwrite=True, progress=comfy_progress(cfg.steps), init=init_gate,
                          contexts=contexts, null_context=null_context)


class TrainShardGateNode(ComposeNode):
    """Trains the CDM classifier gate on each shard's training images (image_k = data of the k-th shard)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        optional = {f"images_{k}": ("IMAGE", {"tooltip": f"Training images of shard {k} of the set."})
                    for k in range(1, MAX_IMAGE_INPUTS + 1)}
        optional.update(
            {
                f"prompt_{k}": (
                    "CONDITIONING",
                    {
                        "tooltip": f"Prompt of shard {k}'s images (all prompts + "
                        "empty_prompt given: the gate also reads the prompt)."
                    },
                )
                for k in range(1, MAX_IMAGE_INPUTS + 1)
            }
        )
        optional["empty_prompt"] = (
            "CONDITIONING",
            {"tooltip": "The empty prompt encoded (needed with prompt_k)."},
        )
        optional["init_gate"] = (
            SHARD_GATE,
            {
                "tooltip": "A gate trained on some of these shards: start from it "
                "(adds new shards without starting over)."
            },
        )
        return {
            "required": {
                "shards": (SHARDS, {"tooltip": "The shard set; the gate learns its shard names, in order."}),
                "vae": ("VAE", {"tooltip": "The shards' VAE, to encode the images."}),
                "filename": text_input("Gate file name in output/shard_gates/.", "shard_gate"),
                "steps": ("INT", {"default": 1500, "min": 1, "max": 200000, "tooltip": "Training steps."}),
                "batch_size": ("INT", {"default": 64, "min": 2, "max": 4096,
                                       "tooltip": "Noisy latents per training step."}),
                "learning_rate": ("FLOAT", {"default": 2e-3, "min": 1e-6, "max": 1.0, "step": 1e-4,
                                            "tooltip": "Adam learning rate of the gate."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1,
                                 "tooltip": "Seed of the noise and the batches (same seed, same gate)."}),
                "if_exists": (
                    ["reuse", "retrain"],
                    {
                        "tooltip": "reuse: load the file if it was trained for these shards; "
                        "retrain: train again and overwrite it."
                    },
                ),
            },
            "optional": optional,
        }

    RETURN_TYPES = (SHARD_GATE, "STRING")
    RETURN_NAMES = ("shard_gate", "info")
    OUTPUT_TOOLTIPS = ("The classifier gate: connect it to Compose Shards (gate: classifier).",
                       "What the gate is: file, shards, steps, held-out accuracy.")
    FUNCTION = "train"
    DESCRIPTION = (
        "Train a shard gate (a small noisy-latent classifier, CDM Prop. 3.1) on each shard's images; saved "
        "to "
        "output/shard_gates/ and resumable if interrupted."
    )

    def train(self, shards: Any, vae: Any, filename: str, steps: int, batch_size: int, learning_rate: float,
              seed: int, if_exists: str, init_gate: GateNet | None = None, empty_prompt: Any = None,
              **inputs: Any) -> tuple[GateNet, str]:
        register_gate_folder()
        names = list(shards.names)
        images = numbered_inputs(inputs, "images", names,
                                 "no training images for shard {name!r} (shard {k} of {names}); connect them")
        path = output_gate_path(filename)
        model = shards.shards[0].model
        latents = {name: encode_images(vae, model, images[k + 1]) for k, name in enumerate(names)}
        shape = tuple(next(iter(latents.values())).shape[1:])
        contexts, null_context = shard_contexts(names, latents, inputs, empty_prompt)
        context_dim = 0 if null_context is None else null_context.shape[0]
        if os.path.exists(path) and if_exists == "reuse":
            net = reusable(load_gate_as(path, "filename", RETRAIN_HINT), names, shape, context_dim, path)
            logger.info("Train Shard Gate: reusing %s", path)
            return net, "reused " + gate_summary(net, path)
        cfg = GateTrainConfig(steps=steps, batch_size=batch_size, lr=learning_rate, seed=seed)
        family = type(getattr(model.model, "model_config", model.model)).__name__
        net = trained(latents, contexts, null_context, path, cfg, family, init_gate)
        accuracy = {s: gate_accuracy(Unprompted(net), latents, s) for s in (0.1, 1.0, 5.0)}
        info = gate_summary(net, path) + "; training accuracy (no prompt) " + ", ".join(
            f"σ={s}: {a:.0%}" for s, a in accuracy.items())
        logger.info("Train Shard Gate: %s", info)
        return net, info


class LoadShardGateNode(ComposeNode):
    """Loads a trained shard gate from models/shard_gates/ or output/shard_gates/."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "gate_name": (
                    gate_files(),
                    {"tooltip": "Gate file (models/shard_gates or output/shard_gates)."},
                )
            }
        }

    RETURN_TYPES = (SHARD_GATE, "STRING")
    RETURN_NAMES = ("shard_gate", "info")
    OUTPUT_TOOLTIPS = ("The classifier gate: connect it to Compose Shards (gate: classifier).",
                       "What the gate is: file, shards, steps, held-out accuracy.")
    FUNCTION = "load"
    DESCRIPTION = "Load a shard gate file for Compose Shards' 'classifier' gate."

    @classmethod
    def IS_CHANGED(cls, gate_name: str) -> str:
        path = gate_path(gate_name, check=False)
        return f"{path}:{os.path.getmtime(path)}" if path and os.path.exists(path) else gate_name

    def load(self, gate_name: str) -> tuple[GateNet, str]:
        path = gate_path(gate_name)
        net = load_gate_as(path, "gate_name")
        return net, gate_summary(net, path)
