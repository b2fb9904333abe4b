"""unlearnkit/compose/batch.py: CFG chunk layouts of every host, and row selection."""
import torch

from unlearnkit.compose.batch import Layout, chunk_rows, group_duplicates, layout_from_marks, take_rows


def test_layout_from_comfyui_and_forge_marks():
    assert layout_from_marks(4, [1, 0]) == Layout(2, 1)  # Forge: [uncond, cond]
    assert layout_from_marks(4, [0, 1]) == Layout(2, 0)
    assert layout_from_marks(4, [1]) == Layout(1, None)  # uncond evaluated apart
    assert layout_from_marks(2, None) == Layout(1, 0)
    assert layout_from_marks(3, [0, 1]) == Layout(1, None)  # rows do not split: one chunk, no prompt


def test_group_duplicates_finds_a1111_and_diffusers_layouts():
    x = torch.randn(2, 4, 8, 8)
    assert [p.tolist() for p in group_duplicates(torch.cat([x, x]))[:1]] == [[0, 1, 2, 3]]
    stacked = torch.cat([x[0:1], x[0:1], x[1:2], x[1:2], x])  # A1111 AND prompts: 2 parts each, then uncond
    perm, k = group_duplicates(stacked)
    assert k == 3 and torch.equal(stacked[perm], torch.cat([x, x, x]))
    assert group_duplicates(torch.cat([x[0:1], x[0:1], x[1:2], x])) is None  # uneven repeats
    assert group_duplicates(x)[1] == 1


def test_chunk_rows_and_take_rows_select_the_same_samples_in_every_chunk():
    rows = chunk_rows(torch.tensor([0, 2]), b=3, chunks=2)
    assert rows.tolist() == [0, 2, 3, 5]
    c = {"c_crossattn": torch.arange(6.0).view(6, 1), "transformer_options": {"sigmas": torch.arange(6.0),
         "cond_or_uncond": [0, 1], "patches": {"x": [print]}}, "y": [torch.arange(6.0)], "n": 6}
    out = take_rows(c, rows, 6)
    assert out["c_crossattn"].flatten().tolist() == [0, 2, 3, 5]
    assert out["transformer_options"]["sigmas"].tolist() == [0, 2, 3, 5]
    assert out["transformer_options"]["cond_or_uncond"] == [0, 1] and out["n"] == 6
    assert out["y"][0].tolist() == [0, 2, 3, 5] and out["transformer_options"]["patches"]["x"] == [print]
