"""unlearnkit/compose/composer.py at a host's calls: cond and uncond apart, the one-shard draw, the
prompt, flow states, hosts that cannot split rows, and one Composer per sampling run."""
import pytest
import torch

from unlearnkit.compose.composer import Composer, ComposerRuns
from unlearnkit.compose.density import DensityGate
from unlearnkit.compose.gates import Gate, StaticGate
from unlearnkit.compose.routing import Evaluation
from unlearnkit.compose.toy import exact_posterior, three_shards

NAMES = ["a", "b", "c"]
PRIORS, SHARDS = three_shards()


class ExactGate(Gate):
    names = NAMES

    def __call__(self, x, sigma, context=None):
        return exact_posterior(SHARDS, PRIORS, x, sigma)


def evaluate(i, x, sigma, rows=None):
    return SHARDS[i].denoise(x, sigma)


def uncond_evaluate(i, x, sigma, rows=None):
    return SHARDS[i].denoise(x, sigma) * 0 + i  # the "uncond" chunk predicts a constant per shard


def batch(sigma=3.0, n=64, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * 3, torch.full((n,), sigma)


@pytest.mark.parametrize("evaluation", [Evaluation("fast", 0.01, 1.0), Evaluation("per-sample", 0.05)])
def test_cond_and_uncond_apart_share_weights_draws_and_one_record(evaluation):
    x, s = batch()
    together = Composer(NAMES, ExactGate(), **evaluation.routing())

    def chunked(i, xi, si, rows):  # [cond, uncond] in one call
        half = len(xi) // 2
        return torch.cat([evaluate(i, xi[:half], si[:half]), uncond_evaluate(i, xi[half:], si[half:])])

    both = together(torch.cat([x, x]), torch.cat([s, s]), chunked, chunks=2)
    apart = Composer(NAMES, ExactGate(), **evaluation.routing())
    uncond = apart(x, s, uncond_evaluate, score_chunk=None)  # ComfyUI may run the uncond first
    cond = apart(x, s, evaluate)
    assert torch.allclose(torch.cat([cond, uncond]), both, atol=1e-6)
    assert len(apart.history) == 1 and torch.equal(apart.history[0].weights, together.history[0].weights)


def test_fast_draws_follow_the_noise_and_cost_one_model():
    x, s = batch(5.0)
    runs = [Composer(NAMES, ExactGate(), **Evaluation("fast").routing()) for _ in range(2)]
    outs = [c(x, s, evaluate) for c in runs]
    assert torch.equal(outs[0], outs[1])  # same inputs, same draws: reproducible without a seed input
    assert runs[0].history[0].evaluated == x.shape[0]
    other = Composer(NAMES, ExactGate(), **Evaluation("fast").routing())(batch(5.0, seed=1)[0], s, evaluate)
    assert not torch.equal(other, outs[0])


def test_a_host_that_cannot_split_rows_gets_the_same_mix():
    x, s = batch(0.3)
    knobs = Evaluation("per-sample", 0.05).routing()
    split = Composer(NAMES, ExactGate(), **knobs)(x, s, evaluate)
    calls = []

    def whole(i, xi, si, rows):
        calls.append(rows)
        return evaluate(i, xi, si)

    assert torch.allclose(Composer(NAMES, ExactGate(), **knobs)(x, s, whole, subsets=False), split, atol=1e-6)
    assert calls and all(r is None for r in calls)


class PromptGate(Gate):
    names = ["a", "b"]
    reads_prompt = True

    def __init__(self):
        self.seen = []

    def __call__(self, x, sigma, context=None):
        self.seen.append(None if context is None else float(context.mean()))
        return torch.tensor([[0.5, 0.5]]).expand(x.shape[0], -1)


def test_a_prompt_reading_gate_reads_the_prompt_chunk_and_reuses_it_when_the_uncond_comes_first():
    gate = PromptGate()
    composer = Composer(["a", "b"], gate)
    x, ctx = torch.randn(2, 2), torch.full((2, 3, 4), 7.0)
    composer(x, torch.full((2,), 3.0), evaluate, score_chunk=None)  # first step, uncond first: no prompt yet
    composer(x, torch.full((2,), 3.0), evaluate, context=ctx)
    composer(x * 0.9, torch.full((2,), 2.0), evaluate, score_chunk=None)  # next step: the run's prompt
    assert gate.seen == [None, 7.0]


def test_flow_states_reach_the_gate_in_ve_form():
    seen = []

    class Spy(Gate):
        names = ["a"]

        def __call__(self, x, sigma, context=None):
            seen.append((x, sigma))
            return torch.ones(x.shape[0], 1)

    x, s = torch.ones(2, 2), torch.tensor([0.5, 0.5])
    Composer(["a"], Spy())(x, s, evaluate, state="flow")
    assert torch.allclose(seen[0][0], 2 * x) and torch.allclose(seen[0][1], torch.ones(2))


def test_the_density_gate_refuses_the_draw_and_runs_resolve_it():
    with pytest.raises(ValueError, match="mc_sigma: this gate needs every shard's score"):
        Composer(NAMES, DensityGate(NAMES, [1, 1, 1]), mc_sigma=5.0)
    runs = ComposerRuns(NAMES, lambda: DensityGate(NAMES, [1, 1, 1]), evaluation=Evaluation("fast"))
    assert runs.evaluation.mode == "per-sample" and runs.tracks_density


def test_runs_start_when_sigma_rises_or_the_shape_changes_and_keep_bounds_them():
    runs = ComposerRuns(["a"], lambda: StaticGate(["a"], [1]), keep=2)
    x = torch.zeros(2, 4, 8, 8)
    first = runs.composer_for(x, torch.tensor([5.0, 5.0]), 2)
    assert runs.composer_for(x, torch.tensor([3.0, 3.0]), 2) is first
    second = runs.composer_for(x, torch.tensor([4.0, 4.0]), 2)  # σ rose: next batch / hires pass
    third = runs.composer_for(torch.zeros(2, 4, 16, 16), torch.tensor([1.0, 1.0]), 2)
    assert len({id(first), id(second), id(third)}) == 3 and runs.runs == [second, third]
