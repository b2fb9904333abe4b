"""unlearnkit/webui/generation.py: a generation's plan (active shards, the gate over the webui's checkpoint
names), the attribution plot it appends, and refusing to sample when the panel's settings cannot run."""
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from unlearnkit.compose.gate_model import GateConfig, GateNet, save_gate
from unlearnkit.webui.generation import Generation, attribution_output, plan_mixture, refuse
from unlearnkit.webui.model_files import FileCache
from unlearnkit.webui.settings import PanelSettings


@pytest.fixture()
def webui(tmp_path):
    (tmp_path / "UnlearnKit" / "gates").mkdir(parents=True)
    torch.manual_seed(0)
    save_gate(str(tmp_path / "UnlearnKit" / "gates" / "style.safetensors"),
              GateNet(GateConfig(names=("bold", "slanted", "plain"), latent_shape=(4, 8, 8))))
    names = ("bold.safetensors", "slanted.safetensors", "x.ckpt")
    checkpoints = {name: str(tmp_path / name) for name in names}
    return SimpleNamespace(models=tmp_path, checkpoints=checkpoints)


def plan(webui, **settings):
    gen = Generation(PanelSettings(enabled=True, **settings))
    plan_mixture(gen, webui.checkpoints, webui.models, FileCache(), FileCache())
    return gen


def test_a_gate_trained_by_compose_train_gate_serves_the_webui_checkpoint_files(webui):
    """`compose train-gate` names shards "bold"; the webui lists "bold.safetensors": it was always refused."""
    gen = plan(webui, shards=(("slanted.safetensors", 1.0), ("bold.safetensors", 1.0), ("x.ckpt", 0.0)),
               gate="classifier", gate_file="style.safetensors")
    assert gen.names == ["slanted.safetensors", "bold.safetensors"]  # weight 0: not planned, never loaded
    gate = gen.runs.make_gate()
    weights = gate(torch.randn(3, 4, 8, 8), torch.ones(3))
    assert weights.shape == (3, 2) and torch.allclose(weights.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match=r"gate: trained for shards .*'x.ckpt'"):
        plan(webui, shards=(("bold.safetensors", 1.0), ("x.ckpt", 1.0)), gate="classifier",
             gate_file="style.safetensors")


def test_the_attribution_plot_is_appended_with_its_infotext(webui):
    gen = plan(webui, shards=(("slanted.safetensors", 0.5), ("bold.safetensors", 0.5)))
    composer = gen.runs.composer_for(torch.randn(2, 4, 8, 8), torch.full((2,), 5.0), 1)
    for sigma in (5.0, 1.0):
        composer(torch.randn(2, 4, 8, 8), torch.full((2,), sigma), lambda i, x, s, rows: x * 0 + i)
    processed = SimpleNamespace(images=[Image.new("RGB", (16, 16))], infotexts=["info"])
    attribution_output(gen, processed)
    assert len(processed.images) == 2 and processed.images[1].width > 200
    assert processed.infotexts == ["info", "info"]
    attribution_output(Generation(PanelSettings()), processed)  # panel off: nothing appended
    assert len(processed.images) == 2


def test_refusing_to_sample_names_the_panel_error():
    with pytest.raises(RuntimeError, match="UnlearnKit: gate file: missing"):
        refuse(ValueError("gate file: missing"))(None, steps=3)
