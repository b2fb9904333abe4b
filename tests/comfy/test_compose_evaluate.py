"""Compose Shards' evaluate modes across ComfyUI's samplers (nodes/compose/), 2024-03 and 0.3.75.

Three random models gated by the classifier gate trained in test_compose_gate_files.py, a batch of four:
every mode samples with KSampler (an ODE and an ancestral sampler) and SamplerCustom; ComfyUI's low-memory
batching (cond and uncond in separate model calls, uncond first) must not change a single value, for the
one-shard draws of ``fast`` and for the density gate; SamplerCustomAdvanced (0.3.x) equals SamplerCustom.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from comfy_harness import Graph, Ref
from compose_graphs import advanced_sample, attribution, compose, sde_sample, shard_chain, small_latent
from suite import suite_fixtures

STEPS, BATCH = 6, 4
MODES = {"every-shard": {"evaluate": "every-shard", "prune_eps": 0.0},
         "per-sample": {"evaluate": "per-sample", "prune_eps": 0.05},
         "fast": {"evaluate": "fast", "prune_eps": 0.05, "fast_sigma": 1.0}}
SAMPLERS = ("euler", "euler_ancestral")


def gated(g: Graph, gate: str = "classifier", **evaluate) -> Ref:
    """Random models a, b, c composed with ``gate`` (the trained test gate for 'classifier')."""
    shards = shard_chain(g, *[(g.tiny_model(seed), name, 1.0) for seed, name in enumerate("abc", start=1)])
    trained = g.node("UnlearnKitLoadShardGate", gate_name="test_gate.safetensors")
    return compose(g, shards, gate=gate, shard_gate=trained if gate == "classifier" else None, **evaluate)


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal up to float32 rounding (a batch of B rows vs 2B rows through the same layers)."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=what)


def modes_graph() -> dict:
    """Every mode with each sampler, batched and apart (uncond first); attribution of each run."""
    g = Graph()
    latent = small_latent(g, BATCH)
    for mode, evaluate in MODES.items():
        model = gated(g, **evaluate)
        apart = g.node("UKTestShortOfMemory", model=model)
        for sampler in SAMPLERS:
            out = g.ksample(model, seed=3, steps=STEPS, sampler=sampler, latent=latent)
            g.save_latent(out, f"{mode} {sampler}")
            attribution(g, model, out, f"{mode} {sampler} report")
            out = g.ksample(apart, seed=3, steps=STEPS, sampler=sampler, latent=latent)
            g.save_latent(out, f"{mode} {sampler} apart")
            attribution(g, apart, out, f"{mode} {sampler} apart report")
    for gate in ("density", "density-ode"):  # fast runs as per-sample with them, batched or apart
        model = gated(g, gate=gate, **MODES["fast"])
        for key, m in {gate: model, f"{gate} apart": g.node("UKTestShortOfMemory", model=model)}.items():
            g.save_latent(g.ksample(m, seed=3, steps=STEPS, sampler="euler_ancestral", latent=latent), key)
    return g.prompt()


def advanced_graph() -> dict:
    """SamplerCustomAdvanced (0.3.x) and SamplerCustom, the same noise, sampler and sigmas."""
    g = Graph()
    model = gated(g, **MODES["fast"])
    latent = small_latent(g, BATCH)
    g.save_latent(advanced_sample(g, model, 4, latent, STEPS, "euler_ancestral"), "advanced")
    g.save_latent(sde_sample(g, model, 4, latent, STEPS), "custom")
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    return {"modes": modes_graph(), "advanced": advanced_graph()}


def report(r, key: str) -> dict:
    return json.loads((r.out_dir / f"{key}.txt").read_text())


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cond_and_uncond_apart_change_nothing(comfy_run, mode, sampler):
    r = comfy_run["modes"].assert_ok()
    key = f"{mode} {sampler}"
    assert_same(r.latent(f"{key} apart"), r.latent(key), key)
    together, apart = report(r, f"{key} report"), report(r, f"{key} apart report")
    assert np.asarray(apart["weights"]).shape == (BATCH, STEPS, 3)  # one record per step, not per call
    assert apart["evaluations"] == together["evaluations"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_per_sample_and_fast_evaluate_less_and_stay_close(comfy_run, sampler):
    r = comfy_run["modes"].assert_ok()
    cost = {m: sum(report(r, f"{m} {sampler} report")["evaluations"]) / (BATCH * STEPS) for m in MODES}
    assert cost["every-shard"] == 3 and cost["fast"] < cost["per-sample"] < cost["every-shard"], cost
    exact = r.latent(f"every-shard {sampler}")
    for mode in ("per-sample", "fast"):
        assert np.isfinite(r.latent(f"{mode} {sampler}")).all()
    assert np.abs(r.latent(f"per-sample {sampler}") - exact).max() < 0.1 * np.abs(exact).max()


@pytest.mark.parametrize("gate", ["density", "density-ode"])
def test_density_gates_run_per_sample_batched_or_apart(comfy_run, gate):
    r = comfy_run["modes"].assert_ok()
    assert_same(r.latent(f"{gate} apart"), r.latent(gate), gate)
    assert "'fast' evaluates as 'per-sample'" in comfy_run.log


def test_sampler_custom_advanced_equals_sampler_custom(comfy_run, comfy_engine):
    if comfy_engine == "comfy-2024-03":
        pytest.skip("SamplerCustomAdvanced is ComfyUI 0.3.x")
    r = comfy_run["advanced"].assert_ok()
    np.testing.assert_array_equal(r.latent("advanced"), r.latent("custom"))


world, comfy_run = suite_fixtures(__name__)
