"""unlearnkit/compose/prediction.py: eps / v / sample / flow outputs <-> x0, and mixing them in x0 space."""
import pytest
import torch

from unlearnkit.compose.prediction import PREDICTIONS, prediction_to_x0, x0_to_prediction
from unlearnkit.compose.schedules import vp_from_ve


def noised(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, out = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(2))
    return x, out, torch.tensor([0.2, 1.0, 8.0])


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_round_trip(kind):
    x, out, sigma = noised()
    back = x0_to_prediction(prediction_to_x0(out, x, sigma, kind), x, sigma, kind)
    assert torch.allclose(back, out, atol=1e-4)


def test_each_kind_recovers_x0_from_its_own_target():
    x0, eps, sigma = noised(1)
    s = sigma.view(-1, 1, 1, 1)
    x_t = vp_from_ve(x0 + s * eps, sigma)  # VP state
    abar = 1 / (1 + s**2)
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0  # diffusers' v target
    assert torch.allclose(prediction_to_x0(eps, x_t, sigma, "epsilon"), x0, atol=1e-4)
    assert torch.allclose(prediction_to_x0(v, x_t, sigma, "v_prediction"), x0, atol=1e-4)
    assert torch.equal(prediction_to_x0(x0, x_t, sigma, "sample"), x0)
    f = torch.tensor([0.1, 0.5, 0.9]).view(-1, 1, 1, 1)  # flow: x = (1-σ) x0 + σ ε, v = ε - x0
    flow = (1 - f) * x0 + f * eps
    assert torch.allclose(prediction_to_x0(eps - x0, flow, f.flatten(), "flow"), x0, atol=1e-5)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_mixing_x0_is_mixing_the_outputs(kind):
    x, a, sigma = noised(2)
    b = torch.randn_like(a)
    x0 = 0.3 * prediction_to_x0(a, x, sigma, kind) + 0.7 * prediction_to_x0(b, x, sigma, kind)
    assert torch.allclose(x0_to_prediction(x0, x, sigma, kind), 0.3 * a + 0.7 * b, atol=1e-4)


def test_unknown_kind_is_named():
    x, out, sigma = noised()
    with pytest.raises(ValueError, match="prediction_type: expected one of .* got 'edm'"):
        prediction_to_x0(out, x, sigma, "edm")
