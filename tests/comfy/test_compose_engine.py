"""ComfyUI's composed step is the core's (unlearnkit/compose/reference.py), in 2024-03 and 0.3.75.

One Euler step from σ to 0 returns the CFG-combined x0 itself. The tiny world's style shards (loaded by
Load Tiny World) and a seeded gate file, composed in ComfyUI with each evaluate mode, cond and uncond
batched together or apart (ComfyUI's low-memory batching), must give what reference_x0 computes from the
same shards' diffusers UNets at the timestep ComfyUI hands its UNet (the nearest trained step: the core's
σ <-> t is checked against ComfyUI's own model_sampling). Flow models (ComfyUI's CONST model sampling,
ModelSamplingSD3; 0.3.x only) mix their x0 the same way.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_harness import Graph, Ref
from compose_graphs import STYLE_SHARDS, compose, compose_models, shard_chain, style_shards
from suite import suite_fixtures

from unlearnkit.compose.gate_model import ClassifierGate, GateConfig, GateNet, save_gate
from unlearnkit.compose.reference import reference_x0
from unlearnkit.compose.routing import Evaluation
from unlearnkit.compose.schedules import sigma_to_t, sigmas_of, t_to_sigma
from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.models import build_scheduler

SIGMA, CFG, BATCH, LATENT_SEED = 3.0, 3.0, 4, 5
COND_SEED, UNCOND_SEED, TOKENS, WIDTH = 1, 2, 8, 64
GATE_FILE = "engine_test_gate.safetensors"
MODES = {"every-shard": Evaluation("every-shard", 0.0), "per-sample": Evaluation("per-sample", 0.3),
         "fast": Evaluation("fast", 0.3, 1.0)}


def build_world(root) -> dict:
    """A seeded (untrained) gate over the style shards: weights that differ per sample and shard."""
    torch.manual_seed(0)
    folder = root / "shard_gates"
    folder.mkdir()
    net = GateNet(GateConfig(names=STYLE_SHARDS, latent_shape=(4, 8, 8), family="tinyworld"))
    with torch.no_grad():
        net.head.weight.mul_(30.0)  # spread the logits: some weights fall below ε
    save_gate(str(folder / GATE_FILE), net)
    return {"folders": f"shard_gates={folder}", "gate": net}


def one_step(g: Graph, model: Ref, key: str) -> None:
    """SamplerCustom from the seeded latent at σ straight to 0 (no added noise): the CFG x0."""
    latent = g.node("UKTestLatent", seed=LATENT_SEED, batch=BATCH, size=8)
    out = g.node("SamplerCustom", model=model, add_noise=False, noise_seed=0, cfg=CFG,
                 positive=g.conditioning(COND_SEED, WIDTH), negative=g.conditioning(UNCOND_SEED, WIDTH),
                 sampler=g.node("KSamplerSelect", sampler_name="euler"),
                 sigmas=g.node("UKTestSigmas", sigma=SIGMA), latent_image=latent)
    g.save_latent(out, key)


def styles_graph() -> dict:
    g = Graph()
    chain, _ = style_shards(g)
    gate = g.node("UnlearnKitLoadShardGate", gate_name=GATE_FILE)
    for mode, ev in MODES.items():
        model = compose(g, chain, gate="classifier", shard_gate=gate, evaluate=ev.mode, prune_eps=ev.eps,
                        fast_sigma=ev.mc_sigma)
        one_step(g, model, mode)
        one_step(g, g.node("UKTestShortOfMemory", model=model), f"{mode} apart")
    return g.prompt()


def flow_graph() -> dict:
    """Two random models with ComfyUI's flow model sampling, each alone and mixed 1:3."""
    g = Graph()
    a, b = (g.node("UKTestFlowModel", model=g.tiny_model(seed), shift=3.0) for seed in (1, 2))
    entries = ((a, "a", 0.25), (b, "b", 0.75))
    models = {"a": a, "b": b, "mix": compose_models(g, *entries),
              "mix fast": compose_models(g, *entries, evaluate="fast")}
    for key, model in models.items():
        latent = g.node("UKTestLatent", seed=LATENT_SEED, batch=2, size=8)
        out = g.node("SamplerCustom", model=model, add_noise=False, noise_seed=0, cfg=CFG,
                     positive=g.conditioning(1), negative=g.conditioning(2),
                     sampler=g.node("KSamplerSelect", sampler_name="euler"),
                     sigmas=g.node("UKTestSigmas", sigma=0.6), latent_image=latent)
        g.save_latent(out, key)
    return g.prompt()


def mixed_kinds_graph() -> dict:
    """A flow model with an eps model: their x0 come from different sampler states, so they are refused."""
    g = Graph()
    flow = g.node("UKTestFlowModel", model=g.tiny_model(1), shift=3.0)
    g.save_latent(g.ksample(compose(g, shard_chain(g, (g.tiny_model(2), "eps", 1.0), (flow, "flow", 1.0))),
                            steps=1), "x")
    return g.prompt()


TS, SIGMAS = [0.0, 0.25, 10.5, 431.25, 998.9, 999.0], [0.03, 0.05, 1.3, 3.0, 7.7, 14.6]


def schedule_graph() -> dict:
    """ComfyUI's own σ(t) and timestep(σ) of an SD1.5 model's discrete schedule."""
    g = Graph()
    g.node("UKTestModelSamplingTable", model=g.tiny_model(1), ts=", ".join(map(str, TS)),
           sigmas=", ".join(map(str, SIGMAS)), key="table")
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    return {"schedule": schedule_graph(), "styles": styles_graph(), "flow": flow_graph(),
            "mixed_kinds": mixed_kinds_graph()}


def test_core_sigma_and_timestep_are_comfyuis(comfy_run):
    """One σ <-> t: log σ interpolated, and ComfyUI hands its UNet the nearest trained step."""
    table = comfy_run["schedule"].assert_ok().record("table")
    log_sigmas = torch.tensor(table["sigmas"]).log()
    assert torch.allclose(log_sigmas.exp(), sigmas_of(build_scheduler("ddim").alphas_cumprod), rtol=1e-4)
    sigma_of_t = torch.tensor(table["sigma_of_t"])
    assert torch.allclose(t_to_sigma(torch.tensor(TS), log_sigmas), sigma_of_t, rtol=1e-5)
    nearest = sigma_to_t(torch.tensor(SIGMAS), log_sigmas, quantize=True)
    assert nearest.tolist() == table["t_of_sigma"]


@pytest.fixture(scope="module")
def expected(world) -> dict[str, np.ndarray]:
    """reference_x0 of each mode, CFG-combined and in ComfyUI's latent scale, as the sampler returns it."""
    unets = [store.load_unet(f"style/{s}").float().eval() for s in STYLE_SHARDS]
    scale = float(store.read_config()["vae"]["scaling_factor"])
    latent = torch.randn((BATCH, 4, 8, 8), generator=torch.Generator().manual_seed(LATENT_SEED))
    cond, uncond = (torch.randn((1, TOKENS, WIDTH), generator=torch.Generator().manual_seed(seed))
                    .expand(BATCH, -1, -1) for seed in (COND_SEED, UNCOND_SEED))
    forwards = [lambda x, t, c, u=u: u(x, t, encoder_hidden_states=c).sample for u in unets]
    acp = build_scheduler("ddim").alphas_cumprod  # SD's schedule, as ComfyUI's SD15 model sampling
    out = {}
    for mode, ev in MODES.items():
        gate = ClassifierGate(world["gate"], list(STYLE_SHARDS), [1.0] * 4)
        with torch.no_grad():
            x0 = reference_x0(forwards, STYLE_SHARDS, gate, latent * scale, torch.full((BATCH,), SIGMA),
                              [cond, uncond], acp, quantize=True, evaluation=ev)
        out[mode] = ((x0[BATCH:] + CFG * (x0[:BATCH] - x0[BATCH:])) / scale).numpy()
    return out


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("calls", ["", " apart"])
def test_comfyui_composed_x0_is_the_core_reference(comfy_run, expected, mode, calls):
    actual = comfy_run["styles"].assert_ok().latent(mode + calls)
    scale = float(np.abs(expected[mode]).max())
    np.testing.assert_allclose(actual, expected[mode], rtol=1e-4, atol=1e-4 * scale, err_msg=mode + calls)


def test_the_modes_really_route(expected):
    assert np.abs(expected["per-sample"] - expected["every-shard"]).max() > 1e-3
    assert np.abs(expected["fast"] - expected["per-sample"]).max() > 1e-3


def test_flow_models_mix_their_x0(comfy_run, comfy_engine):
    if comfy_engine == "comfy-2024-03":
        pytest.skip("ComfyUI 2024-03 has no flow (CONST) model sampling")
    r = comfy_run["flow"].assert_ok()
    a, b = r.latent("a"), r.latent("b")
    assert np.abs(a - b).max() > 1e-2
    np.testing.assert_allclose(r.latent("mix"), 0.25 * a + 0.75 * b, rtol=1e-5, atol=1e-4)
    fast = r.latent("mix fast")  # σ 0.6 is VE σ 1.5 > 1: each sample is one shard's x0
    for k in range(fast.shape[0]):
        assert min(np.abs(fast[k] - a[k]).max(), np.abs(fast[k] - b[k]).max()) < 1e-4


def test_flow_and_eps_models_are_refused(comfy_run, comfy_engine):
    if comfy_engine == "comfy-2024-03":
        pytest.skip("ComfyUI 2024-03 has no flow (CONST) model sampling")
    comfy_run["mixed_kinds"].assert_failed("shard 'flow'", "model sampling", "CONST")


world, comfy_run = suite_fixtures(__name__)
