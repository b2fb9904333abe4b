"""unlearnkit/erase/textencoder_io.py: every source form loads, validates, and swaps without touching the
target."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from unlearnkit import io
from unlearnkit.textencoders import loading as te
from unlearnkit.textencoders.layouts import from_hf


class _RunsCode:
    """A pickle payload that would create a marker file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _OldStyle(torch.nn.Module):
    """A transformers-4-like model: the encoder sits under `text_model.` in its state dict."""

    def __init__(self, config):
        from transformers import CLIPTextModel

        super().__init__()
        self.config = config
        self.text_model = CLIPTextModel(config)

    def forward(self, input_ids):
        return self.text_model(input_ids=input_ids)


@pytest.fixture
def pair(make_encoder):
    """(erased source, original target): same dims, different weights."""
    return make_encoder(seed=1), make_encoder(seed=2)


def _save_as(model, tmp_path, form):
    """Write ``model`` in one of the forms people have; returns the path to give the loader."""
    sd = model.state_dict()
    if form == "hf_folder":
        model.save_pretrained(tmp_path / "nudity_unlearned")
        return tmp_path / "nudity_unlearned"
    if form == "bin_folder":  # older transformers: pytorch_model.bin with text_model. keys + position_ids
        folder = tmp_path / "vangogh_unlearned"
        folder.mkdir()
        model.config.to_json_file(folder / "config.json")
        old = {**from_hf(sd, "hf_text_model"), "text_model.embeddings.position_ids": torch.arange(77)[None]}
        torch.save(old, folder / "pytorch_model.bin")
        return folder
    if form == "advunlearn_pt":
        path = tmp_path / "AdvUnlearn_Nudity_text_encoder_full.pt"
        torch.save(from_hf(sd, "diffusers_text_encoder"), path)
        return path
    layout = {"hf_file": "hf", "ldm_file": "ldm_sd1", "comfy_file": "comfyui_sd1"}[form]
    return io.save_safetensors(tmp_path / f"{form}.safetensors", from_hf(sd, layout))


FORMS = ["hf_folder", "bin_folder", "advunlearn_pt", "hf_file", "ldm_file", "comfy_file"]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_swaps_in_and_gives_the_source_outputs(pair, tmp_path, encode, form):
    source, target = pair
    before = {k: v.clone() for k, v in target.state_dict().items()}
    target_out = encode(target)
    swapped = te.swap_text_encoder(target, _save_as(source, tmp_path, form))
    assert swapped is not target and isinstance(swapped, type(target))
    torch.testing.assert_close(encode(swapped), encode(source), atol=0, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert torch.equal(encode(target), target_out)
    target_ptrs = {p.data_ptr() for p in target.parameters()}
    assert not any(p.data_ptr() in target_ptrs for p in swapped.parameters())


def test_info_reports_layout_dims_and_hash(pair, tmp_path):
    folder = _save_as(pair[0], tmp_path, "hf_folder")
    hf_sd, info = te.load_text_encoder_state(folder, with_hash=True)
    assert info.layout == "hf" and info.weights_file.endswith("model.safetensors")
    assert (
        info.dims.describe() == "width 32, 2 layers, vocab 49408, 77 positions, mlp 64, 4 heads, quick_gelu"
    )
    assert info.sha256 == io.file_sha256(folder / "model.safetensors") and info.dtype == "float32"
    _, pt_info = te.load_text_encoder_state(_save_as(pair[0], tmp_path, "advunlearn_pt"))
    assert (pt_info.layout, pt_info.dims.num_heads, pt_info.sha256) == ("diffusers_text_encoder", None, None)


def test_pipeline_folder_uses_text_encoder_and_repo_root_asks_to_pick(pair, tmp_path):
    pair[0].save_pretrained(tmp_path / "pipe" / "text_encoder")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    assert te.load_text_encoder_state(tmp_path / "pipe")[1].weights_file.endswith(
        "text_encoder/model.safetensors"
    )
    for name in ("nudity_unlearned", "church_unlearned"):
        pair[0].save_pretrained(tmp_path / "repo" / name)
    with pytest.raises(ValueError, match=r"repo'.*pick one: \['church_unlearned', 'nudity_unlearned'\]"):
        te.load_text_encoder_state(tmp_path / "repo")


def test_old_style_target_and_in_memory_comfy_state_dict(pair, make_config, encode, prompt_ids):
    source, _ = pair
    torch.manual_seed(3)
    old = _OldStyle(make_config()).eval()
    swapped = te.swap_text_encoder(old, from_hf(source.state_dict(), "comfyui_sd1"))
    with torch.no_grad():
        out = swapped(prompt_ids).last_hidden_state
    torch.testing.assert_close(out, encode(source), atol=0, rtol=0)
    assert te.target_dims(from_hf(source.state_dict(), "ldm_sd1")) == te.target_dims(source).__class__(
        32, 2, 49408, 77, 64
    )


def test_projection_target_keeps_its_own_head(pair, make_config, encode):
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(4)
    with_proj = CLIPTextModelWithProjection(make_config(projection_dim=16)).eval()
    swapped = te.swap_text_encoder(with_proj, pair[0].state_dict())
    assert torch.equal(swapped.text_projection.weight, with_proj.text_projection.weight)
    assert swapped.text_projection.weight.data_ptr() != with_proj.text_projection.weight.data_ptr()
    torch.testing.assert_close(encode(swapped), encode(pair[0]), atol=0, rtol=0)


def test_class_not_buildable_from_its_config_falls_back_to_a_copy(pair, make_config, encode):
    from transformers import CLIPTextModel

    class Tagged(CLIPTextModel):
        def __init__(self, config, tag):
            super().__init__(config)
            self.tag = tag

    torch.manual_seed(6)
    tagged = Tagged(make_config(), tag="base").eval()
    swapped = te.swap_text_encoder(tagged, pair[0].state_dict())
    assert swapped.tag == "base" and not any(p.is_meta for p in swapped.parameters())
    torch.testing.assert_close(encode(swapped), encode(pair[0]), atol=0, rtol=0)
    assert not torch.equal(encode(tagged), encode(pair[0]))


def test_half_source_into_float_target_keeps_target_dtype_device_and_modes(pair, tmp_path):
    source, target = pair
    target.train()
    target.embeddings.token_embedding.weight.requires_grad_(False)
    path = io.save_safetensors(
        tmp_path / "h.safetensors", {k: v.half() for k, v in source.state_dict().items()}
    )
    swapped = te.swap_text_encoder(target, path)
    assert swapped.training and not swapped.embeddings.token_embedding.weight.requires_grad
    assert swapped.encoder.layers[0].mlp.fc1.weight.requires_grad
    assert all(p.dtype == torch.float32 for p in swapped.parameters())
    assert torch.equal(swapped.final_layer_norm.weight, source.final_layer_norm.weight.half().float())
    assert torch.equal(swapped.embeddings.position_ids, target.embeddings.position_ids)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 48}, "hidden size: source 48 vs target 32"),
        ({"num_hidden_layers": 3}, "num layers: source 3 vs target 2"),
        ({"vocab_size": 1000}, "vocab size: source 1000 vs target 49408"),
        ({"max_position_embeddings": 64}, "max positions: source 64 vs target 77"),
        ({"num_attention_heads": 2}, "num heads: source 2 vs target 4"),
    ],
)
def test_mismatched_encoder_is_refused_naming_file_and_both_dims(
    make_encoder, pair, tmp_path, overrides, message
):
    wrong = make_encoder(seed=5, **overrides)
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(
        ValueError, match=rf"'.*wrong'.*does not fit the target model.*{message}.*Target: width 32"
    ):
        te.swap_text_encoder(pair[1], tmp_path / "wrong")


def test_config_contradicting_weights_is_refused(pair, tmp_path):
    folder = _save_as(pair[0], tmp_path, "hf_folder")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 12}))
    with pytest.raises(
        ValueError, match="config does not match its weights.*num layers: weights 2 vs config 12"
    ):
        te.load_text_encoder_state(folder)


def _bad_files(model, tmp_path):
    sd = model.state_dict()
    good = io.save_safetensors(tmp_path / "good.safetensors", sd)
    (tmp_path / "truncated.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save(sd, tmp_path / "full.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    nan = {**sd, "encoder.layers.1.mlp.fc1.weight": sd["encoder.layers.1.mlp.fc1.weight"].clone()}
    nan["encoder.layers.1.mlp.fc1.weight"][3, 3] = float("nan")
    io.save_safetensors(tmp_path / "nan.safetensors", nan)
    missing = {k: v for k, v in sd.items() if not k.startswith("encoder.layers.1.self_attn")}
    io.save_safetensors(tmp_path / "missing.safetensors", missing)
    io.save_safetensors(tmp_path / "unet.safetensors", {"model.diffusion_model.out.2.weight": torch.zeros(4)})


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("truncated.safetensors", ValueError, "truncated.safetensors.*corrupt or truncated"),
        ("truncated.pt", ValueError, "truncated.pt.*corrupt or truncated"),
        ("empty.safetensors", ValueError, "empty.safetensors.*is empty"),
        ("nan.safetensors", ValueError, "nan.safetensors.*'encoder.layers.1.mlp.fc1.weight' contains NaN"),
        (
            "missing.safetensors",
            ValueError,
            r"missing.safetensors.*8 missing key\(s\).*encoder.layers.1.self_attn",
        ),
        ("unet.safetensors", ValueError, "unet.safetensors.*no CLIP text encoder found"),
        ("absent.safetensors", FileNotFoundError, "absent.safetensors.*does not exist"),
    ],
)
def test_bad_inputs_are_clear_errors(pair, tmp_path, name, error, message):
    _bad_files(pair[0], tmp_path)
    with pytest.raises(error, match=message):
        te.swap_text_encoder(pair[1], tmp_path / name)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_executing_pickle_is_refused_without_running(pair, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil_unlearned"
    pair[0].save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"text_model.embeddings.token_embedding.weight": _RunsCode(marker)}, f)
    with pytest.raises(ValueError, match="pytorch_model.bin.*refused"):
        te.swap_text_encoder(pair[1], folder)
    assert not marker.exists()


def test_convert_writes_hf_keys_with_provenance_and_never_overwrites(pair, tmp_path, encode):
    src = _save_as(pair[0], tmp_path, "advunlearn_pt")
    out, info = te.convert_text_encoder(src, tmp_path / "out" / "enc.safetensors", dtype="fp16")
    tensors, meta = io.load_state_dict(out)
    assert tensors.keys() == pair[0].state_dict().keys() and all(
        v.dtype == torch.float16 for v in tensors.values()
    )
    assert meta["unlearnkit.source_sha256"] == io.file_sha256(src) == info.sha256
    assert meta["unlearnkit.source_layout"] == "diffusers_text_encoder" and meta["format"] == "pt"
    assert json.loads(meta["unlearnkit.config"])["hidden_size"] == 32 and meta["unlearnkit.dtype"] == "fp16"
    with pytest.raises(FileExistsError, match="enc.safetensors.*already exists"):
        te.convert_text_encoder(src, out)
    folder = _save_as(pair[0], tmp_path, "hf_folder")
    te.convert_text_encoder(folder, out, overwrite=True, layout="comfyui_sd1")
    hf_sd, again = te.load_text_encoder_state(out)
    assert again.layout == "comfyui_sd1" and again.dims.num_heads == 4  # heads come back from metadata
    torch.testing.assert_close(encode(te.build_text_encoder(out)), encode(pair[0]), atol=0, rtol=0)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        te.convert_text_encoder(src, tmp_path / "enc.pt")
