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

from ...unlearnkit.compose.gate_model import GateNet, load_gate
from ...unlearnkit.compose.gate_training import GateTrainConfig, gate_accuracy, train_gate

logger = logging.getLogger(__name__)

SHARD_GATE = "SHARD_GATE"
SHARDS = "SHARDS"
CATEGORY = "UnlearnKit/Compose"
GATE_FOLDER = "shard_gates"
GATE_EXTENSIONS = {".safetensors"}
MAX_IMAGE_INPUTS = 8
ENCODE_BATCH = 64


def register_gate_folder() -> None:
    """Register models/shard_gates and output/shard_gates under the 'shard_gates' folder name (idempotent)."""
    import folder_paths

    wanted = [
        os.path.join(folder_paths.models_dir, GATE_FOLDER),
        os.path.join(folder_paths.get_output_directory(), GATE_FOLDER),
    ]
    paths, extensions = folder_paths.folder_names_and_paths.get(GATE_FOLDER, ([], set()))
    paths = list(paths) + [p for p in wanted if p not in paths]
    folder_paths.folder_names_and_paths[GATE_FOLDER] = (paths, set(extensions) | GATE_EXTENSIONS)


def gate_files() -> list[str]:
    """Gate files ComfyUI lists under 'shard_gates' (none outside ComfyUI, e.g. for registry scanners)."""
    try:
        import folder_paths
    except ImportError:
        return []
    register_gate_folder()
    return folder_paths.get_filename_list(GATE_FOLDER)


def output_gate_dir() -> str:
    import folder_paths

    return os.path.join(folder_paths.get_output_directory(), GATE_FOLDER)


def gate_summary(net: GateNet, source: str) -> str:
    c = net.config
    prompts = f", reads prompts ({c.context_dim}-wide)" if c.context_dim else ""
    return (f"shard gate {os.path.basename(source)}: shards {list(c.names)}, "
            f"latents {tuple(c.latent_shape)}, family {c.family}{prompts}")


def encode_images(vae: Any, model: Any, images: torch.Tensor) -> torch.Tensor:
    """IMAGE (B, H, W, C) in [0, 1] -> the latents the shards' UNet sees: process_latent_in(vae.encode(x))."""
    chunks = [
        vae.encode(images[i : i + ENCODE_BATCH, :, :, :3]) for i in range(0, images.shape[0], ENCODE_BATCH)
    ]
    latent = torch.cat(chunks).float().cpu()  # (B, C, h, w)
    return model.model.process_latent_in(latent).float()


class Unprompted:
    """A gate read without a prompt (a prompt-reading gate gets the empty prompt): for accuracy figures."""

    def __init__(self, net: GateNet) -> None:
        self.net, self.config = net, net.config

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.config.context_dim == 0:
            return self.net(x, sigma)
        return self.net(x, sigma, self.net.null_context.expand(x.shape[0], -1))


def pooled_prompt(conditioning: Any) -> torch.Tensor:
    """A CONDITIONING's text-encoder states averaged over tokens: (D,), what a prompt-reading gate reads."""
    return conditioning[0][0].float().mean(dim=1)[0].cpu()


def shard_contexts(names: list[str], latents: dict[str, torch.Tensor], inputs: dict[str, Any],
                   empty_prompt: Any) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
    """({shard: (B, D) pooled prompt per latent}, empty prompt (D,)) from prompt_k inputs; (None, None) if
    none given."""
    prompts = {
        int(k.split("_")[1]): v for k, v in inputs.items() if k.startswith("prompt_") and v is not None
    }
    if not prompts and empty_prompt is None:
        return None, None
    missing = [k for k in range(1, len(names) + 1) if k not in prompts]
    if missing:
        raise ValueError(
            f"prompt_{missing[0]}: a prompt-reading gate needs the prompt of every shard's images "
            f"(shard {names[missing[0] - 1]!r} has none); connect it or disconnect every prompt_k"
        )
    extra = sorted(k for k in prompts if k > len(names))
    if extra:
        raise ValueError(
            f"prompt_{extra[0]}: connected, but the shard set has only {len(names)} shards {names}"
        )
    if empty_prompt is None:
        raise ValueError(
            "empty_prompt: a prompt-reading gate needs the empty prompt encoded (CLIP Text Encode with no "
            "text)"
        )
    contexts = {
        n: pooled_prompt(prompts[k + 1]).expand(latents[n].shape[0], -1).clone() for k, n in enumerate(names)
    }
    return contexts, pooled_prompt(empty_prompt)


def comfy_progress(total: int):
    """A progress callback(step, total) driving a ComfyUI progress bar; honours the Cancel button."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)

    def update(step: int, steps: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(step, steps)

    return update


class TrainShardGateNode:
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
                "filename": (
                    "STRING",
                    {"default": "shard_gate", "tooltip": "Gate file name in output/shard_gates/."},
                ),
                "steps": ("INT", {"default": 1500, "min": 1, "max": 200000, "tooltip": "Training steps."}),
                "batch_size": ("INT", {"default": 64, "min": 2, "max": 4096}),
                "learning_rate": ("FLOAT", {"default": 2e-3, "min": 1e-6, "max": 1.0, "step": 1e-4}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1}),
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
    FUNCTION = "train"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Train a shard gate (a small noisy-latent classifier, CDM Prop. 3.1) on each shard's images; saved "
        "to "
        "output/shard_gates/ and resumable if interrupted."
    )

    def train(
        self,
        shards: Any,
        vae: Any,
        filename: str,
        steps: int,
        batch_size: int,
        learning_rate: float,
        seed: int,
        if_exists: str,
        init_gate: GateNet | None = None,
        empty_prompt: Any = None,
        **inputs: Any,
    ) -> tuple[GateNet, str]:
        register_gate_folder()
        names = list(shards.names)
        given = {
            int(k.split("_")[1]): v for k, v in inputs.items() if k.startswith("images_") and v is not None
        }
        extra = sorted(k for k in given if k > len(names))
        if extra:
            raise ValueError(
                f"images_{extra[0]}: connected, but the shard set has only {len(names)} shards {names}"
            )
        missing = [k for k in range(1, len(names) + 1) if k not in given]
        if missing:
            k = missing[0]
            raise ValueError(
                f"images_{k}: no training images for shard {names[k - 1]!r} (shard {k} of {names}); connect "
                "them"
            )
        path = self._path(filename)
        model = shards.shards[0].model
        latents = {name: encode_images(vae, model, given[k + 1]) for k, name in enumerate(names)}
        shape = tuple(next(iter(latents.values())).shape[1:])
        contexts, null_context = shard_contexts(names, latents, inputs, empty_prompt)
        context_dim = 0 if null_context is None else null_context.shape[0]
        if os.path.exists(path) and if_exists == "reuse":
            net = self._load(path)
            if list(net.config.names) == names and tuple(net.config.latent_shape) == shape and \
                    net.config.context_dim == context_dim:
                logger.info("Train Shard Gate: reusing %s", path)
                return net, "reused " + gate_summary(net, path)
            raise ValueError(
                f"filename: {os.path.basename(path)!r} exists but was trained for shards "
                f"{list(net.config.names)} "
                f"on latents {tuple(net.config.latent_shape)}, prompt width {net.config.context_dim} (now "
                f"{names}, {shape}, {context_dim}); set if_exists to 'retrain' or choose another filename"
            )
        cfg = GateTrainConfig(steps=steps, batch_size=batch_size, lr=learning_rate, seed=seed)
        family = type(getattr(model.model, "model_config", model.model)).__name__
        with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes in inference mode
            latents = {
                k: v.clone() for k, v in latents.items()
            }  # inference tensors cannot be saved for backward
            if contexts is not None:
                contexts, null_context = {k: v.clone() for k, v in contexts.items()}, null_context.clone()
            net = train_gate(
                latents,
                path,
                cfg,
                family=family,
                checkpoint_path=path + ".partial.pt",
                overwrite=True,
                progress=comfy_progress(steps),
                init=init_gate,
                contexts=contexts,
                null_context=null_context,
            )
        accuracy = {s: gate_accuracy(Unprompted(net), latents, s) for s in (0.1, 1.0, 5.0)}
        info = (
            gate_summary(net, path)
            + "; training accuracy (no prompt) "
            + ", ".join(f"σ={s}: {a:.0%}" for s, a in accuracy.items())
        )
        logger.info("Train Shard Gate: %s", info)
        return net, info

    @staticmethod
    def _path(filename: str) -> str:
        name = os.path.basename(filename.strip())
        if not name or name in (".", ".."):
            raise ValueError(f"filename: expected a file name, got {filename!r}")
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        os.makedirs(output_gate_dir(), exist_ok=True)
        return os.path.join(output_gate_dir(), name)

    @staticmethod
    def _load(path: str) -> GateNet:
        try:
            return load_gate(path)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ValueError(
                f"filename: existing file {os.path.basename(path)!r} is not a usable shard gate ({exc}); "
                "set if_exists to 'retrain' or choose another filename"
            ) from exc


class LoadShardGateNode:
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
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a shard gate file for Compose Shards' 'classifier' gate."

    @classmethod
    def IS_CHANGED(cls, gate_name: str) -> str:
        path = cls._full_path(gate_name, check=False)
        return f"{path}:{os.path.getmtime(path)}" if path and os.path.exists(path) else gate_name

    @staticmethod
    def _full_path(gate_name: str, check: bool = True) -> str | None:
        import folder_paths

        register_gate_folder()
        path = folder_paths.get_full_path(GATE_FOLDER, gate_name)
        if check and (path is None or not os.path.isfile(path)):
            raise ValueError(
                f"gate_name: file {gate_name!r} not found in {folder_paths.get_folder_paths(GATE_FOLDER)}"
            )
        return path

    def load(self, gate_name: str) -> tuple[GateNet, str]:
        path = self._full_path(gate_name)
        try:
            net = load_gate(path)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ValueError(f"gate_name: {gate_name!r} cannot be used: {exc}") from exc
        return net, gate_summary(net, path)
