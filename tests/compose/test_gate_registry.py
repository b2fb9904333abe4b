"""unlearnkit/compose/gate_registry.py: one spelling of every gate, one factory, the Gate protocol."""
import pytest
import torch

from unlearnkit.compose.density import DensityGate
from unlearnkit.compose.gate_model import ClassifierGate, GateConfig, GateNet
from unlearnkit.compose.gate_registry import GATES, GateSpec, build_gate, canonical_gate
from unlearnkit.compose.gates import Gate, StaticGate


def test_one_spelling_and_earlier_spellings_are_read():
    assert GATES == ("static", "classifier", "density", "density-ode")
    assert canonical_gate("density (ODE sampler)") == "density-ode"  # saved by earlier versions
    with pytest.raises(ValueError, match="gate_kind: expected one of .*'static'.* got 'magic'"):
        canonical_gate("magic", "gate_kind")


def test_build_gate_kinds_and_errors_name_the_input():
    net = GateNet(GateConfig(names=("a", "b"), latent_shape=(4, 8, 8)))
    assert isinstance(build_gate("static", ["a"], [1]), StaticGate)
    assert isinstance(build_gate("classifier", ["b", "a"], [1, 1], net), ClassifierGate)
    assert not build_gate("density", ["a"], [1]).ode
    assert build_gate("density (ODE sampler)", ["a"], [1]).ode
    with pytest.raises(ValueError, match="shard_gate: the 'classifier' gate needs a trained shard gate"):
        GateSpec("classifier", net_input="shard_gate").build(["a"], [1])


@pytest.mark.parametrize("kind", GATES)
def test_every_gate_implements_the_protocol_with_its_hooks(kind):
    net = GateNet(GateConfig(names=("a", "b"), latent_shape=(4, 8, 8)))
    gate = build_gate(kind, ["a", "b"], [1, 3], net)
    assert isinstance(gate, Gate)
    assert gate.needs_every_score == kind.startswith("density") and gate.reads_prompt is False
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([2.0, 2.0])
    w = gate(x, sigma)
    assert w.shape == (2, 2) and torch.allclose(w.sum(1), torch.ones(2))
    assert (gate.probe(x) is not None) == (kind == "density-ode")


def test_density_gate_keeps_its_state_per_path():
    gate = DensityGate(["a", "b"], [1, 1])
    x = torch.randn(1, 4, 8, 8)
    gate(x, torch.tensor([5.0]))
    gate.observe(x, torch.tensor([5.0]), torch.stack([x * 0, x * 0 + 1]), torch.ones(1, 2, dtype=torch.bool))
    w = gate(x * 0.5, torch.tensor([3.0]))
    assert not torch.allclose(w, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(gate(x, torch.tensor([9.0])), torch.tensor([[0.5, 0.5]]))  # σ rose: a new path
