"""The report's pictures: nearest-neighbour enlargement, labelled grids, bars, tiles."""
import torch

from unlearnkit.cli.demo.panels import bar_chart, labelled_grid, rate, tile, to_pil


def test_to_pil_enlarges_each_pixel_into_a_sharp_block():
    image = torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]]).expand(3, 2, 2)
    pil = to_pil(image, 4)
    assert pil.size == (8, 8)
    assert {pil.getpixel((x, y)) for x in range(4) for y in range(4)} == {(0, 0, 0)}
    assert {pil.getpixel((x, y)) for x in range(4, 8) for y in range(4)} == {(255, 255, 255)}


def test_labelled_grid_places_rows_labels_and_notes():
    rows = [torch.zeros(3, 3, 16, 16), torch.ones(2, 3, 16, 16)]
    plain = labelled_grid(rows, ["a", "b"], scale=5)
    noted = labelled_grid(rows, ["a", "b"], ["x", "y", "z"], [["1", "2", "3"], ["4", "5"]], scale=5)
    assert plain.width >= 3 * 80 and plain.height >= 2 * 80
    assert noted.height > plain.height  # column labels above and notes under the images take room
    try:
        labelled_grid(rows, ["only one"])
    except ValueError as exc:
        assert "row_labels" in str(exc)
    else:
        raise AssertionError("a missing row label was accepted")


def test_bar_chart_and_tile_sizes():
    chart = bar_chart({"ESD": 0.5, "AdvUnlearn": 0.1}, "t", "ASR", size=(400, 300))
    assert chart.size == (400, 300)
    assert tile([chart, chart, chart], columns=2, gap=8).size == (808, 608)


def test_rate_is_the_share_of_true():
    assert rate(torch.tensor([True, False, True, True])) == 0.75
