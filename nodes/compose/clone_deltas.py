"""Shards that are clones of one module (LoRAs on one checkpoint): their weight patches at forward time.

Clones share weights (ARCHITECTURE.md, host adapters): ComfyUI keeps one set of patched weights per module.
Per module, one patcher is loaded as usual: for the composed model's own module the composed base (with no
weight patches when its shards' patches differ, comfy_models.composed_base), for any other module its first
shard (the *carrier*). Every shard whose patches differ from that holder's adds ΔW = W_shard − W_holder at
forward time through hooks on the patched layers while it is evaluated (unlearnkit/compose/forward_deltas.py)
— never by re-patching the module's weights. Patch entries the two share cancel; plain LoRA entries stay
low-rank (two thin matmuls per layer, no dense ΔW); any other patch type ComfyUI knows (diff, LoCon mid,
LoHa, LoKr, DoRA, ...) becomes a dense ΔW computed once per composition from the unpatched weights W0 with
ComfyUI's own calculate_weight.

ComfyUI is imported only inside functions.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ...unlearnkit.compose.forward_deltas import (
    SUPPORTED_LAYERS,
    LayerDelta,
    LowRank,
    fits_low_rank,
    hooks_installed,
)

logger = logging.getLogger(__name__)

# The patcher whose weights are in effect for a module while a shard is being evaluated
# (id(module) -> stack of patchers): nested compositions of clones telescope their deltas.
_EFFECTIVE: dict[int, list[Any]] = {}


def same_patch_value(a: Any, b: Any) -> bool:
    """Equal patch entries: identical objects, or equal tensors / tuples / plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (
            a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_patch_value(x, y) for x, y in zip(a, b))
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # objects without a usable == (weight adapters): only identity counts
        return False


def same_weight_patches(a: Any, b: Any) -> bool:
    """True if two clones of one module patch its weights identically (ComfyUI's patches dict)."""
    if not a.patches and not b.patches:
        return True
    if a.patches_uuid == b.patches_uuid and len(a.patches) == len(b.patches):
        return True
    return a.patches.keys() == b.patches.keys() and all(
        same_patch_value(a.patches[k], b.patches[k]) for k in a.patches
    )


def differing_keys(a: Any, b: Any) -> list[str]:
    """Weight keys whose patch lists differ between clones a and b."""
    keys = sorted(set(a.patches) | set(b.patches))
    return [k for k in keys if not same_patch_value(a.patches.get(k, []), b.patches.get(k, []))]


def unshared(mine: Sequence, theirs: Sequence) -> list:
    """Entries of ``mine`` not matched one-to-one by an equal entry of ``theirs`` (shared LoRAs cancel)."""
    left, rest = list(theirs), []
    for entry in mine:
        k = next((j for j, other in enumerate(left) if same_patch_value(entry, other)), None)
        if k is None:
            rest.append(entry)
        else:
            left.pop(k)
    return rest


def lora_term(entry: Sequence) -> LowRank | None:
    """The low-rank ΔW of a plain LoRA patch entry (2024-03 tuple or 0.3.x LoRAAdapter), else None."""
    strength, value, strength_model = entry[0], entry[1], entry[2]
    offset, function = (entry[3] if len(entry) > 3 else None), (entry[4] if len(entry) > 4 else None)
    if strength_model != 1.0 or offset is not None or function is not None:
        return None
    if getattr(value, "name", None) == "lora" and hasattr(value, "weights"):
        weights = value.weights  # (up, down, alpha, mid, dora_scale, reshape)
    elif isinstance(value, tuple) and len(value) == 2 and value[0] == "lora":
        weights = value[1]  # (up, down, alpha, mid[, dora_scale])
    else:
        return None
    if len(weights) < 3 or any(w is not None for w in weights[3:]):  # mid (LoCon), DoRA, reshape: dense
        return None
    up, down, alpha = weights[0], weights[1], weights[2]
    scale = float(strength) * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
    return LowRank(up, down, scale)


def _layer_and_param(model: torch.nn.Module, key: str) -> tuple[torch.nn.Module | None, str]:
    path, _, param = key.rpartition(".")
    try:
        return model.get_submodule(path), param
    except AttributeError:
        return None, param


def check_supported(names: tuple[str, str], carrier: Any, shard: Any) -> None:
    """Raise unless every differing patch sits on a layer whose Δ can be added at forward time."""
    for key in differing_keys(carrier, shard):
        layer, param = _layer_and_param(carrier.model, key)
        if not isinstance(layer, SUPPORTED_LAYERS) or param not in ("weight", "bias") or \
                getattr(layer, "padding_mode", "zeros") != "zeros":
            kind = type(layer).__name__ if layer is not None else "no layer"
            raise ValueError(
                f"shards {names[0]!r} and {names[1]!r} are clones of one model (e.g. two LoRAs on one "
                "checkpoint) and "
                f"their patches differ on {key!r} ({kind}), which UnlearnKit cannot apply at forward time; "
                "merge that LoRA into its own checkpoint and use it as the shard"
            )
    a, b = getattr(carrier, "object_patches", {}), getattr(shard, "object_patches", {})
    if a.keys() != b.keys() or any(a[k] is not b[k] for k in a):
        raise ValueError(
            f"shards {names[0]!r} and {names[1]!r} are clones of one model with different object patches "
            f"({sorted(set(a) | set(b))}, e.g. another model sampling); ComfyUI applies one set at a time, "
            "so they "
            "cannot be mixed; use separately loaded checkpoints"
        )


def _original_weight(model: torch.nn.Module, key: str, backups: Sequence[dict]) -> torch.Tensor:
    """W0: the weight before any patch (ComfyUI keeps it in the loaded clone's backup while patched)."""
    for backup in backups:
        saved = backup.get(key)
        if saved is not None:
            return getattr(saved, "weight", saved)  # 0.3.x stores (weight, inplace_update)
    import comfy.utils

    return comfy.utils.get_attr(model, key)


def _patched(patcher: Any, patches: list, key: str, w0: torch.Tensor, device: torch.device) -> torch.Tensor:
    """W0 with ``patches`` for ``key`` in float32, through ComfyUI's calculate_weight."""
    w = w0.to(device=device, dtype=torch.float32, copy=True)
    if not patches:
        return w
    import comfy.lora

    calculate = getattr(comfy.lora, "calculate_weight", None)  # 0.3.x; 2024-03 has it on the patcher
    return calculate(patches, w, key) if calculate is not None else patcher.calculate_weight(patches, w, key)


def loaded_backups(model: torch.nn.Module) -> list[dict]:
    """Backups of the clones of ``model`` ComfyUI holds loaded (originals of patched weights)."""
    import comfy.model_management as mm

    out = []
    for loaded in mm.current_loaded_models:
        patcher = getattr(loaded, "model", None)
        if getattr(patcher, "model", None) is model and getattr(patcher, "backup", None):
            out.append(patcher.backup)
    return out


def weight_deltas(carrier: Any, shard: Any, device: torch.device) -> dict[str, LayerDelta]:
    """{layer path: LayerDelta} with Δ = W_shard − W_carrier on every key whose patches differ."""
    model = carrier.model
    backups = loaded_backups(model) + [carrier.backup, shard.backup]
    out: dict[str, LayerDelta] = {}
    for key in differing_keys(carrier, shard):
        layer, param = _layer_and_param(model, key)
        current = _original_weight(model, key, backups)
        dtype = current.dtype if current.is_floating_point() else torch.float32
        delta = out.setdefault(key.rpartition(".")[0], LayerDelta())
        mine = unshared(shard.patches.get(key, []), carrier.patches.get(key, []))
        theirs = unshared(carrier.patches.get(key, []), shard.patches.get(key, []))
        terms = [lora_term(e) for e in mine] + [lora_term(e) for e in theirs]
        if param == "weight" and terms and all(t is not None and fits_low_rank(layer, t) for t in terms):
            signed = terms[:len(mine)] + [LowRank(t.up, t.down, -t.scale) for t in terms[len(mine):]]
            delta.terms.extend(t.to(device, dtype) for t in signed)
            continue
        w0 = current
        dense = _patched(shard, shard.patches.get(key, []), key, w0, device) - \
            _patched(carrier, carrier.patches.get(key, []), key, w0, device)
        if param == "weight":
            delta.dw = dense.to(dtype)
        else:
            delta.db = dense.to(dtype)
    return {k: d for k, d in out.items() if d.dw is not None or d.db is not None or d.terms}


@contextlib.contextmanager
def deltas_applied(model: torch.nn.Module, deltas: dict[str, LayerDelta], effective: Any) -> Iterator[None]:
    """``deltas`` added to the module's layers inside the block, ``effective``'s weights in effect."""
    stack = _EFFECTIVE.setdefault(id(model), [])
    stack.append(effective)
    try:
        with hooks_installed(model, deltas):
            yield
    finally:
        stack.pop()
        if not stack:
            _EFFECTIVE.pop(id(model), None)


def effective_patcher(model: torch.nn.Module, loaded: Any) -> Any:
    """Whose weights a module computes with right now: an enclosing shard's, else the loaded clone's."""
    stack = _EFFECTIVE.get(id(model))
    return stack[-1] if stack else loaded


class CloneDeltas:
    """Per shard: the patcher whose weights its module holds (the composed ``base`` for the base's module,
    else the first shard of that module, its *carrier*) and its lazily computed Δ from it."""

    def __init__(self, names: Sequence[str], patchers: Sequence[Any], base: Any = None) -> None:
        self.patchers = tuple(patchers)
        self.base = base
        self.carrier: list[int] = []  # index of the shard whose weights the module holds; -1: the base
        for i, p in enumerate(patchers):
            first = next(j for j in range(i + 1) if patchers[j].model is p.model)
            self.carrier.append(-1 if base is not None and p.model is base.model else first)
            ref = self.holder(i)
            if ref is not p and not same_weight_patches(ref, p):
                check_supported((names[first], names[i]), ref, p)
        self._cache: dict[
            tuple[int, Any], dict[str, LayerDelta]
        ] = {}  # (shard, reference's patches_uuid) -> deltas

    def holder(self, i: int) -> Any:
        """The patcher ComfyUI loads for shard i's module: the composed base or the module's carrier."""
        return self.base if self.carrier[i] == -1 else self.patchers[self.carrier[i]]

    def holders(self) -> list[Any]:
        """Each distinct module's holder once."""
        out: list[Any] = []
        for i in range(len(self.patchers)):
            if all(h is not self.holder(i) for h in out):
                out.append(self.holder(i))
        return out

    @property
    def has_clones(self) -> bool:
        return any(self.holder(i) is not p for i, p in enumerate(self.patchers))

    def reference(self, i: int) -> Any:
        """The patcher whose weights shard i's module holds when shard i runs: an enclosing shard's, else its
        holder's."""
        return effective_patcher(self.patchers[i].model, self.holder(i))

    @contextlib.contextmanager
    def applied(self, i: int, device: torch.device) -> Iterator[None]:
        """Shard i's weights in effect on its (shared) module for the duration of the block."""
        shard = self.patchers[i]
        ref = self.reference(i)
        if ref is shard or same_weight_patches(ref, shard):
            yield
            return
        key = (i, ref.patches_uuid)
        deltas = self._cache.get(key)
        if deltas is None:
            deltas = weight_deltas(ref, shard, device)
            self._cache[key] = deltas
            logger.info(
                "Compose: a clone shard adds %d layer deltas (%d low-rank) to its shared model",
                len(deltas),
                sum(bool(d.terms) for d in deltas.values()),
            )
        elif any(d.device not in (None, device) for d in deltas.values()):
            deltas = self._cache[key] = {p: d.to(device) for p, d in deltas.items()}
        with deltas_applied(shard.model, deltas, shard):
            yield

    def to(self, device: Any) -> None:
        """Follow the model to/from its load device (ComfyUI also calls this with dtypes: ignored)."""
        if isinstance(device, (torch.device, str)):
            self._cache = {
                k: {p: d.to(torch.device(device)) for p, d in v.items()} for k, v in self._cache.items()
            }
