"""Forge's composed step is the core's (unlearnkit/compose/reference.py), through REAL Forge code.

Shards are tiny SD-architecture UNets behind Forge's own ``KModel`` and ``UnetPatcher``; one CFG step of
Forge's ``sampling_function_inner`` with the panel's ``VEMixture`` on a clone of the first shard must give
what ``reference_x0`` computes from the same UNets at the timestep Forge hands its UNet (the nearest
trained step), for every evaluate mode. Forge's backend comes from ``$UNLEARNKIT_FORGE_DIR`` (by default
``../shared/hosts/forge`` beside the repository); without it the test skips, saying so.
"""
from pathlib import Path

import pytest
import torch
from test_script_forge import FORGE_DIR, real_forge
from tiny_models import tiny_unet
from webui_standin import ACP, LdmUNet

from unlearnkit.compose.composer import ComposerRuns
from unlearnkit.compose.gate_model import ClassifierGate, GateConfig, GateNet
from unlearnkit.compose.reference import reference_x0
from unlearnkit.compose.routing import Evaluation
from unlearnkit.webui.mixing import VEMixture

NAMES = ["a", "b", "c"]
CFG = 3.0


@pytest.fixture(scope="module")
def forge():
    if not (Path(FORGE_DIR) / "backend" / "sampling" / "sampling_function.py").is_file():
        pytest.skip(f"no Forge backend at {FORGE_DIR}: set UNLEARNKIT_FORGE_DIR to a Forge checkout")
    return real_forge()


@pytest.fixture(scope="module")
def gate_net():
    torch.manual_seed(0)
    net = GateNet(GateConfig(names=tuple(NAMES), latent_shape=(4, 8, 8)))
    with torch.no_grad():
        net.head.weight.mul_(30.0)  # spread the logits: some weights fall below ε
    return net


@pytest.mark.parametrize("evaluation", [Evaluation("every-shard", 0.0), Evaluation("per-sample", 0.3),
                                        Evaluation("fast", 0.3, 1.0)], ids=lambda e: e.mode)
def test_forge_composed_x0_is_the_core_reference(forge, gate_net, evaluation):
    unets = [tiny_unet(seed) for seed in (1, 2, 3)]
    patchers = [forge.patcher(forge.kmodel(LdmUNet(u))) for u in unets]
    def gate():
        return ClassifierGate(gate_net, NAMES, [1, 1, 1])

    runs = ComposerRuns(NAMES, gate, evaluation=evaluation)
    clone = patchers[0].clone()  # the loaded checkpoint is shard a: Forge passes its apply_model in
    shard_models = [None] + [p.model.apply_model for p in patchers[1:]]
    clone.set_model_unet_function_wrapper(VEMixture(runs, shard_models))
    g = torch.Generator().manual_seed(4)
    x, sigma = torch.randn(3, 4, 8, 8, generator=g) * 3, torch.full((3,), 3.0)
    cond, uncond = torch.randn(3, 3, 32, generator=g), torch.randn(3, 3, 32, generator=g)
    with torch.no_grad():
        out = forge.sample(clone.model, x, sigma, uncond, cond, CFG, clone.model_options)
        forwards = [lambda xt, t, c, u=u: u(xt, t, encoder_hidden_states=c).sample for u in unets]
        x0 = reference_x0(forwards, NAMES, gate(), x, sigma, [cond, uncond], ACP, quantize=True,
                          evaluation=evaluation)
    expected = x0[3:] + CFG * (x0[:3] - x0[3:])
    assert torch.allclose(out, expected, rtol=1e-4, atol=1e-4), (out - expected).abs().max()
    assert len(runs.runs) == 1 and len(runs.runs[0].history) == 1
