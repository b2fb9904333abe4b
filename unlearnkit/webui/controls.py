"""The panel's controls as data: what each control is (kind, label, default, choices), in which row, and the
names under which the webui copies it between tabs. The extension's script builds gradio components from
these specs in one loop, so a control added here (or to ``settings.EXTRA_CONTROLS``) needs no script edit.

"Send to img2img" copies only the fields whose infotext name is a *string* listed in the script's
``paste_field_names`` (modules/infotext_utils.py ``connect_paste_params_buttons``); the panel's infotext
fields are callables (one control's value from the parsed infotext). So each control gets a second field
named ``paste_name(control)`` — a name no infotext holds — listed in ``paste_field_names``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import settings as panel

KINDS = ("checkbox", "dropdown", "multiselect", "slider")
FILE_LISTS = ("checkpoints", "gates", "text_encoders", "slug_patches")  # what the refresh button re-reads


@dataclass(frozen=True)
class ControlSpec:
    """One panel control: ``name`` is its ``settings.control_names()`` entry."""

    name: str
    kind: str
    label: str
    value: Any = None
    choices: tuple[str, ...] = ()  # fixed entries (dropdowns)
    files: str = ""  # a FILE_LISTS entry whose names follow the fixed entries
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"control {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.files and self.files not in FILE_LISTS:
            raise ValueError(f"control {self.name!r}: files must be one of {FILE_LISTS}, got {self.files!r}")


def shard_row(i: int) -> list[ControlSpec]:
    return [ControlSpec(f"shard {i}", "dropdown", f"Shard {i}", panel.NONE, (panel.NONE,), "checkpoints"),
            ControlSpec(f"weight {i}", "slider", f"Weight {i}", 1.0)]


def panel_rows(max_shards: int = panel.MAX_SHARDS) -> list[list[ControlSpec]]:
    """The panel, row by row (the enable box alone first, the refresh button after the last row)."""
    gate = [
        ControlSpec("gate", "dropdown", "Gate", "static", tuple(panel.GATES)),
        ControlSpec("gate file", "dropdown", "Gate file (classifier)", panel.NONE, (panel.NONE,), "gates"),
        ControlSpec("prune eps", "slider", "Prune ε (skip shards below)", panel.DEFAULT_EPS,
                    maximum=panel.MAX_PRUNE_EPS, step=0.005),
        ControlSpec("plot", "checkbox", "Attribution plot in outputs", True),
        *(ControlSpec(**spec) for spec in panel.EXTRA_CONTROLS),
    ]
    encoder = [
        ControlSpec("text encoder", "dropdown", "Text encoder (AdvUnlearn)", panel.NONE, (panel.NONE,),
                    "text_encoders"),
        ControlSpec("slug patches", "multiselect", "SLUG patches", [], files="slug_patches"),
    ]
    rows = [[ControlSpec("enabled", "checkbox", "Enable UnlearnKit", False)]]
    return rows + [shard_row(i) for i in range(1, max_shards + 1)] + [gate, encoder]


def panel_specs(max_shards: int = panel.MAX_SHARDS) -> list[ControlSpec]:
    """Every control's spec in ``settings.control_names()`` order; ValueError naming a control without one."""
    specs = {spec.name: spec for row in panel_rows(max_shards) for spec in row}
    names = panel.control_names(max_shards)
    missing = [n for n in names if n not in specs]
    extra = [n for n in specs if n not in names]
    if missing or extra:
        raise ValueError(f"panel controls: no spec for {missing}, not in settings.control_names(): {extra}")
    return [specs[n] for n in names]


def choices_of(spec: ControlSpec, found: Mapping[str, Sequence[str]]) -> list[str]:
    """A dropdown's entries: its fixed ones, then the listed files."""
    return [*spec.choices, *(found.get(spec.files, ()) if spec.files else ())]


def paste_name(control: str) -> str:
    """The name under which "Send to img2img / txt2img" copies ``control``; never an infotext key (the webui's
    parser reads keys of word characters, spaces, '-' and '/', no dots)."""
    return f"{panel.PREFIX}.panel.{control}"


def paste_names(max_shards: int = panel.MAX_SHARDS) -> list[str]:
    return [paste_name(n) for n in panel.control_names(max_shards)]
