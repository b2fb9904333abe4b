"""unlearnkit/webui/unet_hooks.py: the A1111 forward hook and its restore, and where shard copies live
(offloaded to the CPU under --medvram / --lowvram, moved to the device only while each one runs).

No GPU here: the offload test records the moves a shard makes around its call (``move``) with an input on
torch's "meta" device standing for the GPU; the same policy then runs end to end on the CPU, where the mixed
prediction must equal the one without offloading."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from unlearnkit import io
from unlearnkit.compose.gates import StaticGate
from unlearnkit.webui.mixing import ComposerRuns
from unlearnkit.webui.model_files import FileCache
from unlearnkit.webui.unet_hooks import CPU, OffloadedShard, a1111_mixture, install_forward, shard_storage

ACP = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)


class ConvUNet(nn.Module):
    """LDM UNetModel's call convention (x, timesteps, context) -> eps, on a conv."""

    out_channels = 4

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x, timesteps=None, context=None):
        return self.conv(x) * (1 + timesteps.view(-1, 1, 1, 1) / 1000)


class Recorder(nn.Module):
    """Returns its input; records the device of each call's input."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def forward(self, x, *args, fail=False, **kwargs):
        self.seen.append(x.device.type)
        if fail:
            raise RuntimeError("interrupted")
        return x


def test_install_forward_restores_what_was_there():
    unet = ConvUNet(0)
    restore = install_forward(unet, lambda *a: "mixed")
    assert unet(torch.zeros(1)) == "mixed"
    restore()
    assert "forward" not in unet.__dict__
    unet.forward = host_hook = lambda *a: "host"
    restore = install_forward(unet, lambda *a: "mixed")
    restore()
    assert unet.forward is host_hook


def test_shard_copies_are_offloaded_only_when_the_webui_saves_vram():
    assert shard_storage(SimpleNamespace(lowvram=True)) == CPU
    assert shard_storage(SimpleNamespace(lowvram=False)) is None and shard_storage(SimpleNamespace()) is None


def test_an_offloaded_shard_visits_the_device_only_for_its_own_call():
    moves = []
    shard = OffloadedShard(Recorder(), CPU, move=lambda module, device: moves.append(device.type))
    on_device = torch.empty(2, 4, device="meta")  # stands for a GPU tensor
    shard(on_device)
    assert moves == ["meta", "cpu"] and shard.module.seen == ["meta"]
    with pytest.raises(RuntimeError, match="interrupted"):
        shard(on_device, fail=True)
    assert moves[-2:] == ["meta", "cpu"]  # back on the CPU after a failed call too
    shard(torch.zeros(2, 4))
    assert len(moves) == 4  # an input already on the CPU moves nothing


def save_shard(path: Path, unet: nn.Module) -> Path:
    io.save_safetensors(path, {f"model.diffusion_model.{k}": v.half() for k, v in unet.state_dict().items()})
    return path


@pytest.mark.parametrize("lowvram", [False, True])
def test_a1111_mixture_offloaded_or_not_gives_the_same_prediction(tmp_path, lowvram):
    base = ConvUNet(0)
    paths = [save_shard(tmp_path / f"{n}.safetensors", ConvUNet(seed)) for n, seed in (("a", 1), ("b", 2))]
    loaded = SimpleNamespace(filename=str(tmp_path / "base.safetensors"))
    sd_model = SimpleNamespace(model=SimpleNamespace(diffusion_model=base), alphas_cumprod=ACP,
                               parameterization="eps", lowvram=lowvram, sd_checkpoint_info=loaded)
    names = ["a.safetensors", "b.safetensors"]
    gen = SimpleNamespace(names=names, paths=paths,
                          runs=ComposerRuns(names, lambda: StaticGate(names, [0.25, 0.75])))
    cache = FileCache()
    unet, mixer = a1111_mixture(gen, sd_model, cache)
    assert unet is base and all(isinstance(f, OffloadedShard) == lowvram for f in mixer.forwards)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0])
    with torch.no_grad():
        out = mixer(x, t)
        shards = [ConvUNet(1).half().float(), ConvUNet(2).half().float()]
        sigma = ((1 - ACP[500]) / ACP[500]) ** 0.5
        x0 = [x / ACP[500] ** 0.5 - sigma * s(x, t) for s in shards]  # x0 of each shard in VE form
        mixed_x0 = 0.25 * x0[0] + 0.75 * x0[1]
        expected = (x / ACP[500] ** 0.5 - mixed_x0) / sigma
    assert torch.allclose(out, expected, atol=1e-4)
