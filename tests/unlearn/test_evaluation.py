"""Default zero-shot metrics and the evaluate(step) callback."""
import pytest
import torch

from unlearnkit.unlearn.evaluation import make_evaluator, prepare_pairs, recognition, zero_shot_metrics


def test_recognition_counts_top1_hits():
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    images = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.0, 0.2]])
    assert recognition(images, classes, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


class Fixed:
    """Encoders whose features are looked up from the images' first pixel and the tokens' second id."""

    def __init__(self):
        self.model = torch.nn.Linear(1, 1)

    def encode_image(self, images):
        return torch.nn.functional.one_hot(images[:, 0, 0, 0].long(), 4).float()

    def encode_text(self, tokens):
        return torch.nn.functional.one_hot(tokens[:, 1] % 4, 4).float()


def test_zero_shot_metrics_use_distinct_texts_as_classes():
    enc = Fixed()
    ids = lambda *xs: torch.tensor([[49406, x, 49407] for x in xs])  # noqa: E731
    img = lambda *xs: torch.tensor(xs, dtype=torch.float).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)  # noqa: E731
    forget = [(img(0, 0, 1), ids(0, 0, 0))]  # two of three forget images look like class 0
    retain = [(img(1, 2), ids(1, 2)), (img(3, 0), ids(3, 3))]  # three of four retain images right
    assert zero_shot_metrics(enc, forget, retain) == (pytest.approx(2 / 3), pytest.approx(3 / 4))


def test_evaluator_applies_step_temporarily(toy, make_batches):
    forget, retain = make_batches((8, 8))
    fp, rp = prepare_pairs(toy, forget, "forget"), prepare_pairs(toy, retain, "retain")
    seen = []
    w = toy.model.text_out.weight.detach().clone()
    grad = torch.ones_like(w)

    def metrics():
        seen.append((toy.model.training, toy.model.text_out.weight.detach().clone()))
        return zero_shot_metrics(toy, fp, rp)

    toy.model.train()
    evaluate = make_evaluator(toy, "text_out.weight", grad, metrics)
    f, r = evaluate(0.5)
    assert seen[0][0] is False and torch.allclose(seen[0][1], w + 0.5)
    assert toy.model.training and torch.equal(toy.model.text_out.weight, w)
    with torch.no_grad():
        toy.model.text_out.weight += 0.5  # the same step by hand: the metrics it gives
    toy.model.eval()
    assert (f, r) == zero_shot_metrics(toy, fp, rp)


def test_prepare_pairs_errors(toy):
    with pytest.raises(ValueError, match="retain: no batches"):
        prepare_pairs(toy, [], "retain")
    with pytest.raises(ValueError, match=r"forget batch 0 texts\[0\]: empty text"):
        prepare_pairs(toy, [(torch.zeros(2, 3, 8, 8), "")], "forget")


def _counting(adapter):
    calls = {"image": 0, "text": 0}
    enc_i, enc_t = adapter.encode_image, adapter.encode_text

    def image(x):
        calls["image"] += 1
        return enc_i(x)

    def text(t):
        calls["text"] += 1
        return enc_t(t)

    adapter.encode_image, adapter.encode_text = image, text
    return calls


@pytest.mark.parametrize("tower,cached", [("text", "image"), ("image", "text"), ("both", None)])
def test_class_metrics_split_forget_and_retain_and_cache_the_frozen_tower(make_hf_clip, tower, cached):
    from unlearnkit.unlearn.evaluation import class_metrics
    from unlearnkit.unlearn.targets import HFClipAdapter

    enc = HFClipAdapter(make_hf_clip(), tower=tower)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(12, 3, 16, 16, generator=g), torch.tensor([0, 1, 2] * 4)
    classes = enc.tokenize(["a dog", "a cat", "a car"])
    with torch.no_grad():  # reference: classify by hand
        img = torch.nn.functional.normalize(enc.encode_image(images), dim=-1)
        txt = torch.nn.functional.normalize(enc.encode_text(classes), dim=-1)
    hit = ((img @ txt.T).argmax(1) == labels).float()
    metrics = class_metrics(enc, images, labels, classes, [1])
    calls = _counting(enc)
    first = metrics()
    assert first == pytest.approx((float(hit[labels == 1].mean()), float(hit[labels != 1].mean())))
    calls.update(image=0, text=0)
    assert metrics() == pytest.approx(first)
    if cached:
        assert calls[cached] == 0 and calls["text" if cached == "image" else "image"] == 1
    else:
        assert calls == {"image": 1, "text": 1}


def test_class_metrics_checks_labels(make_hf_clip):
    from unlearnkit.unlearn.evaluation import class_metrics
    from unlearnkit.unlearn.targets import HFClipAdapter

    enc = HFClipAdapter(make_hf_clip())
    images, classes = torch.zeros(4, 3, 16, 16), enc.tokenize(["a", "b"])
    with pytest.raises(ValueError, match="class indices"):
        class_metrics(enc, images, torch.tensor([0, 1, 2, 0]), classes, [0])
    with pytest.raises(ValueError, match="both of and outside"):
        class_metrics(enc, images, torch.tensor([0, 0, 0, 0]), classes, [0])
