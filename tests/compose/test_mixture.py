"""unlearnkit/compose/mixture.py: priors, x0 mixing, architecture checks."""
import math

import pytest
import torch

from unlearnkit.compose.mixture import (
    check_same_family,
    check_weights,
    describe_differences,
    mix_x0,
    normalise_priors,
)


def test_normalise_priors_divides_by_sum():
    lam = normalise_priors([0.2, 0.6, 0.0])
    assert torch.allclose(lam, torch.tensor([0.25, 0.75, 0.0]))
    assert lam.dtype == torch.float32


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.1])
def test_normalise_priors_rejects_bad_value_naming_the_shard(bad):
    with pytest.raises(ValueError, match="weight of shard 'beta'"):
        normalise_priors([1.0, bad], names=["alpha", "beta"])


def test_normalise_priors_rejects_all_zero_listing_the_weights():
    with pytest.raises(ValueError, match=r"all are zero.*") as err:
        normalise_priors([0.0, 0.0], names=["alpha", "beta"])
    assert "'alpha': 0.0" in str(err.value) and "'beta': 0.0" in str(err.value)


def test_normalise_priors_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        normalise_priors([])


def test_mix_x0_is_per_sample_convex_combination():
    gen = torch.Generator().manual_seed(0)
    x0s = [torch.randn(3, 4, 2, 2, generator=gen) for _ in range(2)]  # N=2 shards, (B, C, H, W)
    w = torch.tensor([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])  # (B, N)
    out = mix_x0(x0s, w)
    assert torch.equal(out[0], x0s[0][0])
    assert torch.allclose(out[1], 0.25 * x0s[0][1] + 0.75 * x0s[1][1])
    assert torch.allclose(out[2], 0.5 * (x0s[0][2] + x0s[1][2]))


def test_mix_x0_of_identical_predictions_is_the_prediction():
    x0 = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    w = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    assert torch.allclose(mix_x0([x0, x0.clone()], w), x0, atol=1e-6)


def test_mix_x0_keeps_dtype():
    x0s = [torch.ones(1, 4, 2, 2, dtype=torch.float16), torch.zeros(1, 4, 2, 2, dtype=torch.float16)]
    out = mix_x0(x0s, torch.tensor([[0.5, 0.5]]))
    assert out.dtype == torch.float16 and torch.allclose(out.float(), torch.full((1, 4, 2, 2), 0.5))


def test_mix_x0_names_the_shard_with_nan_prediction():
    good, bad = torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), math.nan)
    with pytest.raises(ValueError, match="shard 'broken'.*NaN"):
        mix_x0([good, bad], torch.tensor([[0.5, 0.5]]), names=["ok", "broken"])


def test_mix_x0_names_the_shard_with_wrong_shape():
    with pytest.raises(ValueError, match="shard 'small'"):
        mix_x0(
            [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2)],
            torch.tensor([[0.5, 0.5]]),
            names=["big", "small"],
        )


@pytest.mark.parametrize(
    "weights, match",
    [
        (torch.tensor([[0.5, 0.5, 0.0]]), "shape"),
        (torch.tensor([[0.7, 0.7]]), "sum to 1"),
        (torch.tensor([[1.5, -0.5]]), ">= 0"),
        (torch.tensor([[math.nan, 1.0]]), "NaN"),
    ],
)
def test_check_weights_rejects(weights, match):
    with pytest.raises(ValueError, match=match):
        check_weights(weights, n_shards=2, batch=1)


def test_check_same_family_passes_identical_and_empty():
    check_same_family([])
    check_same_family([("a", {"context_dim": 768}), ("b", {"context_dim": 768})])


def test_check_same_family_names_shard_and_differing_keys():
    sigs = [("a", {"context_dim": 768, "in_channels": 4, "model_channels": 320}),
            ("b", {"context_dim": 768, "in_channels": 4, "model_channels": 320}),
            ("c", {"context_dim": 1024, "in_channels": 4, "model_channels": 320})]
    with pytest.raises(ValueError) as err:
        check_same_family(sigs)
    message = str(err.value)
    assert "shard 'c'" in message and "shard 'a'" in message
    assert "context_dim 1024 vs 768" in message
    assert "model_channels" not in message and "in_channels" not in message


def test_describe_differences_covers_missing_keys_and_non_mappings():
    assert describe_differences({"a": 1, "extra": 2}, {"a": 1}) == "extra 2 vs None"
    assert describe_differences((1, 2), (1, 3)) == "(1, 2) vs (1, 3)"
