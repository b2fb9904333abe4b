"""Erase Concept (nodes/erase/erase_nodes.py) in real ComfyUI, 2024-03 and 0.3.75.

Tiny world (SD1.x): a run cancelled half-way (the fixture presses Cancel when the progress bar reaches
the step) leaves a checkpoint and no encoder file; re-queuing resumes and ends with exactly the weights
of an uninterrupted run under another name; the erased CLIP equals Swap Text Encoder on the saved file
and differs from the input, which stays untouched; re-queuing a finished run reuses its file. Tiny random
SD2.x (v-prediction, OpenCLIP-H) and SDXL (L + G, pooled + size conditioning) models from ComfyUI's own
classes train too, and Swap Text Encoder loads every file saved. Bad input is refused naming the input.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from comfy_harness import REPO_ROOT, Graph
from safetensors.torch import load_file
from suite import suite_fixtures

CONCEPT = "a handwritten digit in bold style"
RETAIN = "\n".join(["a handwritten digit 3 in slanted style", "a handwritten digit 5",
                    "a handwritten digit 8 in outlined style"])
ITERS, STOP_AT = 6, 3
WORLD_PER_ENGINE = True  # the runs write encoders into the world's folder: each engine gets its own


def build_world(root: Path) -> dict:
    out = root / "text_encoders"
    out.mkdir()
    (out / "taken.safetensors").write_bytes(b"not ours")
    return {"out": out, "folders": f"text_encoders={out};clip={out}"}


def erase(g: Graph, model, clip, name: str, **kw):
    settings = {"concept": CONCEPT, "retain": RETAIN, "encoder_name": name, "iterations": ITERS,
                "attack": "pgd", "layers": "all", "towers": "all", "learning_rate": 1e-3, "resolution": 64,
                "seed": 0, **kw}
    return g.node("UnlearnKitEraseConcept", model=model, clip=clip, **settings)


def tiny_graph(name: str, stop_at: int = 0, save: bool = True) -> dict:
    g = Graph()
    world = g.node("UnlearnKitLoadTinyWorld", unet="paragon")
    clip = world.out(1)
    if stop_at:
        clip = g.node("UKTestInterruptAt", clip=clip, step=stop_at)
    er = erase(g, world, clip, name)
    if save:
        g.node("UKTestSaveValue", key="run", text=er.out(2), images=er.out(1))
        after = g.node("UKTestEncode", clip=er.out(0), text=CONCEPT, key="erased")
        g.node("UKTestEncode", clip=world.out(1), text=CONCEPT, key="input_after", after=after)
    return g.prompt()


def swap_graph(name: str) -> dict:
    g = Graph()
    world = g.node("UnlearnKitLoadTinyWorld", unet="paragon")
    swapped = g.node("UnlearnKitSwapTextEncoder", clip=world.out(1), encoder_name=name)
    g.node("UKTestEncode", clip=swapped, text=CONCEPT, key="swapped")
    return g.prompt()


def family_graph(family: str, name: str, towers: str = "all") -> dict:
    g = Graph()
    fam = g.node("UKTestFamilyModel", family=family, context_dim=0)
    er = erase(g, fam, fam.out(1), name, towers=towers, iterations=2, resolution=64)
    g.node("UKTestSaveValue", key="run", text=er.out(2))
    g.node("UKTestEncode", clip=er.out(0), text=CONCEPT, key="erased")
    g.node("UKTestEncode", clip=fam.out(1), text=CONCEPT, key="input")
    return g.prompt()


def family_swap_graph(family: str, name: str) -> dict:
    """Swap Text Encoder on every file the family's run saved (a later graph: its list is read then)."""
    g = Graph()
    fam = g.node("UKTestFamilyModel", family=family, context_dim=0)
    files = [f"{name}.safetensors"] if family == "sd2" else [f"{name}_clip_l.safetensors",
                                                              f"{name}_clip_g.safetensors"]
    clip = fam.out(1)
    for file in files:
        clip = g.node("UnlearnKitSwapTextEncoder", clip=clip, encoder_name=file)
    g.node("UKTestEncode", clip=clip, text=CONCEPT, key="swapped")
    return g.prompt()


def bad_graph(**kw) -> dict:
    g = Graph()
    if kw.pop("family_width", None):
        fam = g.node("UKTestFamilyModel", family="sd2", context_dim=40)
        model, clip = fam, fam.out(1)
    else:
        world = g.node("UnlearnKitLoadTinyWorld", unet="paragon")
        model, clip = world, world.out(1)
    erase(g, model, clip, kw.pop("name", "never"), **kw)
    return g.prompt()


WORKFLOW = REPO_ROOT / "example_workflows" / "Erase a style with AdvUnlearn.json"


def workflow_graph() -> dict:
    """The example as saved, plus an image saver on each VAE Decode (original, erased)."""
    wf = json.loads(WORKFLOW.read_text())
    decodes = sorted((n for n in wf["nodes"] if n["type"] == "VAEDecode"), key=lambda n: n["id"])
    for source, key in zip(decodes, ("original", "erased")):
        node_id, link_id = max(n["id"] for n in wf["nodes"]) + 1, max(lk[0] for lk in wf["links"]) + 1
        wf["nodes"].append({"id": node_id, "type": "UKTestSaveImage", "pos": [0, 0], "size": [200, 60],
                            "flags": {}, "order": node_id, "mode": 0, "outputs": [], "properties": {},
                            "inputs": [{"name": "images", "type": "IMAGE", "link": link_id}],
                            "widgets_values": [key]})
        source["outputs"][0]["links"].append(link_id)
        wf["links"].append([link_id, source["id"], 0, node_id, 0, "IMAGE"])
    return wf


BAD = {"bad_concept": {"concept": "  \n "}, "bad_retain": {"retain": ""}, "bad_iterations": {"iterations": 0},
       "bad_name": {"name": "taken"}, "bad_width": {"family_width": True}}


def suite_graphs(world: dict) -> dict:
    graphs = {"interrupted": tiny_graph("bold_a", STOP_AT, save=False), "resumed": tiny_graph("bold_a"),
              "straight": tiny_graph("bold_b"), "requeued": tiny_graph("bold_a"), "swap": swap_graph(
                  "bold_a.safetensors"), "sd2": family_graph("sd2", "fam_sd2"),
              "sdxl": family_graph("sdxl", "fam_sdxl"), "sd2_swap": family_swap_graph("sd2", "fam_sd2"),
              "sdxl_swap": family_swap_graph("sdxl", "fam_sdxl")}
    graphs.update({k: bad_graph(**v) for k, v in BAD.items()})
    graphs["workflow"] = workflow_graph()
    return graphs


world, comfy_run = suite_fixtures(__name__)


def saved(run, graph: str) -> list[tuple[dict, dict]]:
    """(tensors, metadata) of each file the graph's Erase Concept node returned."""
    from safetensors import safe_open

    out = []
    for path in run[graph].assert_ok().record("run")["text"].splitlines():
        with safe_open(path, "pt") as f:
            out.append((load_file(path), f.metadata()))
    return out


def test_cancel_leaves_a_checkpoint_and_requeue_resumes_to_the_uninterrupted_result(comfy_run):
    comfy_run["interrupted"].assert_failed()  # cancelled: nothing after the node ran
    assert "Interrupt" in comfy_run.log or not comfy_run["interrupted"].errors
    (resumed, meta), = saved(comfy_run, "resumed")
    (straight, meta_b), = saved(comfy_run, "straight")
    rec, rec_b = json.loads(meta["unlearnkit.erase.record"]), json.loads(meta_b["unlearnkit.erase.record"])
    assert rec["resumed_from"] == STOP_AT and rec_b["resumed_from"] == 0  # no file was left by the cancel
    assert rec["losses"] == rec_b["losses"] and len(rec["losses"]) == ITERS
    assert resumed.keys() == straight.keys()
    for key in resumed:
        assert np.array_equal(resumed[key].float().numpy(), straight[key].float().numpy()), key


def test_erased_clip_is_the_saved_encoder_and_the_input_is_untouched(comfy_run):
    run = comfy_run["resumed"].assert_ok()
    erased, input_after = run.latent("erased"), run.latent("input_after")
    swapped = comfy_run["swap"].assert_ok().latent("swapped")
    assert np.abs(erased - swapped).max() == 0.0
    assert np.abs(erased - input_after).max() > 1e-3
    plot = run.latent("run")
    assert plot.ndim == 4 and plot.shape[-1] == 3 and plot.std() > 0.01  # the loss / attack plot IMAGE


def test_requeued_run_reuses_its_file(comfy_run):
    (first, _), = saved(comfy_run, "resumed")
    (again, meta), = saved(comfy_run, "requeued")
    # the same file, not retrained
    assert json.loads(meta["unlearnkit.erase.record"])["resumed_from"] == STOP_AT
    assert all(np.array_equal(first[k].numpy(), again[k].numpy()) for k in first)


def test_sd2_and_sdxl_train_and_swap_back(comfy_run):
    for family, towers in (("sd2", ["clip_h"]), ("sdxl", ["clip_l", "clip_g"])):
        run = comfy_run[family].assert_ok()
        files = saved(comfy_run, family)
        assert [m["unlearnkit.erase.tower"] for _, m in files] == towers, family
        if family == "sdxl":
            assert "text_projection.weight" in files[1][0]
        erased, before = run.latent("erased"), run.latent("input")
        swapped = comfy_run[f"{family}_swap"].assert_ok().latent("swapped")
        assert np.abs(erased - swapped).max() == 0.0, family
        assert np.abs(erased - before).max() > 0.0, family


def test_bad_input_is_refused_naming_the_input(comfy_run, world):
    expected = {"bad_concept": "concept", "bad_retain": "retain", "bad_iterations": "iterations",
                "bad_name": "encoder_name", "bad_width": "model: cross-attends to width 40"}
    for graph, fragment in expected.items():
        comfy_run[graph].assert_failed(fragment)
    assert (world["out"] / "taken.safetensors").read_bytes() == b"not ours"
    assert not (world["out"] / "never.safetensors").exists()


def test_example_workflow_erases_bold_style(comfy_run):
    from unlearnkit.tinyworld import store
    from unlearnkit.tinyworld.styles import STYLES

    run = comfy_run["workflow"].assert_ok()
    bold = STYLES.index("bold")
    rates, digits = {}, {}
    for key in ("original", "erased"):
        images = torch.from_numpy(run.latent(key)).permute(0, 3, 1, 2).float() * 2 - 1
        with torch.no_grad():
            styles = store.load_judge("style")(images).argmax(1)
            digits[key] = float((store.load_judge("digit")(images).argmax(1) == 3).float().mean())
        rates[key] = float((styles == bold).float().mean())
    assert rates["original"] >= 0.75, rates
    assert rates["erased"] <= rates["original"] - 0.5, rates  # "bold" erased …
    assert digits["erased"] >= 0.75, digits  # … the prompted digit kept
