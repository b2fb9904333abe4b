"""Adapter contract: candidate layers, tower restriction, and clear errors for bad images/texts."""
import pytest
import torch
from PIL import Image

from unlearnkit.unlearn.adapter import Encoders, candidate_layers


def test_toy_adapter_follows_protocol(toy):
    assert isinstance(toy, Encoders)
    assert [n for n, _ in toy.named_layers()] == [
        "image_in.weight",
        "image_out.weight",
        "text_in.weight",
        "text_out.weight",
    ]


def test_candidate_layers_skip_biases_norms_embeddings_projections(make_open_clip):
    model = make_open_clip()
    names = [n for n, _ in candidate_layers(model)]
    assert "transformer.resblocks.1.attn.in_proj_weight" in names
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in names
    assert "transformer.resblocks.0.attn.out_proj.weight" in names
    for bad in ("bias", "ln_", "embedding", "logit_scale", "conv1", "proj"):
        assert not [
            n for n in names if bad in n and "in_proj" not in n and "out_proj" not in n and "c_proj" not in n
        ]
    assert len(names) == 16  # 2 towers x 2 blocks x (in_proj, out_proj, c_fc, c_proj)


def test_tower_restriction(toy, make_toy):
    text = make_toy()
    text.tower = "text"
    assert all(n.startswith("text_") for n, _ in text.named_layers())
    image = make_toy()
    image.tower = "image"
    assert all(n.startswith("image_") for n, _ in image.named_layers())
    with pytest.raises(ValueError, match="tower"):
        type(toy)(toy.model, tower="unet")


@pytest.mark.parametrize("images, message", [
    (torch.zeros(0, 3, 8, 8), "no images"), ([], "no images"), (torch.zeros(2, 3, 9, 8), "8x8"),
    (torch.zeros(2, 1, 8, 8), "3 channels"), (torch.zeros(2, 8, 8, 3), "channels-last"),
    (torch.zeros(3, 8, 8), r"\(B, 3, H, W\)"), (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "float"),
    (torch.full((2, 3, 8, 8), float("nan")), "NaN"), ([Image.new("RGBA", (8, 8))], "mode 'RGBA'"),
    (["not an image"], "PIL image"),
])
def test_bad_images_are_refused_naming_the_input(toy, images, message):
    with pytest.raises(ValueError, match=message) as err:
        toy.prepare_images(images, "forget images")
    assert str(err.value).startswith("forget images")


def test_pil_images_are_resized_and_normalised(toy):
    out = toy.prepare_images([Image.new("RGB", (32, 20), (255, 0, 0)), Image.new("L", (5, 5), 0)], "imgs")
    assert out.shape == (2, 3, 8, 8)
    mean, std = torch.tensor(toy.image_mean), torch.tensor(toy.image_std)
    assert torch.allclose(out[0, :, 3, 3], (torch.tensor([1.0, 0.0, 0.0]) - mean) / std, atol=1e-5)
    assert torch.allclose(out[1, :, 0, 0], -mean / std, atol=1e-5)


def test_texts_single_string_is_repeated_and_lists_are_checked(toy):
    tokens = toy.prepare_texts("a photo of a cat", "t", count=3)
    assert tokens.shape == (3, 8) and torch.equal(tokens[0], tokens[2])
    assert toy.prepare_texts(["a", "b"], "t", count=2).shape == (2, 8)
    with pytest.raises(ValueError, match="got 2 texts for 3 images"):
        toy.prepare_texts(["a", "b"], "t", count=3)


@pytest.mark.parametrize("texts, message", [
    ("", "empty text"),
    (["a dog", "   "], r"texts\[1\]: empty text"),
    ([], "no texts"),
    (["!!!"], None),  # real tokens: accepted
    (torch.tensor([[49406, 49407, 0, 0]]), "only padding/special tokens"),
    (torch.zeros(1, 4), "integers"),
    (42, "expected a string"),
])
def test_bad_texts_are_refused(toy, texts, message):
    if message is None:
        assert toy.prepare_texts(texts, "texts").shape[0] == 1
        return
    with pytest.raises(ValueError, match=message):
        toy.prepare_texts(texts, "texts")


def test_text_of_only_special_tokens_after_tokenizing(toy):
    toy.tokenize = lambda texts: torch.tensor([[49406, 49407, 0, 0]] * len(texts))
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>'.*only padding"):
        toy.prepare_texts("<|endoftext|>", "concept")


def test_encoder_pair_wraps_plain_functions(toy, make_batches):
    from unlearnkit.unlearn.adapter import EncoderPair
    from unlearnkit.unlearn.gradients import layer_gradients

    pair = EncoderPair(toy.model, toy.encode_image, toy.encode_text, toy.tokenize, (8, 8),
                       image_prefixes=("image_",), logit_scale=toy.logit_scale, tower="text")
    assert isinstance(pair, Encoders)
    assert [n for n, _ in pair.named_layers()] == ["text_in.weight", "text_out.weight"]
    forget, retain = make_batches((8, 8))
    ours = layer_gradients(pair, forget, retain, progress=False)
    ref = layer_gradients(toy, forget, retain, layers=["text_in.weight", "text_out.weight"], progress=False)
    assert all(
        torch.equal(ours.forget[n], ref.forget[n]) and torch.equal(ours.retain[n], ref.retain[n])
        for n in ours.names
    )
    with pytest.raises(ValueError, match="image_prefixes"):
        EncoderPair(toy.model, toy.encode_image, toy.encode_text, toy.tokenize, (8, 8), tower="image")
    assert (
        float(EncoderPair(toy.model, toy.encode_image, toy.encode_text, toy.tokenize, (8, 8)).logit_scale())
        == 100.0
    )


def test_pil_images_keep_their_aspect_ratio_like_clip_preprocessing(toy):
    from unlearnkit.unlearn.adapter import center_crop_resize

    wide = Image.new("RGB", (40, 8), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 16, 8))  # left 16 px red, right 24 px blue: the centre 8x8 is all blue
    out = center_crop_resize(wide, (8, 8))
    assert out.size == (8, 8) and out.getcolors() == [(64, (0, 0, 255))]
    tall = center_crop_resize(Image.new("RGB", (10, 30)), (4, 6))
    assert tall.size == (6, 4)
    assert toy.prepare_images([wide], "w").shape == (1, 3, 8, 8)
