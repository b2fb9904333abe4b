"""Compose over clones of one checkpoint (LoRAs on one base, nodes/compose/clone_deltas.py) in real ComfyUI,
2024-03 and 0.3.75: each clone's patches are in effect when (and only when) it runs."""
from __future__ import annotations

import re

import numpy as np
from comfy_harness import Graph
from compose_graphs import compose_models as compose
from suite import suite_fixtures

A_SEED, B_SEED = 1, 2


def clones_graph() -> dict:
    """LoRA-patched clones of one base module, mixed one Euler step (output = Σ w_i x0_i) and over 3 steps.

    l1, l2, l3: real LoRAs through ComfyUI's loader (attention linears, 1x1 and 3x3 convs, output
    conv); p5, p6: 'diff' patches (output GroupNorm and conv). Each is also sampled alone.
    """
    g = Graph()
    a = g.tiny_model(A_SEED)
    m = {
        "a": a,
        **{f"l{k}": g.node("UKTestLoraModel", model=a, seed=k, rank=2, strength=1.0) for k in (1, 2, 3)},
        **{f"p{k}": g.node("UKTestPatchModel", model=a, seed=k, strength=1.0) for k in (5, 6)},
    }
    b = g.tiny_model(B_SEED)  # LoRAs on a second base: their module is not the composed model's
    m.update({"b": b, "bl1": g.node("UKTestLoraModel", model=b, seed=1, rank=2, strength=1.0),
              "bl2": g.node("UKTestLoraModel", model=b, seed=2, rank=2, strength=-1.0)})
    latent = g.empty_latent(batch=2)
    plain = dict(m)
    mixes = {
        "l1+l2 1-0": [("l1", 1.0), ("l2", 0.0)],
        "l1+l2 0-1": [("l1", 0.0), ("l2", 1.0)],
        "l1+l2 half": [("l1", 0.5), ("l2", 0.5)],
        "l2+l1 quarter": [("l2", 0.25), ("l1", 0.75)],
        "a+l1+l2": [("a", 1.0), ("l1", 1.0), ("l2", 1.0)],
        "l1+a half": [("l1", 0.5), ("a", 0.5)],
        "p5+p6 half": [("p5", 0.5), ("p6", 0.5)],
        "l1+p6 half": [("l1", 0.5), ("p6", 0.5)],
        "a+bl1+bl2": [("a", 0.5), ("bl1", 0.25), ("bl2", 0.25)],
        "bl2+bl1+l1": [("bl2", 0.25), ("bl1", 0.25), ("l1", 0.5)],
    }
    for key, entries in mixes.items():
        m[key] = compose(g, *[(plain[n], n, w) for n, w in entries])
    inner = compose(g, (m["l1"], "l1", 0.5), (m["l2"], "l2", 0.5))
    m["nested"] = compose(g, (inner, "l1+l2", 0.5), (m["l3"], "l3", 0.5))  # all four are clones of a
    m["nested outer base"] = compose(g, (m["l3"], "l3", 0.5), (inner, "l1+l2", 0.5))
    for key, model in m.items():
        g.save_latent(g.ksample(model, seed=7, steps=1, cfg=3.0, latent=latent), key)
    g.save_latent(g.ksample(m["l1+l2 half"], seed=3, steps=3), "3 steps mix")
    g.save_latent(g.ksample(m["l1"], seed=7, steps=1, cfg=3.0, latent=latent), "l1 after")
    return g.prompt()


def memory_graph() -> dict:
    """Bytes of parameter storage held by a base, two LoRA clones of it, and their composition after
    sampling."""
    g = Graph()
    a = g.tiny_model(A_SEED)
    l1, l2 = (g.node("UKTestLoraModel", model=a, seed=k, rank=4, strength=1.0) for k in (1, 2))
    mix = compose(g, (l1, "l1", 0.5), (l2, "l2", 0.5))
    latent = g.ksample(mix, seed=3, steps=2)
    for key, model in {"base": a, "l1": l1, "l2": l2, "mix": mix}.items():
        g.node("UKTestParameterBytes", model=model, key=f"bytes_{key}", after=latent)
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    return {"clones": clones_graph(), "memory": memory_graph()}


def assert_differs(x: np.ndarray, y: np.ndarray, what: str) -> None:
    assert np.abs(x - y).max() > 1e-2, f"{what}: expected different latents, max |diff| {np.abs(x - y).max()}"


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal up to float32 rounding (a clone's W·x + ΔW·x vs its merged weights, on huge random-model
    outputs)."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=what)


def test_lora_clones_mix_like_their_separately_patched_models(comfy_run):
    """Clones share weights: each clone's patches are in effect when (and only when) it runs."""
    r = comfy_run["clones"].assert_ok()
    x = {k: r.latent(k) for k in ("a", "l1", "l2", "l3", "p5", "p6", "bl1", "bl2")}
    assert_differs(x["l1"], x["a"], "LoRA l1 vs its base")
    assert_differs(x["l1"], x["l2"], "LoRAs l1 vs l2")
    assert_differs(x["p5"], x["p6"], "diff patches p5 vs p6")
    assert_differs(x["bl1"], x["bl2"], "LoRAs bl1 vs bl2")
    expected = {"l1+l2 1-0": x["l1"], "l1+l2 0-1": x["l2"], "l1+l2 half": 0.5 * x["l1"] + 0.5 * x["l2"],
                "l2+l1 quarter": 0.25 * x["l2"] + 0.75 * x["l1"], "a+l1+l2": (x["a"] + x["l1"] + x["l2"]) / 3,
                "l1+a half": 0.5 * x["l1"] + 0.5 * x["a"], "p5+p6 half": 0.5 * x["p5"] + 0.5 * x["p6"],
                "l1+p6 half": 0.5 * x["l1"] + 0.5 * x["p6"],
                "a+bl1+bl2": 0.5 * x["a"] + 0.25 * x["bl1"] + 0.25 * x["bl2"],
                "bl2+bl1+l1": 0.25 * x["bl2"] + 0.25 * x["bl1"] + 0.5 * x["l1"],
                "nested": 0.25 * x["l1"] + 0.25 * x["l2"] + 0.5 * x["l3"],
                "nested outer base": 0.5 * x["l3"] + 0.25 * x["l1"] + 0.25 * x["l2"]}
    for key, value in expected.items():
        assert_close(r.latent(key), value, key)


def test_lora_clones_stay_low_rank(comfy_run):
    """Plain LoRA patches are applied as two thin matmuls per layer, never as a dense delta."""
    counts = re.findall(r"adds (\d+) layer deltas \((\d+) low-rank\)", comfy_run.log)
    assert counts, "no clone deltas were logged"
    assert any(int(n) == int(low) > 0 for n, low in counts), counts  # a LoRA pair: every delta low-rank
    assert any(int(low) < int(n) for n, low in counts), counts  # diff patches: dense


def test_clones_leave_no_patch_behind(comfy_run):
    r = comfy_run["clones"].assert_ok()
    np.testing.assert_array_equal(r.latent("l1 after"), r.latent("l1"))
    mix = r.latent("3 steps mix")
    assert np.isfinite(mix).all()


def test_lora_clones_cost_one_base_and_their_loras(comfy_run):
    """The composed base holds no patched copy of any weight: N LoRA shards = one base + N LoRAs."""
    r = comfy_run["memory"].assert_ok()
    held = {k: r.record(f"bytes_{k}")["bytes"] for k in ("base", "l1", "l2", "mix")}
    loras = held["l1"] + held["l2"] - 2 * held["base"]
    assert 0 < loras < 0.5 * held["base"], held
    assert held["mix"] == held["base"] + loras, held


world, comfy_run = suite_fixtures(__name__)
