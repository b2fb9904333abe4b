"""ComfyUI node Erase Concept: train a concept-erased text encoder inside the graph (AdvUnlearn, Zhang et al.
NeurIPS 2024; ``attack: none`` is ESD on the text encoder, Gandikota et al. ICCV 2023).

MODEL + CLIP + concept / retain prompts -> a clone of the CLIP with the erased encoder (the inputs are
untouched), the encoder file(s) in models/text_encoders (Swap Text Encoder and the webui load them), and
a plot of the training loss and the strength of the adversarial prompt it trained against.
"""
from __future__ import annotations

from typing import Any

from ...unlearnkit.erase.advunlearn import ATTACKS
from .comfy_text import TOWER_CHOICES
from .erase_job import EraseRequest
from .erase_run import erase
from .swap_nodes import CATEGORY

RETAIN_DEFAULT = ("a handwritten digit 3\na handwritten digit 5 in slanted style\n"
                  "a handwritten digit 8 in outlined style")


class EraseConceptNode:
    """MODEL + CLIP -> an erased CLIP clone, the saved encoder file(s) and a training plot."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        text = {"multiline": True}
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the encoder is erased for (trained with, "
                                           "never changed)."}),
            "clip": ("CLIP", {"tooltip": "The CLIP loaded with that model; it is not changed."}),
            "concept": ("STRING", {**text, "default": "a handwritten digit in bold style",
                                   "tooltip": "Prompt(s) naming what to erase, one per line."}),
            "retain": ("STRING", {**text, "default": RETAIN_DEFAULT,
                                  "tooltip": "Prompts whose images must not change, one per line."}),
            "encoder_name": ("STRING", {"default": "erased_text_encoder",
                                        "tooltip": "File name in models/text_encoders (never overwritten; "
                                                   "SDXL gets _clip_l / _clip_g files)."}),
            "iterations": ("INT", {"default": 160, "min": 1, "max": 100000,
                                   "tooltip": "Training steps (the first ones warm up without the attack)."}),
            "attack": (list(ATTACKS), {"default": "pgd", "tooltip": "pgd: AdvUnlearn; fast_at: one signed "
                                       "step per iteration (faster); none: ESD (no attack)."}),
            "layers": ("STRING", {"default": "all", "tooltip": "Trained layers: all, last:N, indices, "
                                  "final_layer_norm, embeddings (comma-separated)."}),
            "towers": (list(TOWER_CHOICES), {"default": "all", "tooltip": "SDXL: erase both text encoders "
                                             "or one (SD1.x/SD2.x have one)."}),
            "learning_rate": ("FLOAT", {"default": 1e-3, "min": 1e-7, "max": 1.0, "step": 1e-5,
                                        "tooltip": "Adam's learning rate for the trained layers."}),
            "resolution": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 8,
                                   "tooltip": "Image side the model is sampled at while training "
                                              "(tiny world: 64)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                             "tooltip": "Seed of every draw (noise, timesteps, attacks)."}),
        }}

    RETURN_TYPES = ("CLIP", "IMAGE", "STRING")
    RETURN_NAMES = ("clip", "plot", "encoder_paths")
    OUTPUT_TOOLTIPS = ("A clone of the CLIP with the erased encoder (the input is unchanged).",
                       "Training loss and attack strength against the iteration.",
                       "The encoder file(s) written (Swap Text Encoder and the webui panel read them).")
    FUNCTION = "erase"
    OUTPUT_NODE = True  # it writes the encoder file: a graph of this node alone runs
    CATEGORY = CATEGORY
    DESCRIPTION = ("Erase a concept from the text encoder (AdvUnlearn): trains with the loaded MODEL, "
                   "saves the encoder to models/text_encoders, resumes an interrupted run, returns an "
                   "erased clone.")

    def erase(self, model: Any, clip: Any, concept: str, retain: str, encoder_name: str, iterations: int,
              attack: str, layers: str, towers: str, learning_rate: float, resolution: int,
              seed: int) -> tuple[Any, Any, str]:
        request = EraseRequest(concept, retain, encoder_name, iterations, attack, layers, towers,
                               learning_rate, resolution, seed)
        return erase(model, clip, request)
