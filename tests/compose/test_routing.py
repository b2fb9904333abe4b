"""unlearnkit/compose/routing.py: the evaluate modes, their checks, and the density gate's exception."""
import logging
import math

import pytest
import torch

from unlearnkit.compose.routing import EVALUATE, Evaluation


def test_modes_map_to_the_composer_knobs():
    assert EVALUATE == ("fast", "per-sample", "every-shard")
    def knobs(route, eps, sigma):
        return {"route": route, "prune_eps": eps, "mc_sigma": sigma}

    assert Evaluation("fast", 0.02, 1.5).routing() == knobs("sample", 0.02, 1.5)
    assert Evaluation("per-sample", 0.02, 1.5).routing() == knobs("sample", 0.02, math.inf)
    assert Evaluation("every-shard", 0.0).routing() == knobs("batch", 0.0, math.inf)


@pytest.mark.parametrize("bad, message", [
    (Evaluation("quick"), "evaluate: expected one of"),
    (Evaluation("fast", -0.1), "epsilon: expected a number in"),
    (Evaluation("fast", 0.01, float("nan")), "threshold: expected a noise level"),
])
def test_bad_settings_name_the_input(bad, message):
    with pytest.raises(ValueError, match=message):
        bad.check()


def test_density_gates_turn_the_one_shard_draw_off_and_say_so(caplog):
    fast = Evaluation("fast", 0.01, 1.0)
    with caplog.at_level(logging.WARNING):
        assert fast.for_gate(needs_every_score=True) == Evaluation("per-sample", 0.01, 1.0)
    assert "density gate" in caplog.text and "per-sample" in caplog.text
    assert fast.for_gate(needs_every_score=False) is fast


def test_the_draw_seed_follows_the_noise_not_its_float_rounding():
    """Hosts reach the same noise through different float steps (A1111: x_t / c_in); the seed must agree."""
    from unlearnkit.compose.routing import seed_of

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14.6
    c_in = 1 / (14.6**2 + 1) ** 0.5
    assert seed_of(x) == seed_of((x * c_in) / c_in) == seed_of(x * 1.0001)
    assert seed_of(x) != seed_of(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
    assert seed_of(x) != seed_of(x.reshape(4, 2, 8, 8))
