"""Where a generation's shard mixture goes in each webui (the mixing maths is ``mixing.py``'s).

- AUTOMATIC1111 runs the UNet module itself: its ``forward`` is replaced by a :class:`~.mixing.VPMixture`
  for the duration of sampling (:func:`install_forward` returns the restore). Shards are copies of the loaded
  UNet holding each checkpoint's weights; the loaded checkpoint, when it is a shard, is the webui's own UNet.
- Forge: a clone of ``forge_objects.unet`` whose ``model_function_wrapper`` is a :class:`~.mixing.VEMixture`;
  shards are Forge's own patchers, loaded and offloaded with the model by Forge's memory management.

Device policy for A1111's shard copies (:func:`shard_storage`): by default each copy lives where the loaded
UNet lives (one full UNet per shard on the GPU: fastest). When the webui runs with ``--medvram`` /
``--lowvram`` (``sd_model.lowvram``), copies are kept on the CPU and each is moved to the device only for its
own evaluation (:class:`OffloadedShard`), so at most one shard copy is on the device at a time, and a shard a
step prunes is not moved at all. (Under --lowvram that one copy is whole, more than the webui's own
one-block-at-a-time budget.)
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compose.mixture import check_same_family
from .mixing import VEMixture, VPMixture
from .model_files import FileCache, load_unet_like

logger = logging.getLogger(__name__)
CPU = torch.device("cpu")


def is_loaded(path: Path, sd_model: Any) -> bool:
    """Whether ``path`` is the checkpoint the webui has loaded (its UNet is then used as is)."""
    info = getattr(sd_model, "sd_checkpoint_info", None)
    return info is not None and Path(info.filename).resolve() == path.resolve()


def install_forward(module: Any, forward: Callable) -> Callable[[], None]:
    """Replace ``module.forward`` by ``forward``; returns the function that puts the previous one back."""
    had, old = "forward" in module.__dict__, module.__dict__.get("forward")
    module.forward = forward

    def restore() -> None:
        if module.__dict__.get("forward") is not forward:
            logger.warning("UnlearnKit: another extension replaced the UNet forward during sampling; "
                           "restoring ours' predecessor")
        if had:
            module.forward = old
        else:
            module.__dict__.pop("forward", None)

    return restore


def shard_storage(sd_model: Any) -> torch.device | None:
    """Where A1111's shard copies wait between evaluations: the CPU under --medvram / --lowvram, else None
    (stay where the loaded UNet is)."""
    return CPU if getattr(sd_model, "lowvram", False) else None


def move_module(module: nn.Module, device: torch.device) -> None:
    module.to(device)


class OffloadedShard:
    """A shard UNet kept on ``storage``; called with an input on another device, it is moved there for that
    call and back afterwards (also when the call fails)."""

    def __init__(self, module: nn.Module, storage: torch.device = CPU,
                 move: Callable[[nn.Module, torch.device], None] = move_module) -> None:
        self.module, self.storage, self.move = module, torch.device(storage), move

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if x.device == self.storage:
            return self.module(x, *args, **kwargs)
        self.move(self.module, x.device)
        try:
            return self.module(x, *args, **kwargs)
        finally:
            self.move(self.module, self.storage)


def a1111_shard(unet: nn.Module, path: Path, storage: torch.device | None) -> Callable:
    """The callable of one shard: a copy of ``unet`` with the file's weights, offloaded when ``storage``."""
    copy = load_unet_like(unet, path, device=storage)
    if storage is None:
        return copy
    logger.info("UnlearnKit: shard %s kept on the %s between its evaluations (the webui saves VRAM)",
                path.name, storage)
    return OffloadedShard(copy, storage)


def a1111_mixture(gen: Any, sd_model: Any, shards: FileCache) -> tuple[Any, VPMixture]:
    """(UNet module, its mixed forward) for a generation's shards (``gen.paths``, ``gen.runs``)."""
    unet = sd_model.model.diffusion_model
    own = unet.__dict__.get("forward") or type(unet).forward.__get__(unet)
    storage = shard_storage(sd_model)
    forwards = [own if is_loaded(path, sd_model) else
                shards.get(path, lambda q: a1111_shard(unet, q, storage), ("a1111", storage))
                for path in gen.paths]
    prediction = "v_prediction" if getattr(sd_model, "parameterization", "eps") == "v" else "epsilon"
    channels = int(getattr(unet, "out_channels", 4))
    return unet, VPMixture(gen.runs, forwards, sd_model.alphas_cumprod, prediction, channels)


def forge_signature(patcher: Any) -> dict:
    """What must agree between Forge shards: UNet class and config, prediction type."""
    model = patcher.model
    config = dict(getattr(model.diffusion_model, "config", {}) or {})
    return {
        "unet": type(model.diffusion_model).__name__,
        "prediction": getattr(model.predictor, "prediction_type", None),
        **{k: repr(v) for k, v in sorted(config.items()) if k not in ("dtype", "device")},
    }


def forge_mixture(gen: Any, unet: Any, sd_model: Any, load_unet: Callable[[Path], Any],
                  shards: FileCache) -> Any:
    """A clone of Forge's UNet patcher whose model_function_wrapper mixes the shards; shards load with it."""
    patchers = [None if is_loaded(path, sd_model) else shards.get(path, load_unet, "forge")
                for path in gen.paths]
    check_same_family([(n, forge_signature(p or unet)) for n, p in zip(gen.names, patchers)])
    clone = unet.clone()
    inner = unet.model_options.get("model_function_wrapper")
    models = [None if p is None else p.model.apply_model for p in patchers]
    clone.set_model_unet_function_wrapper(VEMixture(gen.runs, models, inner=inner))
    for p in patchers:
        if p is not None:
            clone.add_extra_model_patcher_during_sampling(p)
    return clone
