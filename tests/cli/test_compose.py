"""`python -m unlearnkit compose sample` on the tiny world, and the CLI's composed UNet against the core's
reference x0 (the same shards, gate, evaluate mode and inputs as every host)."""

import argparse
import json

import pytest
import torch

from unlearnkit.cli import main
from unlearnkit.cli.compose import composed_unet
from unlearnkit.compose.gate_model import ClassifierGate, GateConfig, GateNet, save_gate
from unlearnkit.compose.prediction import prediction_to_x0
from unlearnkit.compose.reference import reference_x0
from unlearnkit.compose.routing import Evaluation
from unlearnkit.compose.schedules import sigma_to_t, sigmas_of, vp_from_ve
from unlearnkit.compose.shards import Shard, ShardSet
from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.data import shard_names
from unlearnkit.tinyworld.models import build_scheduler

NAMES = shard_names("style")


@pytest.fixture(scope="module")
def gate_file(tmp_path_factory):
    torch.manual_seed(0)
    net = GateNet(GateConfig(names=tuple(NAMES), latent_shape=(4, 8, 8), family="tinyworld"))
    with torch.no_grad():
        net.head.weight.mul_(30.0)  # spread the logits: some weights fall below ε
    path = tmp_path_factory.mktemp("gate") / "gate.safetensors"
    save_gate(str(path), net)
    return path, net


@pytest.mark.parametrize("evaluate", ["every-shard", "per-sample", "fast"])
def test_cli_composed_unet_gives_the_reference_x0(gate_file, evaluate):
    path, net = gate_file
    shards = ShardSet(tuple(Shard(n, store.load_unet(f"style/{n}").float().eval()) for n in NAMES))
    scheduler = build_scheduler("ddim")
    args = argparse.Namespace(gate="classifier", gate_file=str(path), evaluate=evaluate, prune_eps=0.3,
                              fast_sigma=1.0)
    unet = composed_unet(shards, scheduler, args)
    g = torch.Generator().manual_seed(1)
    x, sigma = torch.randn(3, 4, 8, 8, generator=g), torch.full((3,), 3.0)
    cond, uncond = torch.randn(3, 8, 64, generator=g), torch.randn(3, 8, 64, generator=g)
    t = sigma_to_t(sigma, sigmas_of(scheduler.alphas_cumprod).log())  # fractional, as Euler schedulers
    x_t = vp_from_ve(x, sigma).repeat(2, 1, 1, 1)
    with torch.no_grad():
        eps = unet(x_t, t[0], encoder_hidden_states=torch.cat([uncond, cond])).sample  # [uncond, cond]
        x0 = prediction_to_x0(eps, x_t, sigma.repeat(2), "epsilon")
        forwards = [lambda xt, tt, c, u=s.model: u(xt, tt, encoder_hidden_states=c).sample for s in shards]
        gate = ClassifierGate(net, NAMES, [1.0] * len(NAMES))
        expected = reference_x0(forwards, NAMES, gate, x, sigma, [cond, uncond], scheduler.alphas_cumprod,
                                evaluation=Evaluation(evaluate, 0.3, 1.0), state="vp")
    assert torch.allclose(x0[3:], expected[:3], atol=1e-4) and torch.allclose(x0[:3], expected[3:], atol=1e-4)


def test_sample_writes_images_and_attribution_with_the_evaluate_mode(tmp_path, capsys):
    out = tmp_path / "compose"
    code = main(["compose", "sample", "--prompt", "a handwritten digit 3", "--n", "2", "--steps", "3",
                 "--evaluate", "fast", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["shards"] == list(NAMES) and len(summary["top_shard"]) == 2
    report = json.loads((out / "attribution.json").read_text())
    assert report["evaluate"] == "fast" and len(report["evaluations"]) == 3
    assert (out / "samples.png").is_file() and (out / "attribution.png").is_file()


def test_bad_evaluate_settings_name_the_option():
    one = ShardSet((Shard("a", store.load_unet("style/bold")),))

    def options(**kw):
        defaults = {"gate": "static", "gate_file": None, "evaluate": "fast", "prune_eps": 0.01,
                    "fast_sigma": 1.0}
        return argparse.Namespace(**{**defaults, **kw})

    with pytest.raises(ValueError, match="--prune-eps: expected a number in"):
        composed_unet(one, build_scheduler("ddim"), options(prune_eps=0.9))
    with pytest.raises(ValueError, match="--gate-file: the 'classifier' gate needs a trained shard gate"):
        composed_unet(one, build_scheduler("ddim"), options(gate="classifier"))
