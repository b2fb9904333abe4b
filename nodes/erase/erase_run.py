"""The Erase Concept node's run in ComfyUI: load the MODEL, train (or resume, or reuse), save, clone the
CLIP, plot."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ...unlearnkit.erase.advunlearn import TrainingStopped, train_erased_encoder
from ...unlearnkit.erase.components import Components
from ...unlearnkit.erase.distributed import Runtime
from ...unlearnkit.plots import line_panels
from .comfy_text import ComfyTokenizer, sd_text_encoder
from .comfy_unet import ComfyUNet, autograd_safe, make_normal_
from .erase_job import (
    EraseRequest,
    check_model,
    checkpoint_folder,
    existing_run,
    output_paths,
    remove_checkpoints,
    run_key,
    save_towers,
)
from .swap_nodes import encoder_folders, swap_encoder

logger = logging.getLogger(__name__)


def output_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths(encoder_folders()[0])[0])


def plot_image(losses: list[float], attack_norms: list[float]) -> torch.Tensor:
    """IMAGE (1, H, W, 3): the training loss, and the adversarial prompt's strength ‖δ‖, per iteration."""
    import numpy as np

    top = max(max(losses, default=1.0), 1e-8)
    norms = attack_norms or [0.0]
    panels = [[[v / top for v in losses]], [[v / max(max(norms), 1e-8) for v in norms]]]
    img = line_panels(panels, ["erase"], [f"loss / {top:.3g}", f"attack ‖δ‖ / {max(norms):.3g}"],
                      "iteration", "relative", (0.0, 1.0))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def load_model(model: Any) -> torch.device:
    """ComfyUI loads the MODEL (its patches applied) on its device; weights made under inference_mode are
    replaced by normal tensors so gradients can flow through them."""
    import inspect

    import comfy.model_management as mm

    if "force_full_load" in inspect.signature(mm.load_models_gpu).parameters:
        mm.load_models_gpu([model], force_full_load=True)
    else:
        mm.load_models_gpu([model])
    make_normal_(model.model)
    return torch.device(model.load_device)


def train(model: Any, clip: Any, request: EraseRequest) -> dict:
    """Train (or resume, or reuse this run's saved files); returns the run's record and files."""
    import comfy.model_management as mm
    import comfy.utils

    config = request.config()
    encoder, every = sd_text_encoder(clip, request.towers)
    check_model(model, int(encoder.config.hidden_size))
    key = run_key(encoder, model, request, config)
    towers = {i: every[i] for i in encoder.trained}
    paths = output_paths(output_folder(), request.encoder_name, list(towers.values()), len(every))
    done = existing_run(paths, key)
    if done is not None:
        return {**done, "paths": [str(p) for p in paths.values()], "reused": True}
    folder = checkpoint_folder(key)
    device = load_model(model)
    pooled = encoder.projection.weight.shape[0] if encoder.projection is not None else 0
    unet = ComfyUNet(model, request.resolution // 8, device, pooled)
    comps = Components(unet, encoder, ComfyTokenizer(clip), unet.scheduler(), None, "comfyui MODEL")
    bar, cancelled = comfy.utils.ProgressBar(config.iterations), []

    def on_step(done: int) -> None:  # the server's progress hook raises on Cancel (and clears the flag)
        try:
            bar.update_absolute(done, config.iterations)
        except mm.InterruptProcessingException:
            cancelled.append(done)

    resume = folder.is_dir() and any(folder.iterdir())
    with autograd_safe(model.model.diffusion_model):
        try:
            result = train_erased_encoder(
                comps, config, folder, checkpoint_every=max(1, config.iterations // 10), resume=resume,
                runtime=Runtime(device=device), progress=False, on_step=on_step,
                stop=lambda: bool(cancelled) or mm.processing_interrupted())
        except TrainingStopped:  # a checkpoint of the step just done exists: re-queue resumes there
            mm.throw_exception_if_processing_interrupted()
            raise mm.InterruptProcessingException() from None
    record = {"concept": list(config.concept), "attack": config.attack, "iterations": config.iterations,
              "losses": result.losses, "attack_norms": result.attack_norms,
              "resumed_from": result.resumed_from, "base_sha256": result.base_sha256}
    written = save_towers(clip, paths, towers, result.encoder, key, record)
    remove_checkpoints(folder)
    return {**record, "paths": [str(p) for p in written], "reused": False}


def erase(model: Any, clip: Any, request: EraseRequest) -> tuple[Any, torch.Tensor, str]:
    """(the CLIP clone with the erased encoder, the plot IMAGE, the saved file(s), one per line)."""
    request.check()
    with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes under inference_mode
        run = train(model, clip, request)
    out = clip
    for path in run["paths"]:
        out = swap_encoder(out, path)  # exactly what Swap Text Encoder gives for the saved file
    logger.info("Erase Concept: %s %s", "reused" if run["reused"] else "wrote", run["paths"])
    return out, plot_image(run["losses"], run["attack_norms"]), "\n".join(run["paths"])
