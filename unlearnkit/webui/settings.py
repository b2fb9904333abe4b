"""The webui panel's settings: one typed object, read from the panel's controls and written to / read
back from the infotext (the PNG "parameters" text the webui pastes back into the panel).

Infotext keys (ASCII words, spaces and digits, as the webui's ``re_param`` expects; only written when
the panel is enabled; slots are numbered from 1 in panel order, empty slots skipped):

    UnlearnKit shard 1: bold.safetensors, UnlearnKit weight 1: 0.5, UnlearnKit shard hash 1: 1a2b3c4d5e,
    UnlearnKit gate: classifier, UnlearnKit gate file: style.safetensors, UnlearnKit evaluate: fast,
    UnlearnKit prune eps: 0.01, UnlearnKit fast sigma: 1, UnlearnKit plot: True,
    UnlearnKit text encoder: vangogh_unlearned, UnlearnKit SLUG patch 1: p.safetensors

``evaluate`` is the core's routing mode (fast / per-sample / every-shard) with ε (``prune eps``) and the
σ above which ``fast`` draws one shard per sample (``fast sigma``). Settings without it (a panel that has
no evaluate control yet, an infotext written before it existed) mean ``every-shard``: the earlier routing,
which skips a shard only when its weight is below ε for every sample.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..compose.gate_registry import GATES, canonical_gate
from ..compose.routing import DEFAULT_EPS, DEFAULT_EVALUATE, DEFAULT_MC_SIGMA, EVALUATE, MAX_EPS, Evaluation

MAX_SHARDS = 4
NONE = "None"  # the dropdowns' "nothing chosen" entry
PREFIX = "UnlearnKit"
MAX_PRUNE_EPS = MAX_EPS
EARLIER_EVALUATE = "every-shard"  # what settings without an evaluate entry ran
EVALUATE_CONTROLS = ["evaluate", "fast sigma"]  # appended after the earlier controls
# More controls for the panel's gate row, as ``controls.ControlSpec`` keyword dicts (name, kind, label, value,
# choices, …); each name is in control_names() too. The script builds them without edits of its own.
EXTRA_CONTROLS: tuple[dict, ...] = (
    {"name": "evaluate", "kind": "dropdown", "label": "Evaluate (fast: one shard per sample above σ)",
     "value": DEFAULT_EVALUATE, "choices": EVALUATE},
    {"name": "fast sigma", "kind": "slider", "label": "Fast above σ", "value": DEFAULT_MC_SIGMA,
     "maximum": 20.0, "step": 0.1},
)
__all__ = ["DEFAULT_EPS", "DEFAULT_EVALUATE", "DEFAULT_MC_SIGMA", "EVALUATE", "GATES", "PanelSettings"]


def control_names(max_shards: int = MAX_SHARDS, evaluate: bool = True) -> list[str]:
    """Names of the panel's controls in the order ``ui()`` returns them (and the webui passes their
    values); ``evaluate=False``: a panel saved before the evaluate controls existed (they come last)."""
    slots = [name for i in range(1, max_shards + 1) for name in (f"shard {i}", f"weight {i}")]
    earlier = ["enabled", *slots, "gate", "gate file", "prune eps", "plot", "text encoder", "slug patches"]
    return earlier + (EVALUATE_CONTROLS if evaluate else [])


def _chosen(value: Any) -> str:
    """A dropdown value as a name; '' for nothing chosen."""
    text = "" if value is None else str(value).strip()
    return "" if text == NONE else text


@dataclass(frozen=True)
class PanelSettings:
    """What the panel asks for: a shard mixture (CDM), an erased text encoder (AdvUnlearn), SLUG patches."""

    enabled: bool = False
    shards: tuple[tuple[str, float], ...] = ()  # (checkpoint name, slider weight), panel order
    gate: str = "static"
    gate_file: str = ""
    prune_eps: float = DEFAULT_EPS
    plot: bool = True
    text_encoder: str = ""
    slug_patches: tuple[str, ...] = ()
    evaluate: str = DEFAULT_EVALUATE  # one of routing.EVALUATE
    fast_sigma: float = DEFAULT_MC_SIGMA

    @property
    def composing(self) -> bool:
        return self.enabled and bool(self.shards)

    @property
    def edits_text_encoder(self) -> bool:
        return self.enabled and bool(self.text_encoder or self.slug_patches)

    @property
    def shard_names(self) -> list[str]:
        return [name for name, _ in self.shards]

    @property
    def weights(self) -> list[float]:
        return [w for _, w in self.shards]

    @property
    def evaluation(self) -> Evaluation:
        """The core's routing for these settings."""
        return Evaluation(self.evaluate, float(self.prune_eps), float(self.fast_sigma))

    def check(self) -> None:
        """Raise ValueError naming the control and its value when the settings cannot run."""
        if self.gate not in GATES:
            raise ValueError(f"gate: expected one of {list(GATES)}, got {self.gate!r}")
        if self.gate == "classifier" and self.composing and not self.gate_file:
            raise ValueError(
                "gate file: the 'classifier' gate needs a gate file (train one with `compose train-gate`)"
            )
        self.evaluation.check(("evaluate", "prune eps", "fast sigma"))
        seen: dict[str, int] = {}
        for slot, (name, weight) in enumerate(self.shards, start=1):
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight {slot}: expected a finite number >= 0, got {weight!r}")
            if name in seen:
                raise ValueError(
                    f"shard {slot}: {name!r} is already chosen in shard {seen[name]}; choose each "
                    "checkpoint once"
                )
            seen[name] = slot
        if self.shards and not any(w > 0 for w in self.weights):
            raise ValueError(
                f"weights: all are zero for shards {self.shard_names}; give at least one shard a weight > 0"
            )
        if len(set(self.slug_patches)) != len(self.slug_patches):
            raise ValueError(f"slug patches: a patch is chosen twice in {list(self.slug_patches)}")


def from_controls(values: Sequence[Any], max_shards: int = MAX_SHARDS) -> PanelSettings:
    """Settings from the controls' values, in ``control_names`` order (what ``process(p, *args)``
    receives)."""
    names = control_names(max_shards, evaluate=True)
    earlier = len(names) - len(EVALUATE_CONTROLS)  # a panel without the evaluate controls
    if len(values) not in (len(names), earlier):
        raise ValueError(
            f"panel values: expected {earlier} or, with the evaluate controls, {len(names)} "
            f"({', '.join(names)}), got {len(values)}"
        )
    v = dict(zip(names, values))
    evaluate = _chosen(v.get("evaluate", EARLIER_EVALUATE)) or EARLIER_EVALUATE
    shards = tuple(
        (_chosen(v[f"shard {i}"]), float(v[f"weight {i}"]))
        for i in range(1, max_shards + 1) if _chosen(v[f"shard {i}"])
    )
    patches = v["slug patches"] or ()
    patches = (patches,) if isinstance(patches, str) else tuple(patches)
    return PanelSettings(
        enabled=bool(v["enabled"]),
        shards=shards,
        gate=canonical_gate(v["gate"] or "static"),
        gate_file=_chosen(v["gate file"]),
        prune_eps=float(v["prune eps"] or 0.0),
        plot=bool(v["plot"]),
        text_encoder=_chosen(v["text encoder"]),
        slug_patches=tuple(_chosen(p) for p in patches if _chosen(p)),
        evaluate=evaluate,
        fast_sigma=float(v.get("fast sigma", DEFAULT_MC_SIGMA) or 0.0),
    )


def to_controls(settings: PanelSettings, max_shards: int = MAX_SHARDS, evaluate: bool = True) -> list[Any]:
    """The controls' values that show ``settings`` (unused shard slots emptied), in ``control_names``
    order (``evaluate``: with the evaluate controls)."""
    if len(settings.shards) > max_shards:
        raise ValueError(
            f"shards: the panel has {max_shards} slots, the settings have {len(settings.shards)}"
        )
    slots: list[Any] = []
    for i in range(max_shards):
        name, weight = settings.shards[i] if i < len(settings.shards) else (NONE, 1.0)
        slots += [name, weight]
    return [
        settings.enabled,
        *slots,
        settings.gate,
        settings.gate_file or NONE,
        settings.prune_eps,
        settings.plot,
        settings.text_encoder or NONE,
        list(settings.slug_patches),
        *([settings.evaluate, settings.fast_sigma] if evaluate else []),
    ]


def _number(value: float) -> str:
    return f"{float(value):g}"


def infotext_params(settings: PanelSettings, shard_hashes: Mapping[str, str] | None = None) -> dict[str, str]:
    """``p.extra_generation_params`` entries for the settings ({} when the panel is off)."""
    if not settings.enabled:
        return {}
    out: dict[str, str] = {}
    for slot, (name, weight) in enumerate(settings.shards, start=1):
        out[f"{PREFIX} shard {slot}"] = name
        out[f"{PREFIX} weight {slot}"] = _number(weight)
        if shard_hashes and shard_hashes.get(name):
            out[f"{PREFIX} shard hash {slot}"] = shard_hashes[name]
    if settings.shards:
        out[f"{PREFIX} gate"] = settings.gate
        if settings.gate == "classifier":
            out[f"{PREFIX} gate file"] = settings.gate_file
        out[f"{PREFIX} evaluate"] = settings.evaluate
        out[f"{PREFIX} prune eps"] = _number(settings.prune_eps)
        if settings.evaluate == "fast":
            out[f"{PREFIX} fast sigma"] = _number(settings.fast_sigma)
        out[f"{PREFIX} plot"] = str(bool(settings.plot))
    if settings.text_encoder:
        out[f"{PREFIX} text encoder"] = settings.text_encoder
    for slot, name in enumerate(settings.slug_patches, start=1):
        out[f"{PREFIX} SLUG patch {slot}"] = name
    if not out:
        out[f"{PREFIX}"] = "on"  # enabled with nothing chosen: still restores the checkbox
    return out


def _numbered(params: Mapping[str, Any], key: str) -> list[tuple[int, str]]:
    """[(n, value)] of entries 'key n', by n."""
    found = []
    for k, v in params.items():
        head, _, n = str(k).rpartition(" ")
        if head == key and n.isdigit():
            found.append((int(n), str(v)))
    return sorted(found)


def from_infotext(params: Mapping[str, Any]) -> PanelSettings | None:
    """Settings from parsed infotext (``parse_generation_parameters``); None when it holds no UnlearnKit
    entry."""
    if not any(str(k) == PREFIX or str(k).startswith(PREFIX + " ") for k in params):
        return None
    shards = tuple((name, _param_number(params, f"weight {n}", 1.0))
                   for n, name in _numbered(params, f"{PREFIX} shard"))
    gate = canonical_gate(params.get(f"{PREFIX} gate", "static"), f"infotext '{PREFIX} gate'")
    earlier = EARLIER_EVALUATE if shards else DEFAULT_EVALUATE  # compose entries without 'evaluate'
    return PanelSettings(
        enabled=True, shards=shards, gate=gate, gate_file=str(params.get(f"{PREFIX} gate file", "")),
        prune_eps=_param_number(params, "prune eps", DEFAULT_EPS),
        plot=str(params.get(f"{PREFIX} plot", "True")) != "False",
        text_encoder=str(params.get(f"{PREFIX} text encoder", "")),
        slug_patches=tuple(name for _, name in _numbered(params, f"{PREFIX} SLUG patch")),
        evaluate=str(params.get(f"{PREFIX} evaluate", earlier)),
        fast_sigma=_param_number(params, "fast sigma", DEFAULT_MC_SIGMA),
    )


def _param_number(params: Mapping[str, Any], key: str, default: float) -> float:
    """The number under infotext key 'UnlearnKit <key>' (``default`` when absent)."""
    value = params.get(f"{PREFIX} {key}", default)
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"infotext '{PREFIX} {key}': expected a number, got {value!r}") from exc


def paste_value(params: Mapping[str, Any], control: str, max_shards: int = MAX_SHARDS) -> Any:
    """The value one control takes when an infotext is pasted; None leaves it as it is.

    Without UnlearnKit entries only the enable box changes (to off); with them every control is set,
    so stale shard slots are emptied.
    """
    settings = from_infotext(params)
    if settings is None:
        return False if control == "enabled" else None
    names = control_names(max_shards, evaluate=True)
    if control not in names:
        raise ValueError(f"control: expected one of {names}, got {control!r}")
    return to_controls(settings, max_shards, evaluate=True)[names.index(control)]
