"""The one-step single-layer SLUG update: its sign lowers the forget similarity, and it is undone exactly."""
import pytest
import torch

from unlearnkit.unlearn.evaluation import forget_similarity, prepare_pairs
from unlearnkit.unlearn.gradients import layer_gradients
from unlearnkit.unlearn.layer_step import get_layer, slug_delta, stepped_layer


def test_delta_is_step_times_forget_gradient():
    g = torch.tensor([[1.0, -2.0]])
    assert torch.equal(slug_delta(g, 0.5), torch.tensor([[0.5, -1.0]]))
    with pytest.raises(ValueError, match="step"):
        slug_delta(g, -1.0)


@pytest.mark.parametrize("layer", ["image_in.weight", "text_out.weight"])
def test_step_lowers_forget_similarity_and_changes_one_layer(toy, make_batches, layer):
    forget, retain = make_batches((8, 8))
    pairs = prepare_pairs(toy, forget, "forget")
    grads = layer_gradients(toy, forget, retain, progress=False)
    before_sim = forget_similarity(toy, pairs)
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    with stepped_layer(toy.model, layer, grads.forget[layer], 0.05):
        assert forget_similarity(toy, pairs) < before_sim - 1e-4
        changed = [k for k, v in toy.model.state_dict().items() if not torch.equal(before[k], v)]
        assert changed == [layer]
    assert all(torch.equal(before[k], v) for k, v in toy.model.state_dict().items())


def test_restores_exactly_after_an_exception(toy):
    w = toy.model.text_in.weight.detach().clone()
    with pytest.raises(RuntimeError), stepped_layer(toy.model, "text_in.weight", torch.ones_like(w), 3.0):
        raise RuntimeError("evaluation failed")
    assert torch.equal(toy.model.text_in.weight, w)


def test_bad_layer_and_shape(toy):
    with pytest.raises(ValueError, match="'text_in.wieght' not in the model.*text_in.weight"):
        get_layer(toy.model, "text_in.wieght")
    with pytest.raises(ValueError, match="shape"):
        with stepped_layer(toy.model, "text_in.weight", torch.ones(3, 3), 1.0):
            pass
