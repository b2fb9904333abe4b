"""unlearnkit/compose/diffusers_unet.py: composed diffusers UNets, prediction types, shard files."""
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from unlearnkit import io
from unlearnkit.compose.diffusers_unet import ComposedUNet, load_shard_unet
from unlearnkit.compose.gates import StaticGate
from unlearnkit.compose.prediction import prediction_to_x0
from unlearnkit.compose.reference import reference_x0
from unlearnkit.compose.routing import Evaluation
from unlearnkit.compose.schedules import sigma_to_t, sigmas_of, vp_from_ve

ACP = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod


def tiny_unet(seed: int, cross_attention_dim: int = 32) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="module")
def unets():
    return tiny_unet(0), tiny_unet(1)


def run(unet, x, t=400, ctx=None):
    ctx = torch.randn(x.shape[0], 3, 32, generator=torch.Generator().manual_seed(5)) if ctx is None else ctx
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx).sample


def test_one_hot_weights_reproduce_each_shard(unets):
    a, b = unets
    x = torch.randn(2, 4, 8, 8)
    for w, ref in (([1, 0], a), ([0, 1], b)):
        mixed = run(ComposedUNet([a, b], ["a", "b"], StaticGate(["a", "b"], w), ACP), x)
        assert torch.allclose(mixed, run(ref, x), atol=1e-5)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_half_mix_is_the_mix_of_predictions_for_either_prediction_type(unets, kind):
    a, b = unets
    x = torch.randn(2, 4, 8, 8)
    composed = ComposedUNet([a, b], ["a", "b"], StaticGate(["a", "b"], [1, 3]), ACP, prediction_type=kind)
    assert torch.allclose(run(composed, x), 0.25 * run(a, x) + 0.75 * run(b, x), atol=1e-4)


def test_other_architecture_is_refused(unets):
    with pytest.raises(ValueError, match="shard 'wide'.*differs from shard 'a'"):
        ComposedUNet(
            [unets[0], tiny_unet(2, cross_attention_dim=64)],
            ["a", "wide"],
            StaticGate(["a", "wide"], [1, 1]),
            ACP,
        )


def test_shard_files_load_and_bad_files_are_named(unets, tmp_path):
    a, b = unets
    io.save_safetensors(tmp_path / "b.safetensors", b.state_dict())
    loaded = load_shard_unet(str(tmp_path / "b.safetensors"), a)
    x = torch.randn(1, 4, 8, 8)
    assert torch.allclose(run(loaded, x), run(b, x), atol=1e-6)
    io.save_safetensors(tmp_path / "wide.safetensors", tiny_unet(3, cross_attention_dim=64).state_dict())
    with pytest.raises(ValueError, match="wide.safetensors.*architecture"):
        load_shard_unet(str(tmp_path / "wide.safetensors"), a)
    sd = dict(b.state_dict())
    sd["conv_in.weight"] = sd["conv_in.weight"] * float("nan")
    io.save_safetensors(tmp_path / "nan.safetensors", sd)
    with pytest.raises(ValueError, match="nan.safetensors.*conv_in.weight.*NaN"):
        load_shard_unet(str(tmp_path / "nan.safetensors"), a)
    b.save_pretrained(tmp_path / "b_folder")
    assert torch.allclose(run(load_shard_unet(str(tmp_path / "b_folder"), a), x), run(b, x), atol=1e-6)


def test_per_sample_routing_equals_full_evaluation_when_nothing_is_pruned(unets):
    a, b = unets
    x = torch.randn(3, 4, 8, 8).repeat(2, 1, 1, 1)  # a CFG batch: [uncond, cond] of the same samples
    ctx = torch.randn(6, 3, 32)
    gate = StaticGate(["a", "b"], [1, 2])
    full = run(ComposedUNet([a, b], ["a", "b"], gate, ACP), x, ctx=ctx)
    routed = run(ComposedUNet([a, b], ["a", "b"], gate, ACP, route="sample"), x, ctx=ctx)
    assert torch.allclose(full, routed, atol=1e-5)


@pytest.mark.parametrize("evaluation", [Evaluation("every-shard", 0.0), Evaluation("per-sample", 0.3)])
def test_composed_unet_gives_the_reference_x0_on_a_cfg_batch(unets, evaluation):
    """diffusers stacks [uncond, cond]; the fractional t of Euler-type schedulers maps through log σ."""
    a, b = unets
    g = torch.Generator().manual_seed(2)
    x, sigma = torch.randn(3, 4, 8, 8, generator=g) * 2, torch.tensor([1.7, 1.7, 1.7])
    cond, uncond = torch.randn(3, 3, 32, generator=g), torch.randn(3, 3, 32, generator=g)
    gate = StaticGate(["a", "b"], [1, 2])
    composed = ComposedUNet([a, b], ["a", "b"], gate, ACP, evaluation=evaluation)
    t = sigma_to_t(sigma, sigmas_of(ACP).log())  # fractional
    x_t = vp_from_ve(x, sigma).repeat(2, 1, 1, 1)
    with torch.no_grad():
        eps = composed(x_t, t[0], encoder_hidden_states=torch.cat([uncond, cond])).sample
        x0 = prediction_to_x0(eps, x_t, sigma.repeat(2), "epsilon")
        forwards = [lambda xt, tt, c, u=u: u(xt, tt, encoder_hidden_states=c).sample for u in (a, b)]
        expected = reference_x0(forwards, ["a", "b"], gate, x, sigma, [cond, uncond], ACP,
                                evaluation=evaluation, state="vp")
    assert torch.allclose(x0[3:], expected[:3], atol=1e-4) and torch.allclose(x0[:3], expected[3:], atol=1e-4)
