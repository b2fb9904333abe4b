"""unlearnkit/compose/density.py on Gaussian shards, where log p_t^i and the posterior are exact."""
import pytest
import torch

from unlearnkit.compose.composer import Composer
from unlearnkit.compose.density import DensityGate, ito_increment, score_from_x0
from unlearnkit.compose.sampling import karras_sigmas, sample_euler, sample_euler_ancestral
from unlearnkit.compose.toy import energy_distance, exact_posterior, sample_joint, three_shards

NAMES = ["left", "right", "top"]
PRIORS, SHARDS = three_shards()


def evaluate(i, x, sigma, rows=None):
    return SHARDS[i].denoise(x, sigma)


def run(gate, steps: int, ode: bool, n: int = 1000, seed: int = 0):
    """Sample with the gated composition; return samples and the mean L1 gap to the exact posterior per
    step."""
    composer = Composer(NAMES, gate)
    gaps = []

    def model(x, sigma):
        out = composer(x, sigma, evaluate)
        gaps.append(
            float(
                (composer.history[-1].weights - exact_posterior(SHARDS, PRIORS, x, sigma)).abs().sum(1).mean()
            )
        )
        return out

    g = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(steps, 0.01, 80.0)
    x = torch.randn(n, 2, generator=g) * sigmas[0]
    out = sample_euler(model, x, sigmas) if ode else sample_euler_ancestral(model, x, sigmas, g)
    return out, gaps


def test_score_from_x0_inverts_tweedie():
    x, sigma = torch.randn(5, 2), torch.full((5,), 0.7)
    assert torch.allclose(
        score_from_x0(x, SHARDS[1].denoise(x, sigma), sigma), SHARDS[1].score(x, sigma), atol=1e-5
    )


def test_ito_increment_matches_formula_per_shard():
    dx = torch.tensor([[1.0, 2.0]])
    scores = torch.tensor([[[0.5, 0.0]], [[0.0, 1.0]]])  # (N=2, B=1, D=2)
    inc = ito_increment(dx, torch.tensor([2.0]), torch.tensor([-0.5]), scores)
    # <dx, s> - σ|dσ| ‖s‖²: shard 0: 0.5 - 1 * 0.25; shard 1: 2 - 1 * 1
    assert torch.allclose(inc, torch.tensor([[0.25, 1.0]]))


@pytest.mark.parametrize("ode", [False, True])
def test_density_weights_converge_to_exact_posterior(ode):
    gaps = {
        steps: max(run(DensityGate(NAMES, PRIORS.tolist(), ode=ode), steps, ode=ode, n=500)[1])
        for steps in (30, 400)
    }
    assert gaps[400] < 0.03, gaps
    assert gaps[400] < gaps[30] / 3, gaps


def test_divergence_term_fixes_ode_paths():
    _, plain = run(DensityGate(NAMES, PRIORS.tolist(), ode=False), 200, ode=True, n=500)
    _, fixed = run(DensityGate(NAMES, PRIORS.tolist(), ode=True), 200, ode=True, n=500)
    assert fixed[-1] < plain[-1] / 3, (fixed[-1], plain[-1])


def test_density_samples_match_the_joint_distribution():
    samples, _ = run(DensityGate(NAMES, PRIORS.tolist()), 100, ode=False)
    reference = sample_joint(SHARDS, PRIORS, 1000, torch.Generator().manual_seed(1))
    assert energy_distance(samples, reference) < 0.03


def test_new_trajectory_resets_the_estimate():
    gate = DensityGate(NAMES, PRIORS.tolist())
    run(gate, 20, ode=False, n=50)
    first = gate(torch.zeros(50, 2), torch.full((50,), 80.0))  # sigma jumped up: a new path
    assert torch.allclose(first, PRIORS.expand(50, 3), atol=1e-6)


def test_cond_and_uncond_evaluated_apart_add_each_step_once():
    """Hosts may evaluate the uncond half before the cond half; the gate must not count a step twice."""
    def path(split: bool):
        gate = DensityGate(NAMES, PRIORS.tolist())
        composer = Composer(NAMES, gate)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 2, generator=g) * 20
        for s, s_next in zip([20.0, 5.0, 1.0], [5.0, 1.0, 0.2]):
            sb = torch.full((8,), s)
            if split:
                composer(x, sb, evaluate, score_chunk=None)  # uncond-only call first
            x0 = composer(x, sb, evaluate, score_chunk=0)
            x = x + (x - x0) / s * (s_next - s)
        return gate(x, torch.full((8,), 0.2))

    assert torch.allclose(path(split=True), path(split=False), atol=1e-6)


def test_ode_probe_directions_follow_the_path_not_torchs_global_generator():
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    probes = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # whatever else used the global generator before
        probes.append(DensityGate(NAMES, [1, 1, 1], ode=True).probe(x)[0])
    assert torch.equal(probes[0], probes[1])
    assert DensityGate(NAMES, [1, 1, 1]).probe(x) is None  # the SDE form needs no probe
