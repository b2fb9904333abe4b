"""SD SLUG's parts on small inputs: retain projection, candidate order, refined step search, generation
metric, anchor captions, K/V loss and denoising maths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.unlearn.denoising import eps_from_prediction, noised, training_target
from unlearnkit.unlearn.generation_metric import Attribute, SearchPrompts, accuracies, retention
from unlearnkit.unlearn.kv_loss import anchor_caption, anchor_captions, concept_key
from unlearnkit.unlearn.pareto import LayerScores
from unlearnkit.unlearn.retain_projection import principal_basis, project_off
from unlearnkit.unlearn.sd_model import kv_kind, split_name
from unlearnkit.unlearn.sd_scores import candidate_order
from unlearnkit.unlearn.step_search import StepSearchConfig, search_smallest_step


def test_project_off_spares_the_retain_inputs_and_keeps_the_rest():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=gen) @ torch.diag(torch.tensor([5, 4, 3, 2, 1, 0.01, 0.01, 0.01]))
    basis = principal_basis(x, 0.999)
    assert basis.shape == (8, 5)
    d = torch.randn(3, 8, generator=gen)
    dp = project_off(d, basis)
    assert torch.allclose(dp @ basis, torch.zeros(3, 5), atol=1e-5)  # retain inputs: unchanged outputs
    assert torch.allclose(project_off(dp, basis), dp, atol=1e-6)
    assert float(dp.norm()) > 0.1 * float(d.norm())


def test_principal_basis_rejects_bad_energy():
    with pytest.raises(ValueError, match="energy"):
        principal_basis(torch.randn(4, 3), 1.0)


def test_candidate_order_rank_then_ratio_towers_interleaved():
    names = ["text_encoder.a.weight", "text_encoder.b.weight", "unet.x.attn2.to_v.weight",
             "unet.y.attn2.to_k.weight"]
    scores = LayerScores(names, np.array([0.1, 0.01, 0.05, 0.02]), np.array([0.01, 0.0005, 0.01, 0.5]),
                         np.array([0, 1, 2]), np.array([0, 0, 0, 1]))
    # rank 0 of both towers first (I/A: b 20 > a 10; the UNet's x 5), alternating towers; then rank 1
    assert candidate_order(scores) == ["text_encoder.b.weight", "unet.x.attn2.to_v.weight",
                                       "text_encoder.a.weight", "unet.y.attn2.to_k.weight"]


def test_smallest_step_refines_to_the_boundary():
    result = search_smallest_step(lambda s: (max(0.0, 1 - s / 3), 1 - 0.01 * s), 1.0,
                                  StepSearchConfig(forget_target=0.05, retain_drop=0.05))
    assert result.success and 2.85 <= result.step <= 3.0 and result.evals <= 10
    plain = search_smallest_step(lambda s: (max(0.0, 1 - s / 3), 1.0), 1.0, StepSearchConfig(max_evals=3))
    assert plain.evals <= 3


def prompts() -> SearchPrompts:
    style = Attribute("style", ("bold", "plain"), torch.tensor([0, 0, 1, -1]))
    digit = Attribute("digit", ("3", "5"), torch.tensor([-1, -1, 1, 0]))
    return SearchPrompts(["b3", "b5", "p5", "3"], torch.tensor([0, 0, 1, 2]), style, (digit,))


def test_accuracies_check_each_group_apart():
    still, kept = accuracies({"style": torch.tensor([0, 1, 1, 0]), "digit": torch.tensor([0, 0, 1, 1])},
                             prompts())
    assert still == 0.5 and kept == [1.0, 1.0, 0.0]  # style of group 1; digit of group 1, of group 2
    assert retention([0.9, 1.0], [1.0, 1.0]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="group 0"):
        SearchPrompts(["a"], torch.tensor([1]), Attribute("s", ("x",), torch.tensor([0])))


def test_anchor_captions_replace_whole_words_only():
    assert concept_key("bold style") == "bold" and concept_key("Van Gogh") == "Van Gogh"
    assert anchor_caption("a digit 3 in Bold style", "bold style", "plain") == "a digit 3 in plain style"
    assert anchor_captions(["boldly bold"], "bold style", "plain style") == ["boldly plain"]
    with pytest.raises(ValueError, match="does not name the concept"):
        anchor_caption("a digit 3", "bold style", "plain")
    with pytest.raises(ValueError, match="names the concept itself"):
        anchor_captions(["bold"], "bold style", "bold")


def test_v_prediction_targets_invert():
    gen = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(2, 4, 2, 2, generator=gen), torch.randn(2, 4, 2, 2, generator=gen)
    abar = torch.tensor([0.9, 0.2])
    x_t = noised(z0, eps, abar)
    v = training_target(z0, eps, abar, "v_prediction")
    torch.testing.assert_close(eps_from_prediction(v, x_t, abar, "v_prediction"), eps)
    assert torch.equal(training_target(z0, eps, abar, "epsilon"), eps)


def test_names():
    assert split_name("unet.a.attn2.to_k.weight") == ("unet", "a.attn2.to_k.weight")
    assert kv_kind("x.attn2.to_v.weight") == "v"
    with pytest.raises(ValueError):
        split_name("vae.x")
    with pytest.raises(ValueError):
        kv_kind("x.attn1.to_v.weight")
