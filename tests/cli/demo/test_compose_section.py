"""Pieces of the Compose section that need no sampling."""
import pytest
import torch

from unlearnkit.cli.demo.compose_section import SliderRows, trajectory_story


def test_slider_rows_give_each_sample_its_own_normalised_weights():
    gate = SliderRows(["a", "b"], torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    w = gate(torch.zeros(2, 4, 8, 8), torch.ones(2))
    assert torch.allclose(w, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="batch of 2"):
        gate(torch.zeros(3, 4, 8, 8), torch.ones(3))


def test_trajectory_story_names_the_late_takeovers():
    decided = torch.tensor([[1.0, 0.0]] * 4)  # (S, N) shard 0 from the start
    late = torch.tensor([[0.3, 0.7], [0.4, 0.6], [0.8, 0.2], [1.0, 0.0]])  # shard 0 wins at step 2
    text = trajectory_story(["p0", "p1"], torch.stack([decided, late], dim=1), ["bold", "slanted"])
    assert text.startswith("1 of 2 images are decided at the first step")
    assert 'for "p1" the bold shard took over at step 2 of 4' in text
