"""unlearnkit/erase/textencoder_io.py at real SD1.x size: 768 wide, 12 layers, 49408 tokens, 77 positions."""
import pytest
import torch
from real_size_models import SD1_TEXT, random_text_encoder

from unlearnkit import io
from unlearnkit.textencoders import loading as te
from unlearnkit.textencoders.layouts import from_hf


def _sd1_model(seed):
    return random_text_encoder(SD1_TEXT, seed)


@pytest.fixture(scope="module")
def source():
    return _sd1_model(seed=1)


@pytest.fixture(scope="module")
def source_out(source, encode):
    return encode(source)


@pytest.fixture(scope="module")
def target():
    return _sd1_model(seed=2)


def _write(model, folder, form):
    sd = model.state_dict()
    if form == "hf_folder":
        model.save_pretrained(folder / "nudity_unlearned")
        return folder / "nudity_unlearned"
    if form == "bin_folder":
        (folder / "old").mkdir()
        model.config.to_json_file(folder / "old" / "config.json")
        torch.save(from_hf(sd, "hf_text_model"), folder / "old" / "pytorch_model.bin")
        return folder / "old"
    if form == "advunlearn_pt":
        torch.save(from_hf(sd, "diffusers_text_encoder"), folder / "AdvUnlearn_text_encoder.pt")
        return folder / "AdvUnlearn_text_encoder.pt"
    return io.save_safetensors(folder / f"{form}.safetensors", from_hf(sd, form))


@pytest.mark.parametrize("form", ["hf_folder", "bin_folder", "advunlearn_pt", "ldm_sd1", "comfyui_sd1"])
def test_full_size_encoder_loads_from_every_form(source, tmp_path, form):
    hf_sd, info = te.load_text_encoder_state(_write(source, tmp_path, form))
    assert (info.dims.hidden_size, info.dims.num_layers, info.dims.vocab_size, info.dims.max_positions) == (
        768, 12, 49408, 77)
    expected = source.state_dict()
    assert hf_sd.keys() == expected.keys() and all(torch.equal(hf_sd[k], v) for k, v in expected.items())


def test_full_size_swap_gives_source_outputs_and_leaves_target_alone(
    source, source_out, target, tmp_path, encode
):
    path = io.save_safetensors(tmp_path / "erased.safetensors", source.state_dict())
    target_out = encode(target)
    swapped = te.swap_text_encoder(target, path)
    torch.testing.assert_close(encode(swapped), source_out, atol=0, rtol=0)
    assert torch.equal(encode(target), target_out)
    assert not torch.allclose(target_out, source_out, atol=1e-3)


def test_full_size_wrong_depth_and_sd2_width_are_refused(source, target):
    eleven = {k: v for k, v in source.state_dict().items() if not k.startswith("encoder.layers.11.")}
    with pytest.raises(ValueError, match="num layers: source 11 vs target 12"):
        te.swap_text_encoder(target, eleven)
    w, layers = 1024, 2  # SD2 (OpenCLIP ViT-H) width in its LDM layout; zeros are cheap
    sd2 = {
        "cond_stage_model.model.token_embedding.weight": torch.zeros(49408, w),
        "cond_stage_model.model.positional_embedding": torch.zeros(77, w),
        "cond_stage_model.model.ln_final.weight": torch.zeros(w),
        "cond_stage_model.model.ln_final.bias": torch.zeros(w),
    }
    for i in range(layers):
        p = f"cond_stage_model.model.transformer.resblocks.{i}."
        sd2 |= {p + "attn.in_proj_weight": torch.zeros(3 * w, w), p + "attn.in_proj_bias": torch.zeros(3 * w),
                p + "attn.out_proj.weight": torch.zeros(w, w), p + "attn.out_proj.bias": torch.zeros(w),
                p + "mlp.c_fc.weight": torch.zeros(4 * w, w), p + "mlp.c_fc.bias": torch.zeros(4 * w),
                p + "mlp.c_proj.weight": torch.zeros(w, 4 * w), p + "mlp.c_proj.bias": torch.zeros(w)}
        sd2 |= {p + f"{n}.{t}": torch.zeros(w) for n in ("ln_1", "ln_2") for t in ("weight", "bias")}
    with pytest.raises(
        ValueError,
        match=r"hidden size: source 1024 vs target 768.*hidden act: source gelu vs target quick_gelu",
    ):
        te.swap_text_encoder(target, sd2)
