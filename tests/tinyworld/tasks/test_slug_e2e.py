"""End to end on the trained tiny world: a SLUG text-tower patch forgets one digit in CLIP zero-shot, keeps
the rest."""

import torch

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.data import load_world
from unlearnkit.tinyworld.tasks import Concept
from unlearnkit.tinyworld.tasks.slug_pairs import concept_metrics, concept_pairs, tiny_adapter
from unlearnkit.unlearn import SlugConfig, StepSearchConfig, apply_patch, remove_patch, run_slug


def test_slug_patch_forgets_a_digit_in_zero_shot_and_keeps_the_others(committed):

    world = load_world()
    public, held = world.public_set(), world.held_out_set()
    concept = Concept.parse("digit:3")
    clip = store.load_clip()
    enc = tiny_adapter(clip, "text")
    forget, retain = concept_pairs(public, concept, n_forget=32, n_retain=64)
    search = concept_metrics(enc, public, concept, limit=600)
    result = run_slug(
        enc,
        forget,
        retain,
        SlugConfig(progress=False, search=StepSearchConfig(retain_drop=0.02)),
        metrics=search,
    )
    patch = result.to_patch(enc, concept.name)
    measure = concept_metrics(tiny_adapter(clip, "both"), held, concept)  # held-out: never searched on
    snap = {k: v.clone() for k, v in clip.state_dict().items()}
    (f0, r0) = measure()
    apply_patch(clip, patch)
    (f1, r1) = measure()
    remove_patch(clip, patch)
    assert all(torch.equal(v, clip.state_dict()[k]) for k, v in snap.items())
    assert f0 > 0.6 and f1 <= 0.1, (f0, f1)  # the digit was recognised, now it is not
    assert r1 >= r0 - 0.03, (r0, r1)  # the other digits still are
    assert (
        result.layer.startswith("text_model.")
        and patch.delta.shape == dict(clip.named_parameters())[result.layer].shape
    )
