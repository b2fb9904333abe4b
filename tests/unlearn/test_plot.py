"""The importance-vs-alignment plot renders, with the chosen layer in the highlight colour."""
import numpy as np
import pytest

from unlearnkit.unlearn.pareto import LayerScores, pareto_front
from unlearnkit.unlearn.plot import PlotStyle, plot_array, plot_layers, positions


def _scores():
    imp = np.array([0.5, 0.2, 0.05, 0.3, 0.01, 0.8])
    ali = np.array([0.3, 0.05, 0.01, 0.6, 0.2, 0.9])
    names = [f"enc.layers.{i}.fc.weight" for i in range(6)]
    return LayerScores(names, imp, ali, pareto_front(imp, ali))


def _mask(a, color):
    return np.all(a == np.array(color, dtype=np.uint8), axis=-1)


def test_renders_with_expected_size_and_highlighted_choice():
    scores, style = _scores(), PlotStyle(width=400, height=300)
    chosen = "enc.layers.1.fc.weight"
    img = plot_layers(scores, chosen, style)
    assert img.size == (400, 300) and img.mode == "RGB"
    a = np.asarray(img)
    x, y = positions(scores.importance, scores.alignment, style)[1]
    assert tuple(a[round(y), round(x)]) == style.highlight
    ys, xs = np.nonzero(_mask(a, style.highlight))
    assert len(xs) > 20  # a filled disc, and nothing else in that colour
    assert np.hypot(xs - x, ys - y).max() <= style.highlight_radius + 1.5
    assert _mask(a, style.front).sum() > 20 and _mask(a, style.point).sum() > 5


def test_front_points_drawn_and_no_highlight_without_choice():
    scores, style = _scores(), PlotStyle()
    a = plot_array(scores, None, style)
    assert a.shape == (style.height, style.width, 3) and a.dtype == np.uint8
    assert not _mask(a, style.highlight).any()
    xy = positions(scores.importance, scores.alignment, style)
    for i in scores.front:
        assert tuple(a[round(xy[i][1]), round(xy[i][0])]) == style.front
    dominated = sorted(set(range(6)) - set(scores.front.tolist()))
    for i in dominated:
        assert tuple(a[round(xy[i][1]), round(xy[i][0])]) == style.point


def test_positions_follow_axes():
    style = PlotStyle(log=False)
    xy = positions([1.0, 2.0], [0.1, 0.5], style)
    assert xy[1][0] > xy[0][0] and xy[1][1] < xy[0][1]  # more aligned: right; more important: up


def test_bad_inputs():
    with pytest.raises(ValueError, match="not a candidate"):
        plot_layers(_scores(), "nope")
    with pytest.raises(ValueError, match="width/height"):
        PlotStyle(width=50, height=50)


def test_single_point_and_zero_alignment_render():
    s = LayerScores(["a.weight"], np.array([0.3]), np.array([0.0]), np.array([0]))
    a = plot_array(s, "a.weight")
    assert _mask(a, PlotStyle().highlight).any()


def test_plot_array_is_writable_so_torch_takes_it_without_a_warning():
    import warnings

    import torch

    from unlearnkit.unlearn.pareto import LayerScores
    from unlearnkit.unlearn.plot import plot_array

    scores = LayerScores(["a.0.w", "a.1.w"], np.array([1.0, 2.0]), np.array([0.5, 0.1]), np.array([1]))
    arr = plot_array(scores, "a.1.w")
    assert arr.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(arr)
