"""SLUG on the tiny world: forget/retain pairs, adapter conventions (no trained weights needed)."""
import pytest
import torch

from unlearnkit.tinyworld.data import WORDS, load_world
from unlearnkit.tinyworld.styles import STYLES
from unlearnkit.tinyworld.tasks import Concept
from unlearnkit.tinyworld.tasks.slug_pairs import (
    captioned_pairs,
    concept_metrics,
    concept_pairs,
    tiny_adapter,
)


@pytest.fixture(scope="module")
def public():
    return load_world().public_set()


def test_digit_pairs_name_the_digit_and_retain_excludes_it(public):
    forget, retain = concept_pairs(public, Concept("digit", 7), n_forget=20, n_retain=40, seed=1)
    (f_img, f_txt), (r_img, r_txt) = forget[0], retain[0]
    assert f_img.shape == (20, 3, 16, 16) and r_img.shape == (40, 3, 16, 16)
    assert all(" 7" in t or "seven" in t for t in f_txt) and len(set(f_txt)) >= 5  # every template
    assert not any(" 7" in t or "seven" in t for t in r_txt)
    ref = public.where(public.digits == 7).images
    assert all(any(torch.equal(x, y) for y in ref) for x in f_img[:5])


def test_style_pairs_always_name_the_style(public):
    forget, retain = concept_pairs(public, Concept.parse("bold"), n_forget=10, n_retain=30)
    assert all(t.endswith("in bold style") for t in forget[0][1])
    assert all(t.endswith(" style") and "bold" not in t for t in retain[0][1])
    assert len({t.split(" in ")[-1] for t in retain[0][1]}) == len(STYLES) - 1


def test_pairs_refuse_impossible_requests(public):
    with pytest.raises(ValueError, match="n_forget"):
        concept_pairs(public, Concept("digit", 1), n_forget=0)
    with pytest.raises(ValueError, match="no images of it"):
        concept_pairs(public.where(public.digits != 3), Concept("digit", 3))
    assert captioned_pairs(public, 5)[0][0].shape[0] == 5


def test_adapter_reads_pil_like_the_world_and_metrics_run(public):
    from PIL import Image

    from unlearnkit.tinyworld.models import build_clip

    torch.manual_seed(0)
    enc = tiny_adapter(build_clip().eval(), tower="text")
    x = public.images[:2]
    pil = [Image.fromarray(((im * 0.5 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()) for im in x]
    assert torch.allclose(enc.prepare_images(pil, "p"), x, atol=1 / 255 + 1e-6)
    concept = Concept("digit", 2)
    forget_acc, retain_acc = concept_metrics(enc, public, concept, limit=200)()
    subset = public.where(torch.randperm(len(public), generator=torch.Generator().manual_seed(0))[:200])
    with torch.no_grad():  # zero-shot by hand: nearest class prompt in the shared space
        img = torch.nn.functional.normalize(enc.encode_image(subset.images), dim=-1)
        txt = torch.nn.functional.normalize(enc.encode_text(enc.tokenize(concept.class_prompts())), dim=-1)
    right = (img @ txt.T).argmax(1) == subset.digits
    own = subset.digits == 2
    assert (forget_acc, retain_acc) == pytest.approx(
        (right[own].float().mean().item(), right[~own].float().mean().item())
    )
    assert enc.tokenize([f"a handwritten digit {WORDS[2]}"])[0, -1] == 49407  # SD1.x padding
