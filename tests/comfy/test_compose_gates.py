"""Gated composition, gate files, forgetting, rights and attribution (nodes/compose*.py) in real ComfyUI.

Shards are seeded random tiny models (mechanics, not quality); gate training uses the tiny world's
VAE and images. Quality on real shards: test_compose_workflows.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from comfy_harness import Graph, Ref
from suite import suite_fixtures

from unlearnkit import io
from unlearnkit.tinyworld import store

SOURCE_FILE = store.WEIGHTS_DIR / "vae.safetensors"

A_SEED, B_SEED, C_SEED = 1, 2, 3
STEPS = 4
GATE_STEPS = 150


def shard_chain(g: Graph, *entries: tuple) -> Ref:
    """Chain Shard nodes: entries are (model, name, weight) or (model, name, weight, access_tags)."""
    chain = None
    for model, name, weight, *tags in entries:
        inputs = {"model": model, "name": name, "weight": weight, "access_tags": tags[0] if tags else ""}
        chain = g.node("UnlearnKitShard", **inputs, **({"shards": chain} if chain is not None else {}))
    return chain


def compose(
    g: Graph, shards: Ref, gate: str = "static", prune_eps: float = 0.0, shard_gate: Ref | None = None
) -> Ref:
    extra = {"shard_gate": shard_gate} if shard_gate is not None else {}
    return g.node("UnlearnKitComposeShards", shards=shards, gate=gate, prune_eps=prune_eps, **extra)


def attribution(g: Graph, model: Ref, latent: Ref, key: str) -> Ref:
    node = g.node("UnlearnKitShardAttribution", model=model, latent=latent, max_samples=2, filename_prefix="")
    g.node("UKTestSaveText", text=node.out(1), key=key)
    g.node("UKTestSaveImage", images=node, key=f"{key}_plot")
    return node


def small_latent(g: Graph, batch: int = 2) -> Ref:
    return g.empty_latent(size=64, batch=batch)  # 8x8 latents: the tiny world's shape


def sde_sample(g: Graph, model: Ref, seed: int, latent: Ref) -> Ref:
    """SamplerCustom with euler_ancestral (a stochastic sampler: the density gate's exact case)."""
    return g.node(
        "SamplerCustom",
        model=model,
        add_noise=True,
        noise_seed=seed,
        cfg=3.0,
        positive=g.conditioning(1),
        negative=g.conditioning(2),
        sampler=g.node("KSamplerSelect", sampler_name="euler_ancestral"),
        sigmas=g.node("BasicScheduler", model=model, scheduler="karras", steps=STEPS, denoise=1.0),
        latent_image=latent,
    )


def gated_graph() -> dict:
    """Static, density (SDE and ODE) and pruned compositions of random models a, b, with attribution."""
    g = Graph()
    a, b = g.tiny_model(A_SEED), g.tiny_model(B_SEED)
    latent = small_latent(g)
    static = compose(g, shard_chain(g, (a, "a", 0.2), (b, "b", 0.6)))
    out = g.ksample(static, seed=3, steps=STEPS, latent=latent)
    attribution(g, static, out, "static")
    density = compose(g, shard_chain(g, (a, "a", 0.5), (b, "b", 0.5)), gate="density")
    fresh = compose(
        g, shard_chain(g, (a, "a'", 0.5), (b, "b'", 0.5)), gate="density"
    )  # another mixture object
    first = sde_sample(g, density, 4, latent)
    again = sde_sample(g, density, 3, first)  # same MODEL, second run: the gate must start afresh
    g.save_latent(again, "density_again")
    g.save_latent(sde_sample(g, fresh, 3, first), "density_fresh")
    attribution(g, density, again, "density")
    ode = compose(g, shard_chain(g, (a, "a", 0.5), (b, "b", 0.5)), gate="density (ODE sampler)")
    ode_out = g.ksample(ode, seed=3, steps=STEPS, latent=latent)
    attribution(g, ode, ode_out, "ode")
    pruned = compose(g, shard_chain(g, (a, "a", 0.9), (b, "b", 0.1)), prune_eps=0.2)
    pruned_out = g.ksample(pruned, seed=3, steps=STEPS, latent=latent)
    g.save_latent(pruned_out, "pruned")
    attribution(g, pruned, pruned_out, "pruned")
    g.save_latent(g.ksample(a, seed=3, steps=STEPS, latent=latent), "a")
    return g.prompt()


STYLE_SHARDS = ("bold", "slanted", "inverted", "outlined")
DENSITY_STEPS = 12


def density_styles_graph() -> dict:
    """The training-free density gate (ODE form, euler) over the tiny world's style shards."""
    g = Graph()
    chain, loaders = None, []
    for s in STYLE_SHARDS:
        loaders.append(g.node("UnlearnKitLoadTinyWorld", unet=f"style/{s}"))
        chain = g.node(
            "UnlearnKitShard", model=loaders[-1], name=s, weight=1.0, **({"shards": chain} if chain else {})
        )
    model = compose(g, chain, gate="density (ODE sampler)")
    clip = loaders[0].out(1)
    latent = g.node(
        "KSampler",
        model=model,
        seed=1,
        steps=DENSITY_STEPS,
        cfg=4.0,
        sampler_name="euler",
        scheduler="normal",
        positive=g.node("CLIPTextEncode", clip=clip, text="a handwritten digit 3"),
        negative=g.node("CLIPTextEncode", clip=clip, text=""),
        latent_image=small_latent(g, batch=8),
        denoise=1.0,
    )
    g.node("UKTestSaveImage", images=g.node("VAEDecode", samples=latent, vae=loaders[0].out(2)), key="images")
    attribution(g, model, latent, "density")
    return g.prompt()


def train_graph() -> dict:
    """Train a gate for shards a, b, c on tiny-world style images, then sample with it."""
    g = Graph()
    world = g.node("UnlearnKitLoadTinyWorld", unet="base")
    a, b, c = g.tiny_model(A_SEED), g.tiny_model(B_SEED), g.tiny_model(C_SEED)
    shards = shard_chain(g, (a, "a", 1.0), (b, "b", 1.0), (c, "c", 1.0))
    images = {f"images_{k}": g.node("UnlearnKitTinyWorldImages", source=f"style/{s}", count=48, seed=0)
              for k, s in enumerate(("bold", "inverted", "outlined"), start=1)}
    gate = g.node(
        "UnlearnKitTrainShardGate",
        shards=shards,
        vae=world.out(2),
        filename="test_gate",
        steps=GATE_STEPS,
        batch_size=32,
        learning_rate=2e-3,
        seed=0,
        if_exists="retrain",
        **images,
    )
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    model = compose(g, shards, gate="classifier", shard_gate=gate)
    attribution(g, model, g.ksample(model, seed=3, steps=STEPS, latent=small_latent(g)), "classifier")
    return g.prompt()


def reuse_graph() -> dict:
    """Train Shard Gate again with if_exists 'reuse': the file from train_graph is loaded, not retrained."""
    g = Graph()
    world = g.node("UnlearnKitLoadTinyWorld", unet="base")
    shards = shard_chain(
        g, *[(g.tiny_model(seed), name, 1.0) for seed, name in ((A_SEED, "a"), (B_SEED, "b"), (C_SEED, "c"))]
    )
    images = {f"images_{k}": g.node("UnlearnKitTinyWorldImages", source=f"style/{s}", count=8, seed=1)
              for k, s in enumerate(("bold", "inverted", "outlined"), start=1)}
    gate = g.node(
        "UnlearnKitTrainShardGate",
        shards=shards,
        vae=world.out(2),
        filename="test_gate",
        steps=GATE_STEPS,
        batch_size=32,
        learning_rate=2e-3,
        seed=0,
        if_exists="reuse",
        **images,
    )
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    return g.prompt()


def prompted_graph() -> dict:
    """A prompt-reading gate: prompt_k of each shard's images and the empty prompt; sampling passes the
    prompt."""
    g = Graph()
    world = g.node("UnlearnKitLoadTinyWorld", unet="base")
    a, b = g.tiny_model(A_SEED), g.tiny_model(B_SEED)
    shards = shard_chain(g, (a, "a", 1.0), (b, "b", 1.0))
    gate = g.node(
        "UnlearnKitTrainShardGate",
        shards=shards,
        vae=world.out(2),
        filename="prompted_gate",
        steps=60,
        batch_size=16,
        learning_rate=2e-3,
        seed=0,
        if_exists="retrain",
        images_1=g.node("UnlearnKitTinyWorldImages", source="style/bold", count=16, seed=0),
        images_2=g.node("UnlearnKitTinyWorldImages", source="style/inverted", count=16, seed=0),
        prompt_1=g.conditioning(1),
        prompt_2=g.conditioning(2),
        empty_prompt=g.conditioning(3),
    )
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    model = compose(g, shards, gate="classifier", shard_gate=gate)
    attribution(g, model, g.ksample(model, seed=3, steps=STEPS, latent=small_latent(g)), "prompted")
    return g.prompt()


def load_graph() -> dict:
    """The trained file through Load Shard Gate; a forgotten shard is masked out of the gate."""
    g = Graph()
    gate = g.node("UnlearnKitLoadShardGate", gate_name="test_gate.safetensors")
    g.node("UKTestSaveText", text=gate.out(1), key="info")
    a, b, c = g.tiny_model(A_SEED), g.tiny_model(B_SEED), g.tiny_model(C_SEED)
    with_b = g.node("UnlearnKitShard", model=b, name="b", weight=1.0, shards=shard_chain(g, (a, "a", 1.0)),
                    source=str(SOURCE_FILE))  # any file stands in for shard b's checkpoint
    with_c = g.node("UnlearnKitShard", model=c, name="c", weight=1.0, shards=with_b)
    forget = g.node("UnlearnKitForgetShard", shards=with_c, name="b", reason="test request 42")
    g.node("UKTestSaveText", text=forget.out(1), key="record")
    g.node("UKTestCopyOutputFile", path="unlearnkit_forget_log.jsonl", key="log", after=forget.out(1))
    model = compose(g, forget, gate="classifier", shard_gate=gate)
    attribution(g, model, g.ksample(model, seed=3, steps=STEPS, latent=small_latent(g)), "forgotten")
    return g.prompt()


def forget_restrict_graph() -> dict:
    """Forgetting / restricting to one shard samples exactly that shard's model."""
    g = Graph()
    a, b = g.tiny_model(A_SEED), g.tiny_model(B_SEED)
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


def built(build) -> dict:
    g = Graph()
    build(g)
    return g.prompt()


def _gate(g: Graph) -> Ref:
    return g.node("UnlearnKitLoadShardGate", gate_name="test_gate.safetensors")


def _sample(g: Graph, model: Ref, size: int = 64) -> None:
    g.save_latent(
        g.ksample(model, seed=3, steps=2, latent=small_latent(g) if size == 64 else g.empty_latent(size)), "x"
    )


ERRORS = {
    "wrong_gate_names": (
        lambda g: _sample(
            g,
            compose(
                g,
                shard_chain(g, (g.tiny_model(1), "x", 1.0), (g.tiny_model(2), "y", 1.0)),
                "classifier",
                shard_gate=_gate(g),
            ),
        ),
        ["shard_gate", "trained for shards ['a', 'b', 'c']", "['x', 'y']"],
    ),
    "wrong_latent_shape": (
        lambda g: _sample(
            g,
            compose(
                g,
                shard_chain(g, (g.tiny_model(1), "a", 1.0), (g.tiny_model(2), "b", 1.0)),
                "classifier",
                shard_gate=_gate(g),
            ),
            size=128,
        ),
        ["gate", "trained on latents of shape (4, 8, 8)", "(4, 16, 16)"],
    ),
    "classifier_without_gate": (
        lambda g: _sample(g, compose(g, shard_chain(g, (g.tiny_model(1), "a", 1.0)), "classifier")),
        ["shard_gate", "needs a SHARD_GATE"],
    ),
    "corrupt_gate_file": (
        lambda g: g.node(
            "UKTestSaveText",
            text=g.node("UnlearnKitLoadShardGate", gate_name="garbage.safetensors").out(1),
            key="x",
        ),
        ["gate_name", "garbage.safetensors", "not a valid safetensors"],
    ),
    "other_format_file": (
        lambda g: g.node(
            "UKTestSaveText",
            text=g.node("UnlearnKitLoadShardGate", gate_name="other.safetensors").out(1),
            key="x",
        ),
        ["gate_name", "not an UnlearnKit shard gate"],
    ),
    "missing_gate_file": (
        lambda g: g.node(
            "UKTestSaveText",
            text=g.node("UnlearnKitLoadShardGate", gate_name="nope.safetensors").out(1),
            key="x",
        ),
        ["nope.safetensors"],
    ),
    "missing_images": (
        lambda g: g.node(
            "UKTestSaveText",
            key="x",
            text=g.node(
                "UnlearnKitTrainShardGate",
                shards=shard_chain(g, (g.tiny_model(1), "a", 1.0), (g.tiny_model(2), "b", 1.0)),
                vae=g.node("UnlearnKitLoadTinyWorld", unet="base").out(2),
                filename="never",
                steps=5,
                batch_size=8,
                learning_rate=1e-3,
                seed=0,
                if_exists="retrain",
                images_1=g.node("UnlearnKitTinyWorldImages", source="style/bold", count=8, seed=0),
            ).out(1),
        ),
        ["images_2", "no training images for shard 'b'"],
    ),
    "missing_prompt": (
        lambda g: g.node(
            "UKTestSaveText",
            key="x",
            text=g.node(
                "UnlearnKitTrainShardGate",
                shards=shard_chain(g, (g.tiny_model(1), "a", 1.0), (g.tiny_model(2), "b", 1.0)),
                vae=g.node("UnlearnKitLoadTinyWorld", unet="base").out(2),
                filename="never",
                steps=5,
                batch_size=8,
                learning_rate=1e-3,
                seed=0,
                if_exists="retrain",
                prompt_1=g.conditioning(1),
                empty_prompt=g.conditioning(3),
                images_1=g.node("UnlearnKitTinyWorldImages", source="style/bold", count=8, seed=0),
                images_2=g.node("UnlearnKitTinyWorldImages", source="style/inverted", count=8, seed=0),
            ).out(1),
        ),
        ["prompt_2", "shard 'b' has none"],
    ),
    "forget_unknown": (
        lambda g: g.node(
            "UKTestSaveText",
            key="x",
            text=g.node(
                "UnlearnKitForgetShard",
                shards=shard_chain(g, (g.tiny_model(1), "a", 1.0)),
                name="zz",
                reason="",
            ).out(1),
        ),
        ["name", "'zz'", "not in the set"],
    ),
    "restrict_refused": (
        lambda g: g.node(
            "UKTestSaveText",
            key="x",
            text=g.node(
                "UnlearnKitRestrictShards",
                shards=shard_chain(
                    g, (g.tiny_model(1), "a", 1.0, "public"), (g.tiny_model(2), "b", 1.0, "paid")
                ),
                rights="public",
                requested="b",
            ).out(1),
        ),
        ["shard 'b'", "access refused", "paid"],
    ),
    "attribution_of_plain_model": (
        lambda g: attribution(g, g.tiny_model(1), g.ksample(g.tiny_model(1), steps=1), "x"),
        ["model", "not made by Compose Shards"],
    ),
}


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    def write_bad_files(g: Graph) -> None:
        g.node("UKTestWriteOutputFile", path="shard_gates/garbage.safetensors", content="garbage")
        g.node("UKTestWriteOutputFile", path="shard_gates/other.safetensors", content="other safetensors")

    graphs = {
        "gated": gated_graph(),
        "train": train_graph(),
        "reuse": reuse_graph(),
        "prompted": prompted_graph(),
        "write_bad_files": built(write_bad_files),
        "load": load_graph(),
        "forget_restrict": forget_restrict_graph(),
    }
    graphs["density_styles"] = density_styles_graph()
    graphs.update({name: built(build) for name, (build, _) in ERRORS.items()})
    return graphs  # run in this order: files written by one graph are listed by the next


def report(r, key: str) -> dict:
    return json.loads((r.out_dir / f"{key}.txt").read_text())


def text(r, key: str) -> str:
    return (r.out_dir / f"{key}.txt").read_text()


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
    import torch

    from unlearnkit.tinyworld.styles import STYLES

    r = comfy_run["density_styles"].assert_ok()
    rep = report(r, "density")
    w = weights(rep)
    assert w.shape[:2] == (8, DENSITY_STEPS) and w[:, -1].max(-1).min() > 0.9
    x = torch.from_numpy(r.latent("images")).permute(0, 3, 1, 2).float() * 2 - 1
    with torch.no_grad():
        styles = [STYLES[i] for i in store.load_judge("style")(x).argmax(1).tolist()]
    matches = sum(t == s for t, s in zip(rep["top_shard"], styles))
    assert matches >= 6, f"density attribution {rep['top_shard']} vs style judge {styles}"


def test_trained_gate_is_used_and_written(comfy_run):
    r = comfy_run["train"].assert_ok()
    info = text(r, "info")
    assert "test_gate.safetensors" in info and "['a', 'b', 'c']" in info and "(4, 8, 8)" in info
    w = weights(report(r, "classifier"))
    assert w.shape == (2, STEPS, 3)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.abs(w[:, 0] - 1 / 3).max() < 0.3, (
        f"near-uniform weights expected at the noisiest step, got {w[:, 0]}"
    )


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
    assert (
        record["shard"] == "b" and record["remaining"] == ["a", "c"] and record["reason"] == "test request 42"
    )
    assert (
        record["when"]
        and record["source"] == str(SOURCE_FILE)
        and record["sha256"] == io.file_sha256(SOURCE_FILE)
    )
    log = [json.loads(line) for line in text(r, "log").splitlines()]
    assert record in log
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
