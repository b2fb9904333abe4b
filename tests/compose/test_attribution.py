"""unlearnkit/compose/attribution.py: trajectories, credit, JSON and plot."""
import numpy as np
import pytest
import torch

from unlearnkit.compose.attribution import attribution_plot, attribution_report, credit, weight_trajectory
from unlearnkit.compose.composer import StepRecord
from unlearnkit.plots import colour

NAMES = ["bold", "slanted"]


def history():
    """Two samples over 3 steps: sample 0 drifts to 'bold', sample 1 to 'slanted'."""
    ws = [[[0.5, 0.5], [0.5, 0.5]], [[0.8, 0.2], [0.3, 0.7]], [[1.0, 0.0], [0.0, 1.0]]]
    return [StepRecord(s, torch.tensor(w), [0, 1]) for s, w in zip([10.0, 1.0, 0.1], ws)]


def test_credit_and_top_shard():
    report = attribution_report(history(), NAMES)
    assert report["top_shard"] == ["bold", "slanted"]
    assert np.allclose(report["credit"][0], [2.3 / 3, 0.7 / 3])
    assert report["sigmas"] == [10.0, 1.0, 0.1]
    assert np.allclose(np.array(report["credit"]).sum(1), 1)


def test_trajectory_keeps_only_the_last_run():
    h = [StepRecord(5.0, torch.tensor([[0.1, 0.9]] * 3), [0, 1])] + history()
    assert weight_trajectory(h).shape == (3, 2, 2)
    assert torch.allclose(credit(weight_trajectory(h)).sum(1), torch.ones(2))


def test_plot_draws_each_shard_in_its_colour():
    img = np.asarray(attribution_plot(history(), NAMES))
    assert img.shape[2] == 3 and img.shape[1] > img.shape[0]
    for k in range(2):
        assert (np.abs(img.astype(int) - colour(k)).sum(-1) == 0).sum() > 50


def test_empty_history_is_a_clear_error():
    with pytest.raises(ValueError, match="no sampling steps"):
        attribution_report([], NAMES)


def test_four_samples_are_plotted_two_by_two():
    four = [StepRecord(r.sigma, torch.cat([r.weights, r.weights]), [0, 1]) for r in history()]
    one_row = attribution_plot(four, NAMES, columns=4)
    grid = attribution_plot(four, NAMES)
    assert grid.height == 2 * one_row.height and grid.width < one_row.width / 1.5
