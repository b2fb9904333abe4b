"""unlearnkit/webui/mixing.py: Forge wrapper (VE x0) and A1111 forward (VP eps/v) give the core Composer's
mix; the panel's settings choose the gate and the evaluate mode."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from unlearnkit.compose.composer import Composer
from unlearnkit.compose.density import DensityGate
from unlearnkit.compose.gates import StaticGate
from unlearnkit.compose.prediction import prediction_to_x0
from unlearnkit.compose.routing import Evaluation
from unlearnkit.compose.schedules import sigmas_of, t_to_sigma
from unlearnkit.webui.mixing import ComposerRuns, VEMixture, VPMixture, build_gate, runs_for
from unlearnkit.webui.settings import PanelSettings

BETAS = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
ACP = torch.cumprod(1 - BETAS, 0)  # SD's scaled-linear schedule, as sd_model.alphas_cumprod


def tiny_unet(seed, in_channels=4):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def ldm_forward(unet):
    """The A1111 UNet call convention (x, timesteps, context=...) over a diffusers UNet."""
    def forward(x, timesteps=None, context=None, **kwargs):
        return unet(x, timesteps, encoder_hidden_states=context).sample
    return forward


@pytest.fixture(scope="module")
def unets():
    return tiny_unet(0), tiny_unet(1)


def vp_inputs(seed=3, batch=2):
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 3, 32, generator=g)
    t = torch.full((batch,), 431.25)  # fractional, as k-diffusion passes it
    return x, t, ctx


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_vp_mixture_equals_composer_on_the_same_inputs(unets, prediction):
    a, b = unets
    x, t, ctx = vp_inputs()
    xin, tin, cin = (
        torch.cat([x, x]),
        torch.cat([t, t]),
        torch.cat([ctx, torch.zeros_like(ctx)]),
    )  # cond, uncond
    runs = ComposerRuns(["a", "b"], lambda: StaticGate(["a", "b"], [0.7, 0.3]))
    with torch.no_grad():
        out = VPMixture(runs, [ldm_forward(a), ldm_forward(b)], ACP, prediction)(xin, tin, context=cin)
        eps = [ldm_forward(u)(xin, tin, context=cin) for u in (a, b)]
    # same weights on the same (x_t, t): the convex mix of x0 is the convex mix of eps / v
    assert torch.allclose(out, 0.7 * eps[0] + 0.3 * eps[1], atol=1e-5)
    # and the core Composer, called on the VE pair, agrees
    sigma = t_to_sigma(tin, sigmas_of(ACP).log())
    composer = Composer(["a", "b"], StaticGate(["a", "b"], [0.7, 0.3]))
    x0 = composer(xin, sigma, lambda i, *_: prediction_to_x0(eps[i], xin, sigma, prediction), 2, state="vp")
    x0_mix = prediction_to_x0(out, xin, sigma, prediction)
    assert torch.allclose(x0_mix, x0, atol=1e-4)
    assert len(runs.runs) == 1 and runs.runs[0].history[0].weights.shape == (2, 2)


def test_vp_mixture_density_gate_scores_cond_once_and_passes_extra_channels():
    a, b = (
        tiny_unet(0, in_channels=9),
        tiny_unet(1, in_channels=9),
    )  # inpainting layout: latent + mask + image
    x, t, ctx = vp_inputs(batch=1)
    extra = torch.randn(1, 5, 8, 8)
    xin, tin = torch.cat([x, x]), torch.cat([t, t])
    full = torch.cat([xin, torch.cat([extra, extra])], dim=1)
    runs = ComposerRuns(["a", "b"], lambda: DensityGate(["a", "b"], [1, 1]))
    mixer = VPMixture(runs, [ldm_forward(a), ldm_forward(b)], ACP, latent_channels=4)
    with torch.no_grad():
        out = mixer(full, tin, context=torch.cat([ctx, ctx]))
        gate = runs.runs[0].gate
        scored = gate.log_lik.clone()
        mixer(
            full, tin, context=torch.cat([ctx, ctx])
        )  # the same point again (an uncond-only call): not rescored
    assert out.shape == (2, 4, 8, 8) and len(runs.runs) == 1
    assert torch.equal(gate.log_lik, scored) and torch.isfinite(scored).all()


def test_vp_mixture_refuses_density_with_uneven_repeats(unets):
    x, t, ctx = vp_inputs()
    xin = torch.cat([x[0:1], x[0:1], x[1:2], x])  # sample 0 has two AND parts, sample 1 one
    runs = ComposerRuns(["a", "b"], lambda: DensityGate(["a", "b"], [1, 1]))
    mixer = VPMixture(runs, [ldm_forward(u) for u in unets], ACP)
    with pytest.raises(ValueError, match="density gate"):
        mixer(xin, torch.full((5,), 400.0), context=torch.randn(5, 3, 32))


def fake_apply(scale):
    def apply_model(x, sigma, c_crossattn=None, transformer_options=None):
        return scale * x / (1 + sigma.view(-1, 1, 1, 1)) + c_crossattn.mean()
    return apply_model


def test_ve_mixture_uses_host_model_for_none_and_chunks_from_marks():
    runs = ComposerRuns(["base", "other"], lambda: DensityGate(["base", "other"], [1, 3]))
    mixture = VEMixture(runs, [None, fake_apply(2.0)])
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 3.0])
    c = {"c_crossattn": torch.ones(4, 3, 8), "transformer_options": {}}
    out = mixture(fake_apply(1.0), {"input": torch.cat([x, x]), "timestep": torch.cat([sigma, sigma]), "c": c,
                                    "cond_or_uncond": [1, 0]})
    ref = Composer(["base", "other"], DensityGate(["base", "other"], [1, 3]))
    expected = ref(
        torch.cat([x, x]),
        torch.cat([sigma, sigma]),
        lambda i, xi, si, rows: (fake_apply(1.0) if i == 0 else fake_apply(2.0))(xi, si, **c),
        chunks=2,
        score_chunk=1,
    )
    assert torch.allclose(out, expected)
    assert runs.runs[0].gate._last is not None  # the cond chunk (second) was scored


def test_ve_mixture_goes_through_an_earlier_wrapper_and_survives_clone_deepcopy():
    import copy
    calls = []

    def inner(apply_model, args):
        calls.append(args["input"].shape)
        return apply_model(args["input"], args["timestep"], **args["c"])

    runs = ComposerRuns(["a", "b"], lambda: StaticGate(["a", "b"], [1, 1]))
    mixture = VEMixture(runs, [fake_apply(1.0), fake_apply(3.0)], inner=inner)
    assert copy.deepcopy({"w": mixture})["w"] is mixture and mixture.to("cpu") is mixture
    x = torch.randn(1, 4, 8, 8)
    c = {"c_crossattn": torch.zeros(1, 3, 8)}
    out = mixture(
        fake_apply(9.0), {"input": x, "timestep": torch.tensor([2.0]), "c": c, "cond_or_uncond": [0]}
    )
    assert len(calls) == 2 and torch.allclose(out, 2.0 * x / 3)


def test_per_sample_routing_hands_each_shard_only_its_rows_and_their_conds():
    seen = {}

    def shard(i):
        def apply_model(x, sigma, c_crossattn=None, transformer_options=None):
            seen[i] = (x.shape[0], c_crossattn[:, 0, 0].tolist(), transformer_options["sigmas"].tolist())
            return x * 0 + i
        return apply_model

    class Split(StaticGate):  # sample 0 -> shard a, sample 1 -> shard b
        def __call__(self, x, sigma, context=None):
            return torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    runs = ComposerRuns(["a", "b"], lambda: Split(["a", "b"], [1, 1]), evaluation=Evaluation("per-sample"))
    rows = torch.arange(4.0)
    c = {"c_crossattn": rows.view(4, 1, 1).expand(4, 3, 8), "transformer_options": {"sigmas": rows}}
    args = {"input": torch.zeros(4, 4, 8, 8), "timestep": torch.ones(4), "c": c, "cond_or_uncond": [0, 1]}
    out = VEMixture(runs, [shard(0), shard(1)])(shard(9), args)
    assert seen == {0: (2, [0.0, 2.0], [0.0, 2.0]), 1: (2, [1.0, 3.0], [1.0, 3.0])}
    assert out[:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_a_controlnet_hint_is_never_split_by_rows():
    seen = []

    def apply_model(x, sigma, c_crossattn=None, control=None, transformer_options=None):
        seen.append(x.shape[0])
        return x * 0

    class Split(StaticGate):
        def __call__(self, x, sigma, context=None):
            return torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    runs = ComposerRuns(["a", "b"], lambda: Split(["a", "b"], [1, 1]), evaluation=Evaluation("per-sample"))
    c = {"c_crossattn": torch.zeros(4, 3, 8), "control": object(), "transformer_options": {}}
    args = {"input": torch.zeros(4, 4, 8, 8), "timestep": torch.ones(4), "c": c, "cond_or_uncond": [0, 1]}
    VEMixture(runs, [apply_model, apply_model])(apply_model, args)
    assert seen == [4, 4]  # each shard on every row; its weight is 0 where it was not chosen


def test_runs_for_builds_the_panel_gate_and_evaluate_mode():
    runs = runs_for(PanelSettings(gate="density (ODE sampler)", evaluate="fast"), ["a", "b"], [1, 1])
    assert runs.tracks_density and runs.new_composer().gate.ode
    assert runs.evaluation.mode == "per-sample"  # the density gate needs every shard's score
    runs = runs_for(PanelSettings(evaluate="every-shard", prune_eps=0.0), ["a"], [1])
    assert runs.new_composer().route == "batch" and runs.new_composer().prune_eps == 0.0


def test_composer_runs_start_a_new_run_when_sigma_rises_or_shape_changes():
    runs = ComposerRuns(["a"], lambda: StaticGate(["a"], [1]))
    x = torch.zeros(2, 4, 8, 8)
    first = runs.composer_for(x, torch.tensor([5.0, 5.0]), 2)
    assert runs.composer_for(x, torch.tensor([3.0, 3.0]), 2) is first
    second = runs.composer_for(x, torch.tensor([4.0, 4.0]), 2)  # sigma rose: next batch / hires pass
    third = runs.composer_for(torch.zeros(2, 4, 16, 16), torch.tensor([1.0, 1.0]), 2)
    assert len({id(first), id(second), id(third)}) == 3 and len(runs.runs) == 3


def test_build_gate_is_the_core_registry_with_the_panel_input_named():
    assert build_gate("density (ODE sampler)", ["a"], [1]).ode  # infotexts of earlier versions
    with pytest.raises(ValueError, match="gate file"):
        build_gate("classifier", ["a"], [1])
    with pytest.raises(ValueError, match="gate: expected one of"):
        build_gate("magic", ["a"], [1])


@pytest.mark.parametrize("mode", ["every-shard", "per-sample", "fast"])
def test_vp_mixture_gives_the_core_reference_x0(unets, mode):
    """A1111's call convention (x_t, fractional t, context=...; cond rows first, uncond last) through
    VPMixture equals reference_x0 with state "vp": the helper the real-A1111 test compares with."""
    from unlearnkit.compose.gate_model import ClassifierGate, GateConfig, GateNet
    from unlearnkit.compose.reference import reference_x0
    from unlearnkit.compose.schedules import sigma_to_t, vp_from_ve

    torch.manual_seed(0)
    net = GateNet(GateConfig(names=("a", "b"), latent_shape=(4, 8, 8)))
    with torch.no_grad():
        net.head.weight.mul_(30.0)
    evaluation = Evaluation(mode, 0.3, 1.0)
    g = torch.Generator().manual_seed(6)
    x, sigma = torch.randn(3, 4, 8, 8, generator=g) * 3, torch.full((3,), 3.0)
    cond, uncond = torch.randn(3, 3, 32, generator=g), torch.randn(3, 3, 32, generator=g)
    t = sigma_to_t(sigma, sigmas_of(ACP).log())  # k-diffusion's fractional t
    x_t = vp_from_ve(x, sigma).repeat(2, 1, 1, 1)
    runs = ComposerRuns(["a", "b"], lambda: ClassifierGate(net, ["a", "b"], [1, 1]), evaluation=evaluation)
    with torch.no_grad():
        mixer = VPMixture(runs, [ldm_forward(u) for u in unets], ACP)
        eps = mixer(x_t, t.repeat(2), context=torch.cat([cond, uncond]))
        forwards = [lambda xt, tt, c, u=u: u(xt, tt, encoder_hidden_states=c).sample for u in unets]
        expected = reference_x0(forwards, ["a", "b"], ClassifierGate(net, ["a", "b"], [1, 1]), x, sigma,
                                [cond, uncond], ACP, evaluation=evaluation, state="vp")
    assert torch.allclose(prediction_to_x0(eps, x_t, sigma.repeat(2), "epsilon"), expected, atol=1e-4)
