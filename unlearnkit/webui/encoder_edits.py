"""Text-encoder edits inside a host's model tree: swap in an erased encoder's weights (AdvUnlearn) and
apply SLUG patches, in place, then restore the original bytes exactly.

Hosts keep the CLIP text encoder deep inside their own wrappers (A1111:
``cond_stage_model.wrapped.transformer.text_model…`` with ``token_embedding.wrapped``; Forge:
``clip_l.transformer.text_model…``). Parameter names are matched after dropping ``.wrapped`` path
components; when a model has several encoders (SDXL) the one whose dimensions fit is edited.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..textencoders.dims import TextEncoderDims, check_matches, infer_dims
from ..textencoders.layouts import HF_KEY, find_text_encoders
from ..unlearn.patches import Patch, apply_patch, remove_patch

logger = logging.getLogger(__name__)

_WRAPPED = re.compile(r"(^|\.)wrapped(?=\.)")


def strip_wrappers(name: str) -> str:
    """A parameter name without host wrapper components: 'a.wrapped.b.weight' -> 'a.b.weight'."""
    return _WRAPPED.sub("", name).lstrip(".")


def encoder_parameters(
    module: nn.Module, dims: TextEncoderDims, what: str = "text encoder"
) -> dict[str, str]:
    """{canonical HF key: the module's parameter name} of the one CLIP text encoder in ``module`` with
    ``dims``."""
    params = dict(module.named_parameters())
    plain = {strip_wrappers(n): n for n in params}
    found = [layout for layout in find_text_encoders(plain) if layout.family == "hf"]
    if not found:
        raise ValueError(
            f"{what}: the loaded model has no CLIP text encoder in Hugging Face layout "
            f"(SD2's OpenCLIP encoder cannot be swapped in place); first parameters: {list(params)[:3]}"
        )
    fits, problems = [], []
    for layout in found:
        keys = {k[len(layout.prefix):]: n for k, n in plain.items() if k.startswith(layout.prefix)}
        keys = {k: n for k, n in keys.items() if HF_KEY.match(k)}
        try:
            check_matches(dims, infer_dims({k: params[n] for k, n in keys.items()}, what), what)
        except ValueError as exc:
            problems.append(f"{layout.prefix or '(root)'}: {exc}")
            continue
        fits.append(keys)
    if len(fits) != 1:
        detail = "; ".join(problems) if not fits else f"{len(fits)} encoders fit"
        raise ValueError(f"{what}: no single text encoder of the loaded model fits ({detail})")
    return fits[0]


class EncoderEdits:
    """In-place edits of ``module``'s text encoder: ``swap`` (canonical HF state dict) then ``patches``.

    Use as a context manager (or ``apply()`` / ``restore()``): on exit every touched parameter holds
    its original bytes again, patches are removed in reverse order. A failed ``apply`` undoes itself.
    """

    def __init__(self, module: nn.Module, swap: Mapping[str, torch.Tensor] | None = None,
                 patches: Sequence[Patch] = (), what: str = "text encoder") -> None:
        self.module = module
        self.swap = swap
        self.patches = list(patches)
        self.what = what
        self._backup: dict[str, torch.Tensor] = {}
        self._applied: list[Patch] = []

    @property
    def active(self) -> bool:
        return bool(self._backup or self._applied)

    @torch.no_grad()
    def apply(self) -> EncoderEdits:
        if self.active:
            raise RuntimeError(f"{self.what}: edits are already applied")
        try:
            if self.swap is not None:
                self._swap_in()
            for patch in self.patches:
                apply_patch(self.module, patch)
                self._applied.append(patch)
        except BaseException:
            self.restore()
            raise
        return self

    def _swap_in(self) -> None:
        dims = infer_dims(self.swap, self.what)
        names = encoder_parameters(self.module, dims, self.what)
        missing = [k for k in names if k not in self.swap]
        if missing:
            raise ValueError(
                f"{self.what}: lacks {len(missing)} tensor(s) the loaded encoder has, e.g. {missing[:3]}"
            )
        params = dict(self.module.named_parameters())
        for key, name in names.items():
            param = params[name]
            self._backup[name] = param.detach().to("cpu", copy=True)
            param.copy_(self.swap[key].to(device=param.device, dtype=param.dtype))
        logger.info("%s: swapped %d tensors in place", self.what, len(names))

    @torch.no_grad()
    def restore(self) -> None:
        """Undo everything applied (patches in reverse, then the swapped weights)."""
        errors = []
        for patch in reversed(self._applied):
            try:
                remove_patch(self.module, patch)
            except ValueError as exc:  # changed behind our back; keep restoring the rest
                errors.append(str(exc))
        self._applied = []
        params = dict(self.module.named_parameters())
        for name, original in self._backup.items():
            params[name].copy_(original.to(params[name].device))
        self._backup = {}
        if errors:
            raise RuntimeError(f"{self.what}: restored, but: " + "; ".join(errors))

    def __enter__(self) -> EncoderEdits:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()
