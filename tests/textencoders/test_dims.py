"""unlearnkit/erase/textencoder_config.py: dims from weights and configs, completeness, clear mismatches."""
import pytest
import torch

from unlearnkit.textencoders import dims as tc


def test_inferred_dims_and_expected_shapes_match_a_real_clip_text_model(make_encoder):
    model = make_encoder(num_hidden_layers=3, intermediate_size=48, max_position_embeddings=40)
    sd = model.state_dict()
    dims = tc.infer_dims(sd)
    assert dims == tc.TextEncoderDims(32, 3, 49408, 40, 48)
    assert tc.expected_shapes(dims) == {k: tuple(v.shape) for k, v in sd.items()}
    assert tc.merge_declared(
        dims, tc.TextEncoderDims.from_hf_config(model.config), "x"
    ) == tc.TextEncoderDims(32, 3, 49408, 40, 48, num_heads=4, hidden_act="quick_gelu")


def test_full_clip_config_dict_uses_its_text_config(make_config):
    text = make_config().to_dict()
    dims = tc.TextEncoderDims.from_hf_config({"model_type": "clip", "text_config": text, "vision_config": {}})
    assert (dims.hidden_size, dims.num_heads, dims.max_positions) == (32, 4, 77)
    assert tc.TextEncoderDims.from_dict({**dims.to_dict(), "future_field": 1}) == dims


def test_missing_and_misshapen_keys_are_named(make_encoder):
    sd = make_encoder().state_dict()
    dims = tc.infer_dims(sd)
    del sd["encoder.layers.1.self_attn.q_proj.weight"], sd["final_layer_norm.bias"]
    sd["encoder.layers.0.mlp.fc2.bias"] = torch.zeros(31)
    with pytest.raises(ValueError) as err:
        tc.check_complete(sd, dims, "enc.pt")
    text = str(err.value)
    assert "enc.pt" in text and "2 missing" in text and "encoder.layers.1.self_attn.q_proj.weight" in text
    assert "final_layer_norm.bias" in text and "encoder.layers.0.mlp.fc2.bias (31,) (expected (32,))" in text
    with pytest.raises(ValueError, match=r"enc.pt: text encoder is missing \['embeddings.position_embedding"):
        tc.infer_dims({"embeddings.token_embedding.weight": torch.zeros(3, 2)}, "enc.pt")


def test_mismatch_names_the_source_and_both_dims():
    sd1 = tc.TextEncoderDims(768, 12, 49408, 77, 3072, 12, "quick_gelu")
    sd2 = tc.TextEncoderDims(1024, 23, 49408, 77, 4096)
    with pytest.raises(ValueError) as err:
        tc.check_matches(sd2, sd1, "text encoder 'v2.safetensors'")
    text = str(err.value)
    assert "'v2.safetensors'" in text and "hidden size: source 1024 vs target 768" in text
    assert "num layers: source 23 vs target 12" in text and "num heads" not in text  # unknown: not compared
    tc.check_matches(tc.TextEncoderDims(768, 12, 49408, 77, 3072), sd1, "ok")
    with pytest.raises(ValueError, match="hidden act: source gelu vs target quick_gelu"):
        tc.check_matches(tc.TextEncoderDims(768, 12, 49408, 77, 3072, hidden_act="gelu"), sd1, "x")


def test_a_config_that_contradicts_the_weights_is_refused():
    weights = tc.TextEncoderDims(32, 2, 49408, 77, 64)
    with pytest.raises(
        ValueError, match="folder/: its config does not match its weights.*num layers: weights 2 vs config 12"
    ):
        tc.merge_declared(weights, tc.TextEncoderDims(32, 12, 49408, 77, 64, 4, "gelu"), "folder/")
