"""Gate files, gate training, forgetting and rights (nodes/compose/gate_nodes.py, shard_nodes.py) in real
ComfyUI, 2024-03 and 0.3.75.

Shards are seeded random tiny models (mechanics, not quality); gate training uses the tiny world's VAE and
images. Quality on real shards: test_compose_workflows.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from comfy_harness import Graph, Ref
from compose_graphs import attribution, built, compose, shard_chain, small_latent, style_images, train_gate
from suite import suite_fixtures

from unlearnkit import io
from unlearnkit.tinyworld import store

SOURCE_FILE = store.WEIGHTS_DIR / "vae.safetensors"
SEEDS = {"a": 1, "b": 2, "c": 3}
STEPS = 4
GATE_STEPS = 150
THREE_STYLES = ("bold", "inverted", "outlined")


def random_shards(g: Graph, names: str = "abc", tags: tuple = ()) -> Ref:
    """Seeded random tiny models a, b, c (the seeds the trained test gate knows) at weight 1."""
    return shard_chain(g, *[(g.tiny_model(SEEDS[n]), n, 1.0, *tags[i : i + 1]) for i, n in enumerate(names)])


def sample_and_attribute(g: Graph, model: Ref, key: str) -> None:
    attribution(g, model, g.ksample(model, seed=3, steps=STEPS, latent=small_latent(g)), key)


def train_graph() -> dict:
    """Train a gate for shards a, b, c on tiny-world style images, then sample with it."""
    g = Graph()
    shards = random_shards(g)
    gate = train_gate(g, shards, "test_gate", style_images(THREE_STYLES, g, 48), GATE_STEPS)
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    sample_and_attribute(g, compose(g, shards, gate="classifier", shard_gate=gate), "classifier")
    return g.prompt()


def reuse_graph() -> dict:
    """Train Shard Gate again with if_exists 'reuse': the file from train_graph is loaded, not retrained."""
    g = Graph()
    gate = train_gate(g, random_shards(g), "test_gate", style_images(THREE_STYLES, g, 8, seed=1), GATE_STEPS,
                      if_exists="reuse")
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    return g.prompt()


def prompted_graph() -> dict:
    """A prompt-reading gate: prompt_k of each shard's images and the empty prompt; sampling passes the
    prompt."""
    g = Graph()
    shards = random_shards(g, "ab")
    prompts = {"prompt_1": g.conditioning(1), "prompt_2": g.conditioning(2),
               "empty_prompt": g.conditioning(3)}
    images = style_images(("bold", "inverted"), g, 16)
    gate = train_gate(g, shards, "prompted_gate", images, 60, batch_size=16, **prompts)
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    sample_and_attribute(g, compose(g, shards, gate="classifier", shard_gate=gate), "prompted")
    return g.prompt()


def load_graph() -> dict:
    """The trained file through Load Shard Gate; a forgotten shard is masked out of the gate."""
    g = Graph()
    gate = g.node("UnlearnKitLoadShardGate", gate_name="test_gate.safetensors")
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    with_b = g.node("UnlearnKitShard", model=g.tiny_model(2), name="b", weight=1.0,  # any file stands in
                    shards=random_shards(g, "a"), source=str(SOURCE_FILE))  # for shard b's checkpoint
    with_c = g.node("UnlearnKitShard", model=g.tiny_model(3), name="c", weight=1.0, shards=with_b)
    forget = g.node("UnlearnKitForgetShard", shards=with_c, name="b", reason="test request 42")
    g.node("UKTestSaveText", text=forget.out(1), key="record")
    g.node("UKTestCopyOutputFile", path="unlearnkit_forget_log.jsonl", key="log", after=forget.out(1))
    sample_and_attribute(g, compose(g, forget, gate="classifier", shard_gate=gate), "forgotten")
    return g.prompt()


def forget_restrict_graph() -> dict:
    """Forgetting / restricting to one shard samples exactly that shard's model."""
    g = Graph()
    a, b = g.tiny_model(1), g.tiny_model(2)
    latent = small_latent(g)
    full = shard_chain(g, (a, "a", 0.5, "public"), (b, "b", 0.5, "paid, premium"))
    g.save_latent(g.ksample(a, seed=3, steps=STEPS, latent=latent), "a")
    forgotten = g.node("UnlearnKitForgetShard", shards=full, name="b", reason="")
    g.save_latent(g.ksample(compose(g, forgotten), seed=3, steps=STEPS, latent=latent), "forgotten")
    restricted = g.node("UnlearnKitRestrictShards", shards=full, rights="public", requested="")
    g.node("UKTestSaveText", text=restricted.out(1), key="served")
    g.save_latent(g.ksample(compose(g, restricted), seed=3, steps=STEPS, latent=latent), "restricted")
    both = g.node("UnlearnKitRestrictShards", shards=full, rights="public paid premium", requested="b, a")
    g.node("UKTestSaveText", text=both.out(1), key="served_both")
    return g.prompt()


def save_text(g: Graph, node: Ref, slot: int = 1) -> None:
    g.node("UKTestSaveText", text=node.out(slot), key="x")


def classifier_sample(g: Graph, names: str, size: int = 64) -> None:
    gate = g.node("UnlearnKitLoadShardGate", gate_name="test_gate.safetensors")
    shards = shard_chain(g, *[(g.tiny_model(k), n, 1.0) for k, n in enumerate(names, start=1)])
    model = compose(g, shards, gate="classifier", shard_gate=gate)
    g.save_latent(g.ksample(model, seed=3, steps=2, latent=g.empty_latent(size, batch=2)), "x")


def without_gate(g: Graph) -> None:
    g.save_latent(g.ksample(compose(g, random_shards(g, "a"), gate="classifier"), steps=2), "x")


def load_file(name: str):
    return lambda g: save_text(g, g.node("UnlearnKitLoadShardGate", gate_name=name))


def train_without(missing: str):
    """Train Shard Gate for shards a, b with shard b's images (or prompt) not connected."""
    def build(g: Graph) -> None:
        if missing == "images":
            images, prompts = style_images(("bold",), g, 8), {}
        else:
            images = style_images(("bold", "inverted"), g, 8)
            prompts = {"prompt_1": g.conditioning(1), "empty_prompt": g.conditioning(3)}
        save_text(g, train_gate(g, random_shards(g, "ab"), "never", images, 5, batch_size=8, **prompts))
    return build


def forget_unknown(g: Graph) -> None:
    save_text(g, g.node("UnlearnKitForgetShard", shards=random_shards(g, "a"), name="zz", reason=""))


def restrict_refused(g: Graph) -> None:
    shards = random_shards(g, "ab", ("public", "paid"))
    save_text(g, g.node("UnlearnKitRestrictShards", shards=shards, rights="public", requested="b"))


ERRORS = {
    "wrong_gate_names": (lambda g: classifier_sample(g, "xy"),
                         ["shard_gate", "trained for shards ['a', 'b', 'c']", "['x', 'y']"]),
    "wrong_latent_shape": (lambda g: classifier_sample(g, "ab", size=128),
                           ["gate", "trained on latents of shape (4, 8, 8)", "(4, 16, 16)"]),
    "classifier_without_gate": (without_gate, ["shard_gate", "needs a SHARD_GATE"]),
    "corrupt_gate_file": (load_file("garbage.safetensors"),
                          ["gate_name", "garbage.safetensors", "not a valid safetensors"]),
    "other_format_file": (load_file("other.safetensors"), ["gate_name", "not an UnlearnKit shard gate"]),
    "missing_gate_file": (load_file("nope.safetensors"), ["nope.safetensors"]),
    "missing_images": (train_without("images"), ["images_2", "no training images for shard 'b'"]),
    "missing_prompt": (train_without("prompt"), ["prompt_2", "shard 'b' has none"]),
    "forget_unknown": (forget_unknown, ["name", "'zz'", "not in the set"]),
    "restrict_refused": (restrict_refused, ["shard 'b'", "access refused", "paid"]),
    "attribution_of_plain_model": (
        lambda g: attribution(g, g.tiny_model(1), g.ksample(g.tiny_model(1), steps=1), "x"),
        ["model", "not made by Compose Shards"]),
}


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    def write_bad_files(g: Graph) -> None:
        g.node("UKTestWriteOutputFile", path="shard_gates/garbage.safetensors", content="garbage")
        g.node("UKTestWriteOutputFile", path="shard_gates/other.safetensors", content="other safetensors")

    graphs = {"train": train_graph(), "reuse": reuse_graph(), "prompted": prompted_graph(),
              "write_bad_files": built(write_bad_files), "load": load_graph(),
              "forget_restrict": forget_restrict_graph()}
    graphs.update({name: built(build) for name, (build, _) in ERRORS.items()})
    return graphs  # run in this order: files written by one graph are listed by the next


def report(r, key: str) -> dict:
    return json.loads(text(r, key))


def text(r, key: str) -> str:
    return (r.out_dir / f"{key}.txt").read_text()


def weights(rep: dict) -> np.ndarray:
    return np.asarray(rep["weights"])  # (samples, steps, shards)


def test_trained_gate_is_used_and_written(comfy_run):
    r = comfy_run["train"].assert_ok()
    info = text(r, "info")
    assert "test_gate.safetensors" in info and "['a', 'b', 'c']" in info and "(4, 8, 8)" in info
    w = weights(report(r, "classifier"))
    assert w.shape == (2, STEPS, 3)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.abs(w[:, 0] - 1 / 3).max() < 0.3, f"near-uniform weights expected at the first step {w[:, 0]}"


def test_existing_gate_file_is_reused(comfy_run):
    info = text(comfy_run["reuse"].assert_ok(), "info")
    assert info.startswith("reused shard gate test_gate.safetensors")


def test_prompt_reading_gate_is_trained_and_read(comfy_run):
    r = comfy_run["prompted"].assert_ok()
    assert "reads prompts (32-wide)" in text(r, "info")
    w = weights(report(r, "prompted"))
    assert w.shape == (2, STEPS, 2)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)


def test_load_shard_gate_and_forgetting_masks_the_shard(comfy_run):
    r = comfy_run["load"].assert_ok()
    assert "['a', 'b', 'c']" in text(r, "info")
    record = json.loads(text(r, "record"))
    assert (record["shard"], record["remaining"], record["reason"]) == ("b", ["a", "c"], "test request 42")
    assert record["when"] and record["source"] == str(SOURCE_FILE)
    assert record["sha256"] == io.file_sha256(SOURCE_FILE)
    assert record in [json.loads(line) for line in text(r, "log").splitlines()]
    rep = report(r, "forgotten")
    assert rep["shards"] == ["a", "c"] and weights(rep).shape == (2, STEPS, 2)


def test_forget_and_restrict_serve_only_the_remaining_shard(comfy_run):
    r = comfy_run["forget_restrict"].assert_ok()
    np.testing.assert_array_equal(r.latent("forgotten"), r.latent("a"))
    np.testing.assert_array_equal(r.latent("restricted"), r.latent("a"))
    assert text(r, "served") == "a"
    assert text(r, "served_both") == "b, a"


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_input_is_a_clear_error(comfy_run, name):
    comfy_run[name].assert_failed(*ERRORS[name][1])


world, comfy_run = suite_fixtures(__name__)
