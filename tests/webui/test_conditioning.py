"""unlearnkit/webui/conditioning.py: encoder edits around the webui's conds; the webui's cond caches cleared
exactly when the edits change; a SLUG patch made on another encoder refused with the reason."""
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from unlearnkit import io
from unlearnkit.unlearn.patches import make_patch, save_patch
from unlearnkit.webui import conditioning as cond
from unlearnkit.webui.model_files import FileCache
from unlearnkit.webui.settings import PanelSettings


def clip(seed):
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=8)
    return CLIPTextModel(config).eval()


class Processing:
    """The webui's processing class: class-level cond caches shared by instances (modules/processing.py)."""

    cached_c = [["p"], "c"]
    cached_uc = [["n"], "uc"]


def test_caches_are_cleared_exactly_when_the_edits_change():
    guard, p = cond.CondCacheGuard(), Processing()
    fills = lambda: (Processing.cached_c.__setitem__(slice(None), [["p"], "c"]))  # noqa: E731
    assert not guard.use(p, Processing, ())  # first generation, no edits: the webui's cache is kept
    assert Processing.cached_c == [["p"], "c"]
    assert guard.use(p, Processing, ("erased.safetensors",)) and Processing.cached_c == [None, None]
    fills()
    assert not guard.use(p, Processing, ("erased.safetensors",)) and Processing.cached_c == [["p"], "c"]
    assert guard.use(p, Processing, ()) and Processing.cached_uc == [None, None]


@pytest.fixture()
def models(tmp_path):
    folder = tmp_path / "models"
    (folder / "UnlearnKit" / "text_encoders").mkdir(parents=True)
    (folder / "UnlearnKit" / "slug_patches").mkdir(parents=True)
    erased, own = clip(1), clip(0)
    io.save_safetensors(folder / "UnlearnKit" / "text_encoders" / "erased.safetensors", erased.state_dict())
    layer = next(n for n, _ in own.named_parameters() if n.endswith("encoder.layers.1.mlp.fc1.weight"))
    delta = torch.randn_like(dict(own.named_parameters())[layer]) * 0.5
    patch = make_patch(own, layer, delta, "seven", 1.0)
    save_patch(patch, folder / "UnlearnKit" / "slug_patches" / "p.safetensors")
    return SimpleNamespace(path=folder, own=own, erased=erased)


def run_edits(models, settings):
    """Wrap a stand-in p.setup_conds that encodes with the model, as the webui does; return its conds."""
    model = SimpleNamespace(cond_stage_model=models.own)
    ids = torch.tensor([[1, 5, 7, 9, 3, 0, 0, 0]])
    p = SimpleNamespace(setup_conds=lambda: models.own(input_ids=ids).last_hidden_state.detach())
    warmed = []
    edits = cond.plan_edits(settings, models.path, FileCache())
    guard = cond.CondCacheGuard()
    cond.edit_conds(p, edits, guard, Processing, lambda: model, warmed.append, "text encoder x")
    out = p.setup_conds()
    assert warmed == [model]
    return out, edits[2]


def test_edits_apply_only_around_the_conds_and_name_their_files(models):
    before = {k: v.clone() for k, v in models.own.state_dict().items()}
    plain, signature = run_edits(models, PanelSettings(enabled=True))
    swapped, signature = run_edits(models, PanelSettings(enabled=True, text_encoder="erased.safetensors"))
    ids = torch.tensor([[1, 5, 7, 9, 3, 0, 0, 0]])
    assert torch.allclose(swapped, models.erased(input_ids=ids).last_hidden_state, atol=1e-5)
    assert signature[0] == "erased.safetensors"
    patched, signature = run_edits(models, PanelSettings(enabled=True, slug_patches=("p.safetensors",)))
    assert not torch.allclose(patched, plain) and len(signature) == 1
    assert all(torch.equal(before[k], v) for k, v in models.own.state_dict().items())
    assert [p.name for p in cond.used_files(PanelSettings(enabled=True, text_encoder="erased.safetensors",
                                                          slug_patches=("p.safetensors",)), models.path)] == [
        "erased.safetensors", "p.safetensors"]


def test_a_slug_patch_made_on_the_loaded_encoder_is_refused_on_an_erased_one(models):
    settings = PanelSettings(enabled=True, text_encoder="erased.safetensors", slug_patches=("p.safetensors",))
    with pytest.raises(ValueError, match="slug patches: .*another model.*not made on text encoder x"):
        run_edits(models, settings)
    assert torch.allclose(run_edits(models, PanelSettings(enabled=True))[0],
                          models.own(input_ids=torch.tensor([[1, 5, 7, 9, 3, 0, 0, 0]])).last_hidden_state)


def test_a_unet_slug_patch_is_refused_by_the_panel_with_the_reason(models):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2, norm_num_groups=4)
    layer = next(n for n, _ in unet.named_parameters() if n.endswith("attn2.to_v.weight"))
    patch = make_patch(unet, layer, torch.zeros_like(dict(unet.named_parameters())[layer]), "bold", 1.0,
                       target="unet")
    save_patch(patch, models.path / "UnlearnKit" / "slug_patches" / "u.safetensors")
    with pytest.raises(ValueError, match="'u.safetensors' edits a UNet layer"):
        run_edits(models, PanelSettings(enabled=True, slug_patches=("u.safetensors",)))
