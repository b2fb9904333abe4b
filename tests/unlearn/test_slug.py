"""run_slug end to end on the toy encoder pair."""
import pytest
import torch

from unlearnkit.unlearn.slug import SlugConfig, run_slug
from unlearnkit.unlearn.step_search import StepSearchConfig


def test_run_slug_result_and_model_untouched(toy, make_batches):
    forget, retain = make_batches((8, 8), n_batches=2)
    snap = {k: v.clone() for k, v in toy.model.state_dict().items()}
    r = run_slug(toy, forget, retain, SlugConfig(progress=False), keep_gradients=True)
    assert all(torch.equal(snap[k], v) for k, v in toy.model.state_dict().items())
    assert r.layer in r.scores.front_names and r.gradients is not None
    assert torch.equal(r.delta, r.gradients.forget[r.layer] * r.step)
    assert r.similarity_after < r.similarity_before
    m = r.metrics()
    assert m["forget_before"] == r.search.baseline[0] and m["search_evals"] == r.search.evals <= 10
    assert set(m) >= {"forget_after", "retain_after", "importance", "alignment", "similarity_after"}


def test_custom_metrics_drive_the_search(toy, make_batches):
    forget, retain = make_batches((8, 8))
    calls = []
    w0 = toy.model.text_out.weight.detach().clone()

    def metrics():  # "forgotten" once the edited layer moved far enough from its original
        moved = float((toy.model.text_out.weight.detach() - w0).norm() / w0.norm())
        calls.append(moved)
        return (1.0 if moved < 0.2 else 0.0), 1.0

    cfg = SlugConfig(layer="text_out.weight", progress=False, search=StepSearchConfig(max_evals=8))
    r = run_slug(toy, forget, retain, cfg, metrics=metrics)
    assert r.layer == "text_out.weight" and r.search.success
    assert len(calls) == r.search.evals <= 8 and calls[0] == 0.0
    assert float(r.delta.norm() / w0.norm()) >= 0.2


def test_unknown_layer_is_refused_before_any_gradient(toy, make_batches):
    forget, retain = make_batches((8, 8))
    with pytest.raises(ValueError, match=r"'text_out\.wieght'.*did you mean.*text_out\.weight"):
        run_slug(toy, forget, retain, SlugConfig(layer="text_out.wieght", progress=False))
    with pytest.raises(ValueError, match="is not a candidate"):  # exists, but is not an editable layer
        run_slug(toy, forget, retain, SlugConfig(layer="text_out.bias", progress=False))


def test_bad_forget_inputs(toy, make_batches):
    _, retain = make_batches((8, 8))
    with pytest.raises(ValueError, match="forget batch 0 images: no images"):
        run_slug(toy, [([], "x")], retain, SlugConfig(progress=False))
    with pytest.raises(ValueError, match=r"forget batch 0 texts\[0\]: empty text"):
        run_slug(toy, [(torch.zeros(2, 3, 8, 8), " ")], retain, SlugConfig(progress=False))
    with pytest.raises(ValueError, match="forget batch 0 images: expected 8x8"):
        run_slug(toy, [(torch.zeros(2, 3, 16, 16), "x")], retain, SlugConfig(progress=False))


def _hf_batches(n=6):
    g = torch.Generator().manual_seed(3)
    forget = [(torch.randn(4, 3, 16, 16, generator=g), "a photo of Elon Musk")]
    retain = [
        (
            torch.randn(n, 3, 16, 16, generator=g),
            ["a dog", "a cat", "a car", "a tree", "a house", "a boat"][:n],
        )
    ]
    return forget, retain


def test_exclude_last_blocks_keeps_slug_off_the_last_block(make_hf_clip):
    from unlearnkit.unlearn.targets import HFClipAdapter

    enc = HFClipAdapter(make_hf_clip(), tower="text")
    forget, retain = _hf_batches()
    cfg = SlugConfig(progress=False, exclude_last_blocks=1, search=StepSearchConfig(max_evals=3))
    r = run_slug(enc, forget, retain, cfg)
    assert all(".layers.0." in n for n in r.scores.names) and r.layer.startswith(
        "text_model.encoder.layers.0."
    )
    with pytest.raises(ValueError, match="in the last 1 block"):
        run_slug(enc, forget, retain, SlugConfig(layer="text_model.encoder.layers.1.mlp.fc2.weight",
                                                 exclude_last_blocks=1, progress=False))
    with pytest.raises(ValueError, match="leaves no candidate"):
        run_slug(enc, forget, retain, SlugConfig(exclude_last_blocks=2, progress=False))
    with pytest.raises(ValueError, match=">= 0"):
        SlugConfig(exclude_last_blocks=-1)


def test_to_patch_stores_the_layers_dtype(make_hf_clip):
    from unlearnkit.unlearn.targets import HFClipAdapter

    model = make_hf_clip()
    enc = HFClipAdapter(model, tower="text")
    forget, retain = _hf_batches()
    r = run_slug(enc, forget, retain, SlugConfig(progress=False, search=StepSearchConfig(max_evals=3)))
    assert r.to_patch(enc, "Elon Musk").delta.dtype == torch.float32
    half = r.to_patch(enc, "Elon Musk", dtype=torch.float16)
    assert half.delta.dtype == torch.float16 and torch.allclose(
        half.delta.float(), r.delta, rtol=1e-3, atol=1e-6
    )
    model.half()  # an fp16 model gets fp16 patches by default
    assert r.to_patch(enc, "Elon Musk").delta.dtype == torch.float16


def _only_layer_forgets(enc, good):
    """metrics(): forgotten only once ``good`` moved; utility drops when any other layer moved a lot."""
    snap = {n: p.detach().clone() for n, p in enc.model.named_parameters()}
    calls = []

    def metrics():
        moved = {
            n: float((p.detach() - snap[n]).norm() / snap[n].norm()) for n, p in enc.model.named_parameters()
        }
        calls.append(moved)
        forget = 0.0 if moved[good] > 0.05 else 1.0
        retain = 0.0 if any(v > 0.5 for n, v in moved.items() if n != good) else 1.0
        return forget, retain

    return metrics, calls


def test_search_moves_on_to_the_next_candidate_until_one_meets_both_targets(toy, make_batches):
    forget, retain = make_batches((8, 8))
    names = [n for n, _ in toy.named_layers()]
    probe = run_slug(
        toy, forget, retain, SlugConfig(progress=False, max_layers=1, search=StepSearchConfig(max_evals=2))
    )
    order = [probe.scores.names[i] for i in probe.scores.candidate_order()]
    good = order[2]
    metrics, calls = _only_layer_forgets(toy, good)
    r = run_slug(toy, forget, retain, SlugConfig(progress=False, max_layers=len(names)), metrics=metrics)
    assert r.layer == good and r.search.success and [n for n, _ in r.tried] == order[:3]
    assert sum(1 for c in calls if max(c.values()) == 0) == 1  # the unedited baseline is measured once
    assert r.metrics()["layers_tried"] == 3 and r.metrics()["search_evals"] == len(calls)
    metrics, _ = _only_layer_forgets(toy, good)
    capped = run_slug(toy, forget, retain, SlugConfig(progress=False, max_layers=2), metrics=metrics)
    assert not capped.search.success and len(capped.tried) == 2 and capped.layer in order[:2]
    with pytest.raises(ValueError, match="max_layers"):
        SlugConfig(max_layers=0)
