"""Forget/retain losses and the one-pass per-layer gradients."""
import pytest
import torch

from unlearnkit.unlearn.gradients import contrastive_loss, forget_loss, layer_gradients


def test_forget_loss_is_one_minus_cosine():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert forget_loss(x, 3 * x).item() == pytest.approx(0.0)
    assert forget_loss(x, -x).item() == pytest.approx(2.0)
    assert forget_loss(x, x.flip(1)).item() == pytest.approx(1.0)


def test_contrastive_loss_matches_open_clip():
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    scale = torch.tensor(7.0)
    ours = contrastive_loss(img, txt, scale)
    ref = ClipLoss()(
        torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1), scale
    )
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def _manual_grad(toy, batch, kind, name):
    model = toy.model
    model.zero_grad()
    images = toy.prepare_images(batch[0], "x")
    tokens = toy.prepare_texts(batch[1], "t", count=images.shape[0])
    img, txt = toy.encode_image(images), toy.encode_text(tokens)
    loss = forget_loss(img, txt) if kind == "forget" else contrastive_loss(img, txt, toy.logit_scale())
    loss.backward()
    grad = dict(model.named_parameters())[name].grad.clone()
    model.zero_grad(set_to_none=True)
    return grad


def test_gradients_are_batch_averages_of_the_real_gradients(toy, make_batches):
    forget, retain = make_batches((8, 8), n_batches=2)
    grads = layer_gradients(toy, forget, retain, progress=False)
    assert grads.names == [n for n, _ in toy.named_layers()]
    for name in ("image_in.weight", "text_out.weight"):
        want_f = (
            _manual_grad(toy, forget[0], "forget", name) + _manual_grad(toy, forget[1], "forget", name)
        ) / 2
        want_r = (
            _manual_grad(toy, retain[0], "retain", name) + _manual_grad(toy, retain[1], "retain", name)
        ) / 2
        assert torch.allclose(grads.forget[name], want_f, atol=1e-6)
        assert torch.allclose(grads.retain[name], want_r, atol=1e-6)
    assert grads.forget_loss > 0 and grads.retain_loss > 0


def test_model_state_is_left_alone(toy, make_batches):
    forget, retain = make_batches((8, 8))
    toy.model.train()
    toy.model.text_in.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    layer_gradients(toy, forget, retain, progress=False)
    assert (
        toy.model.training
        and not toy.model.text_in.weight.requires_grad
        and toy.model.image_in.weight.requires_grad
    )
    assert all(p.grad is None for p in toy.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in toy.model.state_dict().items())


def test_layer_subset_and_unknown_layer(toy, make_batches):
    forget, retain = make_batches((8, 8))
    grads = layer_gradients(toy, forget, retain, layers=["text_out.weight"], progress=False)
    assert list(grads.forget) == ["text_out.weight"]
    with pytest.raises(ValueError, match="unknown layer.*valid names include"):
        layer_gradients(toy, forget, retain, layers=["nope.weight"], progress=False)


def test_bad_batches(toy, make_batches):
    forget, retain = make_batches((8, 8))
    with pytest.raises(ValueError, match="forget: no batches"):
        layer_gradients(toy, [], retain, progress=False)
    with pytest.raises(ValueError, match="retain batch 0.*>= 2 pairs"):
        layer_gradients(toy, forget, [(retain[0][0][:1], "a dog")], progress=False)
    with pytest.raises(ValueError, match="forget batch 0 images: no images"):
        layer_gradients(toy, [(torch.zeros(0, 3, 8, 8), "x")], retain, progress=False)
    with pytest.raises(ValueError, match=r"forget batch 0: expected \(images, texts\)"):
        layer_gradients(toy, [forget[0][0]], retain, progress=False)


def test_nan_gradient_names_the_layer(toy, make_batches):
    forget, retain = make_batches((8, 8))
    toy.model.text_out.weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(ValueError, match="forget gradient of layer 'text_out.weight' contains NaN"):
        layer_gradients(toy, forget, retain, progress=False)


def test_nan_weights_give_a_clear_error(toy, make_batches):
    forget, retain = make_batches((8, 8))
    with torch.no_grad():
        toy.model.image_in.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer_gradients(toy, forget, retain, progress=False)
