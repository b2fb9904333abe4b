"""Importance, alignment, Pareto front and layer choice (SLUG §3.2)."""
import logging

import numpy as np
import pytest
import torch

from unlearnkit.unlearn.pareto import (
    LayerScores,
    alignment,
    choose_layer,
    importance,
    layer_scores,
    pareto_front,
    relative_depth,
)


def test_importance_is_gradient_norm_over_weight_norm():
    assert importance(torch.full((2, 2), 3.0), torch.full((2, 2), 2.0)) == pytest.approx(1.5)


def test_alignment_is_absolute_cosine_and_zero_for_zero_gradients():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert alignment(g, -2 * g) == pytest.approx(1.0)
    assert alignment(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0])) == pytest.approx(0.0)
    assert alignment(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(2**-0.5)
    assert alignment(g, torch.zeros_like(g)) == 0.0


def test_pareto_front_on_hand_made_points():
    #            0     1     2     3     4
    imp = [1.0, 2.0, 3.0, 2.0, 0.5]
    ali = [0.1, 0.2, 0.5, 0.6, 0.05]  # 3 is dominated by 1 (same I, lower A); 4 has the lowest A
    assert pareto_front(imp, ali).tolist() == [4, 0, 1, 2]  # sorted by alignment


def test_pareto_front_ties_and_duplicates():
    assert pareto_front([1.0, 1.0], [0.1, 0.2]).tolist() == [0]  # equal I, higher A: dominated
    assert pareto_front([1.0, 2.0], [0.3, 0.3]).tolist() == [1]  # equal A, lower I: dominated
    assert sorted(pareto_front([1.0, 1.0, 0.5], [0.2, 0.2, 0.3]).tolist()) == [0, 1]  # duplicates both stay
    assert pareto_front([0.7], [0.9]).tolist() == [0]


def test_pareto_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    imp, ali = rng.random(40), rng.random(40)
    brute = [i for i in range(40) if not any(
        imp[j] >= imp[i] and ali[j] <= ali[i] and (imp[j] > imp[i] or ali[j] < ali[i]) for j in range(40))]
    assert sorted(pareto_front(imp, ali).tolist()) == brute


def test_pareto_front_rejects_nan_and_mismatched_shapes():
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([1.0, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        pareto_front([1.0, 2.0], [0.1])


def test_relative_depth_per_block_stack():
    names = [
        "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "visual.transformer.resblocks.3.mlp.c_fc.weight",
        "transformer.resblocks.0.attn.in_proj_weight",
        "transformer.resblocks.1.attn.in_proj_weight",
        "head.weight",
    ]
    assert relative_depth(names).tolist() == [0.25, 1.0, 0.5, 1.0, 0.0]


def _scores():
    names = [
        "enc.layers.0.fc.weight",
        "enc.layers.1.fc.weight",
        "enc.layers.2.fc.weight",
        "enc.layers.2.out.weight",
    ]
    imp, ali = np.array([3.0, 2.0, 1.0, 0.5]), np.array([0.3, 0.2, 0.9, 0.1])  # 2 dominated by 0 and 1
    return LayerScores(names, imp, ali, pareto_front(imp, ali))


def test_choose_layer_deepest_on_front_by_default():
    scores = _scores()
    assert scores.front_names == [
        "enc.layers.2.out.weight",
        "enc.layers.1.fc.weight",
        "enc.layers.0.fc.weight",
    ]
    assert choose_layer(scores) == "enc.layers.2.out.weight"


def test_choose_layer_by_name_and_unknown_name(caplog):
    scores = _scores()
    assert choose_layer(scores, "enc.layers.0.fc.weight") == "enc.layers.0.fc.weight"
    with caplog.at_level(logging.WARNING):
        assert (
            choose_layer(scores, "enc.layers.2.fc.weight") == "enc.layers.2.fc.weight"
        )  # off the front: allowed
    assert "not on the Pareto front" in caplog.text
    with pytest.raises(ValueError, match=r"enc\.layers\.9\.fc\.weight.*did you mean.*enc\.layers\.") as err:
        choose_layer(scores, "enc.layers.9.fc.weight")
    assert "valid names include" in str(err.value)


def test_layer_scores_from_gradients():
    w = {"a": torch.ones(2, 2), "b": torch.ones(2, 2)}
    gf = {"a": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "b": torch.tensor([[2.0, 0.0], [0.0, 0.0]])}
    gr = {"a": torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "b": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    s = layer_scores(gf, gr, w)
    assert s.importance.tolist() == pytest.approx([0.5, 1.0])
    assert s.alignment.tolist() == pytest.approx([0.0, 1.0])
    assert sorted(s.front.tolist()) == [0, 1]
    with pytest.raises(ValueError, match="missing"):
        layer_scores(gf, {"a": gr["a"]}, w)


def test_exclude_last_blocks_per_stack_keeps_layers_outside_stacks():
    from unlearnkit.unlearn.pareto import block_position, exclude_last_blocks

    names = ["text.layers.0.fc.weight", "text.layers.1.fc.weight", "text.layers.2.fc.weight",
             "vis.blocks.0.fc.weight", "vis.blocks.1.fc.weight", "head.weight"]
    assert block_position(names[2]) == ("text.layers", 2) and block_position("head.weight") is None
    assert exclude_last_blocks(names, 0) == names
    assert exclude_last_blocks(names, 1) == [names[0], names[1], names[3], "head.weight"]
    assert exclude_last_blocks(names, 2) == [names[0], "head.weight"]
    with pytest.raises(ValueError, match="exclude_last_blocks"):
        exclude_last_blocks(names, -1)


def test_choose_layer_breaks_depth_ties_by_importance_not_registration_order():
    # two towers' last blocks are equally deep; the later-registered one is less important
    names = ["text.layers.1.fc.weight", "vis.blocks.1.fc.weight", "text.layers.0.fc.weight"]
    imp, ali = np.array([2.0, 1.0, 0.5]), np.array([0.5, 0.2, 0.1])
    scores = LayerScores(names, imp, ali, pareto_front(imp, ali))
    assert sorted(scores.front.tolist()) == [0, 1, 2]
    assert choose_layer(scores) == "text.layers.1.fc.weight"


def test_pareto_ranks_peel_fronts_and_group_per_stack():
    from unlearnkit.unlearn.pareto import grouped_ranks, pareto_ranks

    imp, ali = np.array([3.0, 2.0, 1.0, 0.5, 2.5]), np.array([0.3, 0.2, 0.9, 0.1, 0.4])
    assert pareto_ranks(imp, ali).tolist() == [0, 0, 2, 0, 1]  # 4 is dominated by 0 only; 2 by 0, 1 and 4
    names = ["t.layers.0.a", "t.layers.1.a", "v.layers.0.a", "v.layers.1.a"]
    imp, ali = np.array([1.0, 2.0, 0.1, 0.2]), np.array([0.5, 0.1, 0.5, 0.9])
    assert grouped_ranks(names, imp, ali).tolist() == [1, 0, 0, 0]  # v's layers are not compared with t's


def test_candidate_order_rank_then_depth_then_importance():
    names = ["t.layers.0.q", "t.layers.1.q", "t.layers.1.v", "t.layers.0.v"]
    imp, ali = np.array([3.0, 1.0, 2.0, 0.5]), np.array([0.1, 0.2, 0.3, 0.01])
    s = LayerScores(names, imp, ali, pareto_front(imp, ali))
    assert s.ranks.tolist() == [0, 1, 1, 0]
    assert [names[i] for i in s.candidate_order()] == [
        "t.layers.0.q",
        "t.layers.0.v",
        "t.layers.1.v",
        "t.layers.1.q",
    ]
