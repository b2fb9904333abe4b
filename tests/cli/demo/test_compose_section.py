"""Pieces of the Compose section that need no sampling."""
import torch

from unlearnkit.cli.demo.compose_section import trajectory_story


def test_trajectory_story_names_the_late_takeovers():
    decided = torch.tensor([[1.0, 0.0]] * 4)  # (S, N) shard 0 from the start
    late = torch.tensor([[0.3, 0.7], [0.4, 0.6], [0.8, 0.2], [1.0, 0.0]])  # shard 0 wins at step 2
    text = trajectory_story(["p0", "p1"], torch.stack([decided, late], dim=1), ["bold", "slanted"])
    assert text.startswith("1 of 2 images are decided at the first step")
    assert 'for "p1" the bold shard took over at step 2 of 4' in text
