"""Binary search on the SLUG step size with synthetic evaluations whose right answer is known."""
import math

import pytest
import torch

from unlearnkit.unlearn.step_search import StepSearchConfig, initial_step, search_step


class Synthetic:
    """Forget metric falls linearly to 0 at ``forget_at``; retain drops from 1 to 0.5 at ``break_at``."""

    def __init__(self, forget_at: float, break_at: float):
        self.forget_at, self.break_at, self.calls = forget_at, break_at, []

    def __call__(self, step: float) -> tuple[float, float]:
        self.calls.append(step)
        return max(0.0, 1.0 - step / self.forget_at), (1.0 if step < self.break_at else 0.5)


def test_grows_until_forgotten():
    ev = Synthetic(forget_at=4.0, break_at=6.0)
    r = search_step(ev, start=0.3)
    assert r.success and 4.0 <= r.step < 6.0
    assert ev.calls == [0.0, 0.3, 0.6, 1.2, 2.4, 4.8]  # baseline, then doubling
    assert r.evals == len(ev.calls) and r.baseline == (1.0, 1.0)
    assert (r.forget_metric, r.retain_metric) == (0.0, 1.0)


def test_shrinks_when_utility_drops_then_bisects():
    ev = Synthetic(forget_at=4.0, break_at=6.0)
    r = search_step(ev, start=100.0)
    assert r.success and 4.0 <= r.step < 6.0
    assert ev.calls[:4] == [0.0, 100.0, 50.0, 25.0]
    assert len(ev.calls) <= 10


@pytest.mark.parametrize("start", [1e-3, 0.5, 7.0, 1e4])
def test_never_exceeds_max_evals_and_finds_wide_windows(start):
    ev = Synthetic(forget_at=2.0, break_at=3.0)
    r = search_step(ev, start=start, config=StepSearchConfig(max_evals=10))
    assert len(ev.calls) <= 10 and r.evals == len(ev.calls)
    assert r.success == (2.0 <= r.step < 3.0)
    if start in (0.5, 7.0):  # reachable within the budget (1e-3 needs 11 doublings)
        assert r.success


def test_narrow_window_fails_gracefully_within_budget():
    ev = Synthetic(forget_at=4.0, break_at=4.0001)
    r = search_step(ev, start=0.01, config=StepSearchConfig(max_evals=6))
    assert len(ev.calls) == 6 and not r.success
    assert r.retain_metric == 1.0 and r.step == max(
        h[0] for h in r.history if h[2] == 1.0
    )  # most-forgetting safe step
    assert "no step met both targets" in r.reason


def test_infeasible_layer_stops_early():
    ev = lambda s: (1.0, 1.0 if s < 5 else 0.0)  # noqa: E731 - never forgotten, utility breaks at 5
    r = search_step(ev, start=8.0)
    assert not r.success and "utility already dropped" in r.reason
    assert r.evals == 2


def test_retain_tolerance_is_relative_to_baseline():
    # retain falls slowly with the step; a drop of 0.1 is allowed
    ev = lambda s: (max(0.0, 1 - s), 0.8 - 0.05 * s)  # noqa: E731
    r = search_step(ev, start=0.25, config=StepSearchConfig(retain_drop=0.1))
    assert r.success and r.step == 1.0 and r.retain_metric == pytest.approx(0.75)
    strict = search_step(ev, start=0.25, config=StepSearchConfig(retain_drop=0.01))
    assert not strict.success


def test_forget_target_above_zero():
    ev = Synthetic(forget_at=4.0, break_at=100.0)
    r = search_step(ev, start=1.0, config=StepSearchConfig(forget_target=0.5))
    assert r.success and r.step == 2.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="start"):
        search_step(lambda s: (0, 0), start=0.0)
    with pytest.raises(ValueError, match="max_evals"):
        StepSearchConfig(max_evals=1)
    with pytest.raises(ValueError, match="non-finite"):
        search_step(lambda s: (math.nan, 1.0), start=1.0)
    with pytest.raises(ValueError, match="grad"):
        initial_step(torch.ones(2, 2), torch.zeros(2, 2))


def test_initial_step_is_norm_ratio_over_divisor():
    assert initial_step(torch.full((2, 2), 3.0), torch.full((2, 2), 0.5)) == pytest.approx(0.6)
    assert initial_step(torch.full((2, 2), 3.0), torch.full((2, 2), 0.5), divisor=1.0) == pytest.approx(6.0)


def test_progress_bar_does_not_change_the_search():
    from unlearnkit.unlearn.step_search import search_step

    def evaluate(step):
        return (1.0 if step < 3 else 0.0), (1.0 if step < 5 else 0.0)

    quiet, shown = (search_step(evaluate, 1.0, progress=p) for p in (False, True))
    assert (quiet.step, quiet.history, quiet.success) == (shown.step, shown.history, shown.success)
    assert 3 <= shown.step < 5 and shown.success


def test_known_baseline_is_not_measured_again():
    from unlearnkit.unlearn.step_search import search_step

    steps = []

    def evaluate(step):
        steps.append(step)
        return (1.0 if step < 3 else 0.0), 1.0

    r = search_step(evaluate, 1.0, baseline=(1.0, 1.0))
    assert 0.0 not in steps and r.baseline == (1.0, 1.0) and r.success and r.evals == len(steps) + 1
