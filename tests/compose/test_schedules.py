"""unlearnkit/compose/schedules.py: σ <-> t as k-diffusion's DiscreteSchedule, and the VE / VP / flow states.

k-diffusion is the real code Forge ships (``$UNLEARNKIT_FORGE_DIR/k_diffusion``, by default
``../shared/hosts/forge`` beside the repository; the same DiscreteSchedule as A1111's pinned k-diffusion).
Its ``sampling`` module (ODE solvers, needing torchdiffeq) is not what is tested: an empty module stands
in for it at import.
"""
import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from unlearnkit.compose.schedules import (
    from_ve,
    sigma_to_t,
    sigmas_of,
    t_to_sigma,
    to_ve,
    ve_from_vp,
    vp_from_ve,
)

BESIDE = Path(__file__).resolve().parents[3] / "shared" / "hosts" / "forge"
FORGE_DIR = Path(os.environ.get("UNLEARNKIT_FORGE_DIR") or BESIDE)
BETAS = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
ACP = torch.cumprod(1 - BETAS, 0).float()  # SD's scaled-linear schedule
LOG_SIGMAS = sigmas_of(ACP).log()


@pytest.fixture(scope="module")
def k_schedule(tmp_path_factory):
    if not (FORGE_DIR / "k_diffusion" / "external.py").is_file():
        pytest.skip(f"no k-diffusion at {FORGE_DIR / 'k_diffusion'}")
    saved = {k: sys.modules.get(k) for k in ("k_diffusion", "k_diffusion.sampling", "k_diffusion.external")}
    sys.path.insert(0, str(FORGE_DIR))
    sys.modules["k_diffusion.sampling"] = types.ModuleType("k_diffusion.sampling")  # ODE solvers: unused
    try:
        external = importlib.import_module("k_diffusion.external")
        yield external.DiscreteSchedule(sigmas_of(ACP), quantize=False)
    finally:
        sys.path.remove(str(FORGE_DIR))
        for k, v in saved.items():
            sys.modules.pop(k, None) if v is None else sys.modules.__setitem__(k, v)


def test_t_to_sigma_and_sigma_to_t_are_k_diffusions(k_schedule):
    t = torch.tensor([0.0, 0.25, 10.5, 431.25, 998.9, 999.0])
    assert torch.allclose(t_to_sigma(t, LOG_SIGMAS), k_schedule.t_to_sigma(t), rtol=1e-6)
    sigma = torch.tensor([0.03, 0.05, 1.3, 7.7, 14.0, 14.6])
    assert torch.allclose(sigma_to_t(sigma, LOG_SIGMAS), k_schedule.sigma_to_t(sigma), atol=1e-4)
    nearest = k_schedule.sigma_to_t(sigma, quantize=True)
    assert torch.equal(sigma_to_t(sigma, LOG_SIGMAS, quantize=True), nearest)


def test_fractional_sigma_to_t_inverts_t_to_sigma_and_is_exact_on_trained_steps():
    t = torch.tensor([3.0, 10.0, 431.25, 998.5])
    assert torch.allclose(sigma_to_t(t_to_sigma(t, LOG_SIGMAS), LOG_SIGMAS), t, atol=1e-3)
    assert torch.allclose(t_to_sigma(torch.tensor([0.0, 999.0]), LOG_SIGMAS), sigmas_of(ACP)[[0, 999]])


def test_ve_vp_flow_states_round_trip_and_agree_on_x0():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    sigma = torch.tensor([0.1, 1.0, 9.0])
    ve = x0 + sigma.view(-1, 1, 1, 1) * eps
    abar = 1 / (1 + sigma**2)
    x_t = abar.sqrt().view(-1, 1, 1, 1) * x0 + (1 - abar).sqrt().view(-1, 1, 1, 1) * eps  # DDPM noising
    assert torch.allclose(vp_from_ve(ve, sigma), x_t, atol=1e-5)
    assert torch.allclose(ve_from_vp(x_t, sigma), ve, atol=1e-4)
    s = torch.tensor([0.1, 0.5, 0.9])  # flow σ: x = (1-σ) x0 + σ ε
    flow = (1 - s).view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
    x_ve, s_ve = to_ve(flow, s, "flow")
    assert torch.allclose(x_ve, x0 + (s / (1 - s)).view(-1, 1, 1, 1) * eps, atol=1e-5)
    assert torch.allclose(s_ve, s / (1 - s))
    assert torch.allclose(from_ve(x_ve, s, "flow"), flow, atol=1e-5)
    with pytest.raises(ValueError, match="state: expected one of"):
        to_ve(flow, s, "edm")
