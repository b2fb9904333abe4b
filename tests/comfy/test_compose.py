"""Compose nodes (nodes/compose/) in real ComfyUI, 2024-03 and 0.3.75: mixing, loading, own patches, refusals.

LoRA clones of one checkpoint: test_compose_clones.py; gates: test_compose_gates.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from comfy_harness import Graph, Ref
from compose_graphs import EXACT, shard_chain
from compose_graphs import compose_models as compose
from suite import suite_fixtures

A_SEED, B_SEED, C_SEED = 1, 2, 3


def weights_graph(sample) -> dict:
    """Plain models vs compositions, all sampled with ``sample(g, model) -> latent``."""
    g = Graph()
    a, b, c = g.tiny_model(A_SEED), g.tiny_model(B_SEED), g.tiny_model(C_SEED)
    a_twin = g.tiny_model(A_SEED, label="A twin")  # same weights, separate module
    g.save_latent(sample(g, a), "a")
    g.save_latent(sample(g, b), "b")
    g.save_latent(sample(g, c), "c")
    g.save_latent(sample(g, compose(g, (a, "a", 1.0), (b, "b", 0.0))), "a_only")
    g.save_latent(sample(g, compose(g, (a, "a", 0.0), (b, "b", 1.0))), "b_only")
    g.save_latent(sample(g, compose(g, (a, "a", 0.5), (b, "b", 0.5))), "mix")
    g.save_latent(sample(g, compose(g, (a, "a", 0.3), (a_twin, "a twin", 0.7))), "twins")
    g.save_latent(sample(g, compose(g, (a, "a1", 0.4), (a, "a2", 0.4))), "same_model")
    prefix = shard_chain(g, (a, "a", 0.0))  # one SHARDS output feeding two branches
    for key, model, name in [("branch_b", b, "b"), ("branch_c", c, "c")]:
        branch = g.node("UnlearnKitShard", model=model, name=name, weight=1.0, shards=prefix)
        g.save_latent(sample(g, g.node("UnlearnKitComposeShards", shards=branch, **EXACT)), key)
    return g.prompt()


def one_step_graph() -> dict:
    """One Euler step from sigma_max to 0 returns the (CFG-combined) x0 itself: output = Σ w_i x0_i.

    Shards with their own non-weight patches (attention patch, 0.3.x apply_model wrapper) must
    each run with their own patches, never the base's.
    """
    g = Graph()
    a, b = g.tiny_model(A_SEED), g.tiny_model(B_SEED)
    a_attn, b_attn = (g.node("UKTestScaleModel", model=m, where="attn2_output", scale=0.0) for m in (a, b))
    a_wrap, b_wrap = (
        g.node("UKTestScaleModel", model=m, where="apply_model_wrapper", scale=0.5) for m in (a, b)
    )
    latent = g.empty_latent(batch=2)
    models = {"a": a, "b": b, "a_attn": a_attn, "b_attn": b_attn, "a_wrap": a_wrap, "b_wrap": b_wrap,
              "mix": compose(g, (a, "a", 0.2), (b, "b", 0.6))}
    for first, second in [("a_attn", "b"), ("a", "b_attn"), ("a_wrap", "b"), ("a", "b_wrap")]:
        models[f"{first}+{second}"] = compose(g, (models[first], first, 0.5), (models[second], second, 0.5))
    models["c"] = g.tiny_model(C_SEED)
    models["nested"] = compose(
        g, (compose(g, (a, "a", 0.5), (b, "b", 0.5)), "a+b", 0.5), (models["c"], "c", 0.5)
    )
    for key, model in models.items():
        g.save_latent(g.ksample(model, seed=7, steps=1, cfg=3.0, latent=latent), key)
    return g.prompt()


def state_graph(nested: bool) -> dict:
    """Inputs after a composed sample: untouched; composed: wrapper set; fresh shards: loaded."""
    g = Graph()
    a, b = g.tiny_model(11, label="fresh A"), g.tiny_model(12, label="fresh B")
    composed = compose(g, (a, "a", 0.5), (b, "b", 0.5))
    if nested:  # B reaches the sampler only through the inner composition
        composed = compose(g, (composed, "a+b", 0.5), (g.tiny_model(13, label="fresh C"), "c", 0.5))
    latent = g.ksample(composed, seed=3)
    g.node("UKTestLoadedModels", after=latent, key="loaded")
    g.node("UKTestModelState", model=a, key="state_a", after=latent)
    g.node("UKTestModelState", model=b, key="state_b", after=latent)
    g.node("UKTestModelState", model=composed, key="state_composed", after=latent)
    g.save_latent(latent, "mix")
    return g.prompt()


def refusal_graph(second: str, *, names: tuple[str, str] = ("a", "b"), weights=(0.5, 0.5), **knobs) -> dict:
    """Compose model A with a second model: 'tiny' (knobs), 'patched' pair, or 'base+patched'."""
    g = Graph()
    a = g.tiny_model(A_SEED)
    if second == "tiny":
        first, other = a, g.tiny_model(B_SEED, **knobs)
    elif second == "patched":  # two LoRA-like clones of one base
        first = g.node("UKTestPatchModel", model=a, seed=5, strength=1.0)
        other = g.node("UKTestPatchModel", model=a, seed=knobs.get("seed", 6), strength=1.0)
    elif second == "nan":  # a broken shard of its own module
        first, other = a, g.node("UKTestNaNModel", model=g.tiny_model(B_SEED))
    elif second == "nan clone":  # a broken clone of the first shard's module
        first, other = a, g.node("UKTestNaNModel", model=a)
    else:
        raise ValueError(second)
    composed = compose(g, (first, names[0], weights[0]), (other, names[1], weights[1]))
    g.save_latent(g.ksample(composed, seed=3), "mix")
    g.save_latent(g.ksample(first, seed=3), "first")
    return g.prompt()


def same_patch_graph() -> dict:
    g = Graph()
    patched = g.node("UKTestPatchModel", model=g.tiny_model(A_SEED), seed=5, strength=1.0)
    g.save_latent(g.ksample(patched, seed=3), "patched")
    g.save_latent(g.ksample(compose(g, (patched, "p1", 0.5), (patched, "p2", 0.5)), seed=3), "mix")
    return g.prompt()


def ksampler(g: Graph, model: Ref) -> Ref:
    return g.ksample(model, seed=3, steps=3, cfg=3.0, sampler="euler", scheduler="normal")


def custom_sampler(g: Graph, model: Ref) -> Ref:
    return g.custom_sample(model, seed=3, steps=3, cfg=3.0, sampler="euler_ancestral", scheduler="karras")


REFUSALS = {
    "refuse_context_dim": (refusal_graph("tiny", context_dim=64), ["shard 'b'", "context_dim"]),
    "refuse_model_channels": (refusal_graph("tiny", model_channels=64), ["shard 'b'", "model_channels"]),
    "refuse_in_channels": (refusal_graph("tiny", in_channels=9), ["shard 'b'", "in_channels"]),
    "refuse_prediction": (refusal_graph("tiny", prediction="v"), ["shard 'b'", "prediction", "V_PREDICTION"]),
    "refuse_nan_shard": (refusal_graph("nan"), ["prediction of shard 'b'", "NaN"]),
    "refuse_nan_clone": (refusal_graph("nan clone"), ["prediction of shard 'b'", "NaN"]),
    "refuse_duplicate_names": (refusal_graph("tiny", names=("x", "x")), ["unique", "'x'"]),
    "refuse_all_zero": (refusal_graph("tiny", weights=(0.0, 0.0)), ["all are zero"]),
}


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    graphs = {"ksampler": weights_graph(ksampler), "custom_sampler": weights_graph(custom_sampler),
              "one_step": one_step_graph(), "state": state_graph(False), "state_nested": state_graph(True),
              "same_patch": same_patch_graph(), "equal_patch_content": refusal_graph("patched", seed=5)}
    graphs.update({name: graph for name, (graph, _) in REFUSALS.items()})
    return graphs


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4, err_msg=what)


def assert_differs(x: np.ndarray, y: np.ndarray, what: str) -> None:
    assert np.abs(x - y).max() > 1e-2, f"{what}: expected different latents, max |diff| {np.abs(x - y).max()}"


@pytest.mark.parametrize("graph", ["ksampler", "custom_sampler"])
def test_weight_one_reproduces_each_model_exactly(comfy_run, graph):
    r = comfy_run[graph].assert_ok()
    np.testing.assert_array_equal(r.latent("a_only"), r.latent("a"))
    np.testing.assert_array_equal(r.latent("b_only"), r.latent("b"))
    assert_differs(r.latent("a"), r.latent("b"), "models A and B")


@pytest.mark.parametrize("graph", ["ksampler", "custom_sampler"])
def test_mix_of_identical_models_is_the_model(comfy_run, graph):
    r = comfy_run[graph].assert_ok()
    assert_same(r.latent("twins"), r.latent("a"), "0.3/0.7 mix of two modules with A's weights")
    assert_same(r.latent("same_model"), r.latent("a"), "A mixed with itself")


@pytest.mark.parametrize("graph", ["ksampler", "custom_sampler"])
def test_half_half_mix_differs_from_both(comfy_run, graph):
    r = comfy_run[graph].assert_ok()
    assert_differs(r.latent("mix"), r.latent("a"), "mix vs A")
    assert_differs(r.latent("mix"), r.latent("b"), "mix vs B")


def test_shard_sets_are_never_mutated(comfy_run):
    r = comfy_run["ksampler"].assert_ok()
    np.testing.assert_array_equal(r.latent("branch_b"), r.latent("b"))  # a sibling branch must not leak in
    np.testing.assert_array_equal(r.latent("branch_c"), r.latent("c"))


def test_one_step_output_is_weighted_x0_mix(comfy_run):
    r = comfy_run["one_step"].assert_ok()
    a, b, mix = r.latent("a"), r.latent("b"), r.latent("mix")
    assert mix.shape[0] == 2
    assert_same(mix, 0.25 * a + 0.75 * b, "sliders 0.2/0.6 normalise to 0.25/0.75")
    assert_differs(mix, 0.75 * a + 0.25 * b, "swapped weights")


def test_composed_model_can_be_a_shard(comfy_run):
    r = comfy_run["one_step"].assert_ok()
    expected = 0.25 * r.latent("a") + 0.25 * r.latent("b") + 0.5 * r.latent("c")
    assert_same(r.latent("nested"), expected, "compose(compose(a, b), c)")


@pytest.mark.parametrize("pair", [("a_attn", "b"), ("a", "b_attn"), ("a_wrap", "b"), ("a", "b_wrap")])
def test_each_shard_keeps_its_own_patches(comfy_run, comfy_engine, pair):
    r = comfy_run["one_step"].assert_ok()
    first, second = pair
    assert_same(
        r.latent(f"{first}+{second}"), 0.5 * r.latent(first) + 0.5 * r.latent(second), f"{first}+{second}"
    )
    patched = first if first != "a" else second
    if "attn" in patched or comfy_engine != "comfy-2024-03":  # 2024-03 has no wrappers: the clone is plain
        assert_differs(r.latent(patched), r.latent(patched[0]), f"{patched} vs plain")


@pytest.mark.parametrize("graph", ["state", "state_nested"])
def test_inputs_untouched_and_shards_loaded(comfy_run, comfy_engine, graph):
    r = comfy_run[graph].assert_ok()
    untouched = {
        "model_options_keys": ["transformer_options"],
        "transformer_options": [],
        "has_model_function_wrapper": False,
        "n_weight_patches": 0,
        "additional_models": [],
        "wrappers": [],
    }
    for key, label in [("state_a", "fresh A"), ("state_b", "fresh B")]:
        assert r.record(key) == {**untouched, "label": label}
    composed = r.record("state_composed")
    assert composed["has_model_function_wrapper"] and composed["label"] == "fresh A"
    expected = {"fresh A", "fresh B", "fresh C"} if graph == "state_nested" else {"fresh A", "fresh B"}
    assert expected <= set(r.record("loaded")["labels"])
    if comfy_engine != "comfy-2024-03":  # 0.3.x loads shards through set_additional_models, not lazily
        assert composed["additional_models"] == ["unlearnkit_shards"]
        lazily_loaded = "Compose: loading" in comfy_run.log
        assert not lazily_loaded, (
            "a shard reached the GPU through the 2024-03 fallback, not set_additional_models"
        )


def test_clones_with_identical_patches_are_fine(comfy_run):
    r = comfy_run["same_patch"].assert_ok()
    assert_same(r.latent("mix"), r.latent("patched"), "patched model mixed with itself")
    r = comfy_run["equal_patch_content"].assert_ok()  # two clones, same patch content, different patch ids
    assert_same(r.latent("mix"), r.latent("first"), "two equal LoRA-like clones")


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_name_the_shard(comfy_run, name):
    message = comfy_run[name].assert_failed("UnlearnKit", *REFUSALS[name][1])
    assert "ValueError" in message


world, comfy_run = suite_fixtures(__name__)
