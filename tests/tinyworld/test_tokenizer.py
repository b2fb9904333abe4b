import open_clip
import pytest
import torch

from unlearnkit.tinyworld.data import all_captions
from unlearnkit.tinyworld.tokenizer import clip_tokenizer, tokenize

PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "masterpiece, best quality, 1girl, (detailed eyes:1.2), looking at viewer",
    "Van Gogh style painting of a church!!", "a garbage truck, parachute, tench", "nude", "!!",
    "UPPER case and MiXeD", "numbers 123 4567 89", "emoji 🐶 and accents café naïve",
    "   spaces   everywhere  ", "a very long prompt " * 20,
]


def until_eos(ids: torch.Tensor) -> list[int]:
    ids = ids.tolist()
    return ids[: ids.index(49407) + 1]


@pytest.mark.parametrize("prompt", PROMPTS + all_captions()[::7])
def test_same_ids_as_open_clip(prompt):
    ours, ref = tokenize([prompt])[0], open_clip.tokenize([prompt])[0]
    if 49407 in ref.tolist():
        assert until_eos(ours) == until_eos(ref)
    else:  # truncated: open_clip puts EOS last, SD1.x/transformers too
        assert ours.tolist() == ref.tolist()


def test_sd1_layout():
    ids = tokenize(["digit 7", ""])
    assert ids.shape == (2, 77)
    assert ids[0, 0] == 49406 and (ids[0, 3:] == 49407).all()  # padded with EOS like SD1.x
    assert len(clip_tokenizer()) == 49408
    with pytest.raises(ValueError, match="prompts"):
        tokenize("not a list")
