"""The one list of gate kinds every host offers, and the one place that builds a gate from a choice.

- ``static``: the slider priors λ (CDM's naive averaging).
- ``classifier``: a trained noisy-latent classifier's posterior (CDM Prop. 3.1); needs a gate net.
- ``density``: training-free Itô density estimate along the path (exact for ancestral / SDE samplers).
- ``density-ode``: the same plus a divergence probe (one extra shard call per step) for ODE samplers.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .density import DensityGate
from .gate_model import ClassifierGate, GateNet
from .gates import Gate, StaticGate

logger = logging.getLogger(__name__)

GATES = ("static", "classifier", "density", "density-ode")
LEGACY_GATES = {"density (ODE sampler)": "density-ode"}  # spellings saved by earlier versions


def canonical_gate(kind: str, what: str = "gate") -> str:
    """The registry's spelling of a gate choice (older saved spellings accepted); ValueError naming
    ``what`` otherwise."""
    name = str(kind).strip()
    if name in GATES:
        return name
    if name in LEGACY_GATES:
        logger.info("Compose: gate %r is now spelled %r", name, LEGACY_GATES[name])
        return LEGACY_GATES[name]
    raise ValueError(f"{what}: expected one of {list(GATES)}, got {kind!r}")


def build_gate(
    kind: str,
    names: Sequence[str],
    priors: Sequence[float],
    net: GateNet | None = None,
    net_input: str = "gate file",
) -> Gate:
    """A fresh gate over ``names`` (density gates carry per-run state: build one per sampling run).

    ``net_input`` names the host's input that supplies the classifier net, for the error message.
    """
    kind = canonical_gate(kind)
    if kind == "static":
        return StaticGate(names, priors)
    if kind == "classifier":
        if net is None:
            raise ValueError(f"{net_input}: the 'classifier' gate needs a trained shard gate, got none")
        return ClassifierGate(net, names, priors)
    return DensityGate(names, priors, ode=kind == "density-ode")


@dataclass(frozen=True)
class GateSpec:
    """A host's gate choice: the kind and, for ``classifier``, the trained net."""

    kind: str = "static"
    net: GateNet | None = None
    net_input: str = "gate file"

    def build(self, names: Sequence[str], priors: Sequence[float]) -> Gate:
        return build_gate(self.kind, names, priors, self.net, self.net_input)
