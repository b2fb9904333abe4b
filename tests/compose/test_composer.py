"""unlearnkit/compose/composer.py: the CDM composition on Gaussian shards, pruning, CFG chunks."""
import pytest
import torch

from unlearnkit.compose.composer import Composer
from unlearnkit.compose.gates import StaticGate
from unlearnkit.compose.routing import prune, renormalise
from unlearnkit.compose.sampling import karras_sigmas, sample_euler_ancestral
from unlearnkit.compose.toy import energy_distance, exact_posterior, joint_score, sample_joint, three_shards

NAMES = ["a", "b", "c"]
PRIORS, SHARDS = three_shards()


class ExactGate:
    """The true posterior P(i | x_t) (CDM Prop. 3.1), available in closed form for Gaussian shards."""

    names = NAMES

    def __call__(self, x, sigma):
        return exact_posterior(SHARDS, PRIORS, x, sigma)


def evaluate(i, x, sigma, rows=None):
    return SHARDS[i].denoise(x, sigma)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0, 20.0])
def test_posterior_weighted_mix_is_the_joint_score(sigma):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) * (1 + sigma)
    s = torch.full((64,), sigma)
    x0 = Composer(NAMES, ExactGate())(x, s, evaluate)
    assert torch.allclose((x0 - x) / sigma**2, joint_score(SHARDS, PRIORS, x, s), atol=1e-4, rtol=1e-4)


def sample(gate, n=1000, steps=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(steps, 0.01, 80.0)
    composer = Composer(NAMES, gate)
    return sample_euler_ancestral(
        lambda x, s: composer(x, s, evaluate), torch.randn(n, 2, generator=g) * 80.0, sigmas, g
    )


def test_gated_sampling_matches_joint_and_naive_averaging_does_not():
    reference = sample_joint(SHARDS, PRIORS, 1000, torch.Generator().manual_seed(1))
    gated = energy_distance(sample(ExactGate()), reference)
    naive = energy_distance(sample(StaticGate(NAMES, PRIORS.tolist())), reference)
    assert gated < 0.03
    assert naive > 10 * gated


def test_same_weights_for_cond_and_uncond_chunks():
    seen = {}

    def evaluate_chunked(i, x, sigma, rows):
        seen[i] = x.shape[0]
        out = SHARDS[i].denoise(x, sigma)
        out[4:] = out[4:] * 0 + i  # "uncond" half predicts a constant per shard
        return out

    x = torch.randn(4, 2).repeat(2, 1)
    s = torch.full((8,), 1.0)
    composer = Composer(NAMES, ExactGate())
    out = composer(x, s, evaluate_chunked, chunks=2)
    w = exact_posterior(SHARDS, PRIORS, x[:4], s[:4])
    assert torch.allclose(out[4:], (w * torch.arange(3.0)).sum(1, keepdim=True).expand(4, 2), atol=1e-5)
    assert set(seen.values()) == {8}


def test_prune_skips_negligible_shards_and_renormalises():
    w = torch.tensor([[0.9, 0.0999, 0.0001], [0.5, 0.4999, 0.0001]])
    active = prune(w, 1e-3)
    assert active == [0, 1]
    assert torch.allclose(renormalise(w, active).sum(1), torch.ones(2))
    assert prune(w, 0.0) == [0, 1, 2]
    assert prune(torch.tensor([[0.4, 0.3, 0.3]]), 0.9) == [0]  # never prune every shard


def test_pruned_shards_are_not_evaluated():
    calls = []

    def counting(i, x, sigma, rows):
        calls.append(i)
        return evaluate(i, x, sigma)

    composer = Composer(NAMES, ExactGate(), prune_eps=1e-3)
    composer(torch.tensor([[-2.0, 0.0]]), torch.tensor([0.05]), counting)  # deep inside shard a
    assert calls == [0]


def test_nan_from_one_shard_is_named():
    def broken(i, x, sigma, rows):
        out = evaluate(i, x, sigma)
        return out * float("nan") if i == 1 else out

    with pytest.raises(ValueError, match="shard 'b'"):
        Composer(NAMES, StaticGate(NAMES, [1, 1, 1]))(torch.zeros(2, 2), torch.ones(2), broken)


def test_per_sample_route_evaluates_each_shard_only_where_it_matters():
    seen = {}

    def rows_eval(i, x, sigma, rows):
        seen[i] = rows.tolist()
        return evaluate(i, x, sigma)

    x = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # one sample deep inside each shard
    s = torch.full((3,), 0.05)
    out = Composer(NAMES, ExactGate(), prune_eps=1e-3, route="sample")(x, s, rows_eval)
    assert seen == {0: [0], 1: [1], 2: [2]}
    full = Composer(NAMES, ExactGate())(x, s, evaluate)
    assert torch.allclose(out, full, atol=1e-3)


def test_per_sample_route_without_pruning_is_exact():
    x = torch.randn(16, 2)
    s = torch.full((16,), 0.7)
    routed = Composer(NAMES, ExactGate(), route="sample")(x, s, evaluate)
    assert torch.allclose(routed, Composer(NAMES, ExactGate())(x, s, evaluate), atol=1e-5)


def test_one_shard_per_sample_above_mc_sigma_is_unbiased():
    x = torch.tensor([[0.5, 1.0], [-1.0, 2.0]])
    s = torch.full((2,), 3.0)
    outs = []
    for seed in range(3000):
        composer = Composer(NAMES, ExactGate(), mc_sigma=1.0, generator=torch.Generator().manual_seed(seed))
        outs.append(composer(x, s, evaluate))
        assert composer.history[-1].evaluated == 2  # one model's cost
    outs = torch.stack(outs)  # (draws, B, D)
    full = Composer(NAMES, ExactGate())(x, s, evaluate)
    standard_error = outs.std(0) / len(outs) ** 0.5
    assert ((outs.mean(0) - full).abs() < 4 * standard_error).all()
    assert outs.std(0).max() > 0.01  # really one shard per sample, not the mix


def test_coupled_draws_keep_each_samples_odds_and_share_shards():
    from unlearnkit.compose.routing import draw_one_hot

    w = torch.tensor([[0.2, 0.5, 0.3], [0.25, 0.45, 0.3], [0.7, 0.1, 0.2]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_one_hot(w, g) for _ in range(4000)]).float()  # (draws, B, N)
    assert torch.allclose(draws.mean(0), w, atol=0.03)
    alike = (draws[:, 0] == draws[:, 1]).all(dim=1).float().mean()
    assert alike > 0.9  # samples with alike weights mostly pick the same shard: few calls per step


def test_density_gate_with_mc_routing_is_refused():
    from unlearnkit.compose.density import DensityGate

    with pytest.raises(ValueError, match="mc_sigma"):
        Composer(NAMES, DensityGate(NAMES, [1, 1, 1]), mc_sigma=5.0)
