"""open_clip and transformers CLIP adapters on tiny random models, end to end through a patch."""
import numpy as np
import pytest
import torch

from unlearnkit.unlearn.evaluation import forget_similarity, prepare_pairs
from unlearnkit.unlearn.gradients import forget_loss, layer_gradients
from unlearnkit.unlearn.pareto import pareto_front
from unlearnkit.unlearn.patches import apply_patch, remove_patch
from unlearnkit.unlearn.slug import SlugConfig, run_slug
from unlearnkit.unlearn.step_search import StepSearchConfig
from unlearnkit.unlearn.targets import HFClipAdapter, OpenClipAdapter

CASES = [("open_clip", "both"), ("open_clip", "text"), ("hf", "text"), ("hf", "image")]


@pytest.fixture
def make_adapter(make_open_clip, make_hf_clip):
    def make(kind, tower):
        return (
            OpenClipAdapter(make_open_clip(), tower)
            if kind == "open_clip"
            else HFClipAdapter(make_hf_clip(), tower)
        )

    return make


def test_open_clip_adapter_basics(make_adapter):
    enc = make_adapter("open_clip", "both")
    assert enc.image_size == (16, 16)
    tokens = enc.prepare_texts(["a photo of a cat", "a dog"], "t")
    assert tokens.shape == (2, 16)
    assert enc.encode_text(tokens).shape == (2, 16) and enc.encode_image(torch.zeros(2, 3, 16, 16)).shape == (
        2,
        16,
    )
    assert len(enc.named_layers()) == 16
    text = make_adapter("open_clip", "text").named_layers()
    assert len(text) == 8 and all(n.startswith("transformer.resblocks.") for n, _ in text)


def test_hf_adapter_basics(make_adapter):
    enc = make_adapter("hf", "both")
    assert enc.image_size == (16, 16) and enc.image_channels == 3
    tokens = enc.prepare_texts("a photo of a cat", "t", count=3)
    assert enc.encode_text(tokens).shape == (3, 16) and enc.encode_image(torch.zeros(3, 3, 16, 16)).shape == (
        3,
        16,
    )
    names = [n for n, _ in enc.named_layers()]
    assert len(names) == 24  # 2 towers x 2 layers x (q, k, v, out, fc1, fc2)
    assert not [n for n in names if "projection" in n or "embed" in n or "norm" in n]
    text = [n for n, _ in make_adapter("hf", "text").named_layers()]
    assert len(text) == 12 and all(n.startswith("text_model.encoder.layers.") for n in text)


@pytest.mark.parametrize("kind, tower", CASES[::2])
def test_scores_come_from_the_real_gradients(make_adapter, make_batches, kind, tower):
    enc = make_adapter(kind, tower)
    forget, retain = make_batches((16, 16))
    grads = layer_gradients(enc, forget, retain, progress=False)
    name = grads.names[-1]
    images = enc.prepare_images(forget[0][0], "f")
    loss = forget_loss(
        enc.encode_image(images), enc.encode_text(enc.prepare_texts(forget[0][1], "t", count=4))
    )
    (manual,) = torch.autograd.grad(loss, [dict(enc.model.named_parameters())[name]])
    assert torch.allclose(grads.forget[name], manual, atol=1e-6)
    assert grads.forget[name].norm() > 0 and grads.retain[name].norm() > 0


@pytest.mark.parametrize("kind, tower", CASES)
def test_slug_edit_lowers_forget_similarity_in_one_layer(make_adapter, make_batches, kind, tower):
    enc = make_adapter(kind, tower)
    forget, retain = make_batches((16, 16))
    snap = {k: v.clone() for k, v in enc.model.state_dict().items()}
    result = run_slug(enc, forget, retain, SlugConfig(progress=False, search=StepSearchConfig(max_evals=5)))
    assert all(
        torch.equal(snap[k], v) for k, v in enc.model.state_dict().items()
    )  # run_slug leaves the model alone
    assert enc.in_tower(result.layer) and result.layer in result.scores.front_names
    s = result.scores
    for stack in {n.split(".layers.")[0].split(".resblocks.")[0] for n in s.names}:  # one front per tower
        members = np.array([i for i, n in enumerate(s.names) if n.startswith(stack + ".")])
        own = set(members[pareto_front(s.importance[members], s.alignment[members])].tolist())
        assert own == {i for i in s.front.tolist() if i in set(members.tolist())}
    assert result.search.evals <= 5

    pairs = prepare_pairs(enc, forget, "forget")
    before = forget_similarity(enc, pairs)
    patch = result.to_patch(enc, "Elon Musk")
    apply_patch(enc.model, patch)
    after = forget_similarity(enc, pairs)
    assert after < before - 1e-3
    assert after == pytest.approx(result.similarity_after, abs=1e-5)
    changed = [k for k, v in enc.model.state_dict().items() if not torch.equal(snap[k], v)]
    assert changed == [result.layer]
    remove_patch(enc.model, patch)
    assert all(torch.equal(snap[k], v) for k, v in enc.model.state_dict().items())


def test_text_tower_patch_changes_the_sd_text_encoder(make_adapter, make_batches):
    from transformers import CLIPTextModel

    enc = make_adapter("hf", "text")
    forget, retain = make_batches((16, 16))
    result = run_slug(enc, forget, retain, SlugConfig(progress=False, search=StepSearchConfig(max_evals=3)))
    te = CLIPTextModel(enc.model.config.text_config).eval()
    te.load_state_dict(enc.model.text_model.state_dict())
    tokens = enc.prepare_texts("a photo of Elon Musk", "t")
    with torch.no_grad():
        before = te(input_ids=tokens).last_hidden_state
        apply_patch(te, result.to_patch(enc, "Elon Musk"))
        after = te(input_ids=tokens).last_hidden_state
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("eos", [49407, 2])
def test_hf_text_features_unchanged_by_cutting_padding(make_hf_clip, eos):
    from unlearnkit.unlearn.targets import pooled_length

    model = make_hf_clip()
    model.config.text_config.eos_token_id = eos
    getattr(model.text_model, "config", model.config.text_config).eos_token_id = eos
    if hasattr(model.text_model, "eos_token_id"):
        model.text_model.eos_token_id = eos
    tokens = torch.tensor([[49406, 320, 1929, 49407, 49407, 49407, 49407, 49407],
                           [49406, 320, 1929, 539, 320, 2368, 49407, 49407]])
    assert pooled_length(tokens, eos) == 7
    enc = HFClipAdapter(model)
    with torch.no_grad():
        full = model.get_text_features(input_ids=tokens)
        full = full if isinstance(full, torch.Tensor) else full.pooler_output
        assert torch.allclose(enc.encode_text(tokens), full, atol=1e-5)
    assert pooled_length(torch.tensor([[49406, 320, 0, 0]]), 49407) == 1  # no EOS: transformers pools at 0
