"""Gated composition and attribution (nodes/compose/) in real ComfyUI, 2024-03 and 0.3.75: static, density
(SDE and ODE) and pruned mixes of random models, the density gate on the tiny world's style shards, and
workflows saved with the gate's earlier spelling. Gate files, training and forgetting:
test_compose_gate_files.py.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from comfy_harness import Graph
from compose_graphs import (
    STYLE_SHARDS,
    attribution,
    compose,
    sde_sample,
    shard_chain,
    small_latent,
    style_shards,
)
from suite import suite_fixtures

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.styles import STYLES

A_SEED, B_SEED = 1, 2
STEPS = 4
DENSITY_STEPS = 12


def gated_graph() -> dict:
    """Static, density (SDE and ODE) and pruned compositions of random models a, b, with attribution."""
    g = Graph()
    a, b = g.tiny_model(A_SEED), g.tiny_model(B_SEED)
    latent = small_latent(g)
    static = compose(g, shard_chain(g, (a, "a", 0.2), (b, "b", 0.6)))
    attribution(g, static, g.ksample(static, seed=3, steps=STEPS, latent=latent), "static")
    density = compose(g, shard_chain(g, (a, "a", 0.5), (b, "b", 0.5)), gate="density")
    fresh = compose(g, shard_chain(g, (a, "a'", 0.5), (b, "b'", 0.5)), gate="density")  # another mixture
    first = sde_sample(g, density, 4, latent, STEPS)
    again = sde_sample(g, density, 3, first, STEPS)  # same MODEL, second run: the gate must start afresh
    g.save_latent(again, "density_again")
    g.save_latent(sde_sample(g, fresh, 3, first, STEPS), "density_fresh")
    attribution(g, density, again, "density")
    ode = compose(g, shard_chain(g, (a, "a", 0.5), (b, "b", 0.5)), gate="density-ode")
    attribution(g, ode, g.ksample(ode, seed=3, steps=STEPS, latent=latent), "ode")
    legacy = compose(g, shard_chain(g, (a, "a", 0.5), (b, "b", 0.5)), gate="density (ODE sampler)")
    g.save_latent(g.ksample(legacy, seed=3, steps=STEPS, latent=latent), "ode_legacy_spelling")
    g.save_latent(g.ksample(ode, seed=3, steps=STEPS, latent=latent), "ode_again")
    pruned = compose(g, shard_chain(g, (a, "a", 0.9), (b, "b", 0.1)), evaluate="per-sample", prune_eps=0.2)
    pruned_out = g.ksample(pruned, seed=3, steps=STEPS, latent=latent)
    g.save_latent(pruned_out, "pruned")
    attribution(g, pruned, pruned_out, "pruned")
    g.save_latent(g.ksample(a, seed=3, steps=STEPS, latent=latent), "a")
    return g.prompt()


def density_styles_graph() -> dict:
    """The training-free density gate (ODE form, euler) over the tiny world's style shards."""
    g = Graph()
    chain, loaders = style_shards(g)
    model = compose(g, chain, gate="density-ode")
    clip = loaders[0].out(1)
    latent = g.node(
        "KSampler", model=model, seed=1, steps=DENSITY_STEPS, cfg=4.0, sampler_name="euler",
        scheduler="normal", positive=g.node("CLIPTextEncode", clip=clip, text="a handwritten digit 3"),
        negative=g.node("CLIPTextEncode", clip=clip, text=""), latent_image=small_latent(g, batch=8),
        denoise=1.0,
    )
    g.node("UKTestSaveImage", images=g.node("VAEDecode", samples=latent, vae=loaders[0].out(2)), key="images")
    attribution(g, model, latent, "density")
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    return {"gated": gated_graph(), "density_styles": density_styles_graph()}


def report(r, key: str) -> dict:
    return json.loads((r.out_dir / f"{key}.txt").read_text())


def weights(rep: dict) -> np.ndarray:
    return np.asarray(rep["weights"])  # (samples, steps, shards)


def test_static_gate_weights_are_the_normalised_sliders(comfy_run):
    rep = report(comfy_run["gated"].assert_ok(), "static")
    assert rep["shards"] == ["a", "b"]
    w = weights(rep)
    assert w.shape == (2, STEPS, 2)
    np.testing.assert_allclose(w, np.broadcast_to([0.25, 0.75], w.shape), atol=1e-6)
    assert rep["top_shard"] == ["b", "b"]


def test_density_gate_restarts_with_each_sampling_run(comfy_run):
    r = comfy_run["gated"].assert_ok()
    np.testing.assert_array_equal(r.latent("density_again"), r.latent("density_fresh"))
    w = weights(report(r, "density"))
    assert w.shape[:2] == (2, STEPS), "the second run's history must hold only its own steps"
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(w[:, 0], 0.5, atol=1e-6)  # the prior before any score was seen


def test_ode_density_gate_runs_with_a_deterministic_sampler(comfy_run):
    r = comfy_run["gated"].assert_ok()
    w = weights(report(r, "ode"))
    assert w.shape[:2] == (2, STEPS) and np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)


def test_fast_is_per_sample_with_the_density_gate_and_says_so(comfy_run):
    comfy_run["gated"].assert_ok()
    assert "the density gate tracks every shard's score" in comfy_run.log


def test_workflows_saved_with_the_earlier_gate_spelling_still_run(comfy_run):
    r = comfy_run["gated"].assert_ok()
    np.testing.assert_array_equal(r.latent("ode_legacy_spelling"), r.latent("ode_again"))


def test_pruned_shard_is_not_evaluated(comfy_run):
    r = comfy_run["gated"].assert_ok()
    rep = report(r, "pruned")
    assert all(ev == ["a"] for ev in rep["evaluated"])
    np.testing.assert_allclose(r.latent("pruned"), r.latent("a"), rtol=1e-5, atol=1e-4)


def test_attribution_plot_is_an_image(comfy_run):
    plot = comfy_run["gated"].assert_ok().latent("static_plot")
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[1] > 50
    assert 0 <= plot.min() and plot.max() <= 1 and plot.std() > 0.01


def test_density_gate_attributes_samples_to_the_shard_of_their_style(comfy_run):
    """Training-free: each sample's top shard (Itô density + divergence probe) is the style the judge sees."""
    r = comfy_run["density_styles"].assert_ok()
    rep = report(r, "density")
    assert rep["shards"] == list(STYLE_SHARDS)
    w = weights(rep)
    assert w.shape[:2] == (8, DENSITY_STEPS) and w[:, -1].max(-1).min() > 0.9
    x = torch.from_numpy(r.latent("images")).permute(0, 3, 1, 2).float() * 2 - 1
    with torch.no_grad():
        styles = [STYLES[i] for i in store.load_judge("style")(x).argmax(1).tolist()]
    matches = sum(t == s for t, s in zip(rep["top_shard"], styles))
    assert matches >= 6, f"density attribution {rep['top_shard']} vs style judge {styles}"


world, comfy_run = suite_fixtures(__name__)
