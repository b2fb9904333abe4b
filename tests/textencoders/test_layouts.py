"""unlearnkit/erase/textencoder_layouts.py: detect every key layout, convert to HF keys and back."""
import pytest
import torch

from unlearnkit.textencoders import layouts as lay


def test_every_output_layout_round_trips_to_identical_hf_tensors(make_encoder):
    hf = make_encoder().state_dict()
    for name, prefix in lay.OUTPUT_LAYOUTS.items():
        keyed = lay.from_hf(hf, name)
        assert all(k.startswith(prefix) for k in keyed)
        back, layout, dropped = lay.to_hf(keyed)
        assert (layout.name, layout.prefix, layout.family, dropped) == (name, prefix, "hf", ())
        assert back.keys() == hf.keys() and all(back[k] is hf[k] for k in hf)


def test_full_ldm_checkpoint_yields_only_the_encoder_without_position_ids(make_encoder):
    hf = make_encoder().state_dict()
    ckpt = {f"cond_stage_model.transformer.text_model.{k}": v for k, v in hf.items()}
    ckpt["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77.0)[None]
    ckpt["cond_stage_model.transformer.text_projection.weight"] = torch.eye(32)
    ckpt["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    ckpt["first_stage_model.decoder.conv_in.weight"] = torch.zeros(4)
    back, layout, dropped = lay.to_hf(ckpt)
    assert layout.name == "ldm_sd1" and back.keys() == hf.keys() and dropped == ()


def test_legacy_ldm_keys_without_text_model_are_detected(make_encoder):
    hf = make_encoder().state_dict()
    back, layout, _ = lay.to_hf({f"cond_stage_model.transformer.{k}": v for k, v in hf.items()})
    assert layout.name == "ldm_sd1_legacy" and back.keys() == hf.keys()


def test_two_encoders_are_ambiguous_until_a_prefix_is_given(make_encoder):
    hf = make_encoder().state_dict()
    both = {
        **lay.from_hf(hf, "comfyui_sd1"),
        **{f"clip_g.transformer.text_model.{k}": v for k, v in hf.items()},
    }
    with pytest.raises(ValueError, match=r"2 text encoders.*'clip_g\.transformer\.text_model\.'.*prefix="):
        lay.to_hf(both, what="sdxl.safetensors")
    back, layout, _ = lay.to_hf(both, prefix="clip_g.transformer.text_model.")
    assert layout.name == "prefixed" and back.keys() == hf.keys()


def test_no_encoder_is_a_clear_error_naming_the_source():
    with pytest.raises(ValueError, match=r"unet\.safetensors: no CLIP text encoder found.*first keys"):
        lay.detect_layout(["model.diffusion_model.out.0.weight"], what="unet.safetensors")
    with pytest.raises(ValueError, match="layout: unknown 'webui'"):
        lay.from_hf({}, "webui")


def test_sd2_open_clip_keys_convert_to_an_equivalent_hf_encoder(make_config, prompt_ids):
    from open_clip.transformer import TextTransformer
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tower = TextTransformer(context_length=77, vocab_size=49408, width=32, heads=4, layers=2, output_dim=16,
                            act_layer=torch.nn.GELU, output_tokens=True).eval()
    with torch.no_grad():  # open_clip initialises biases/norms to constants; make the test see them
        for p in tower.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ckpt = {f"cond_stage_model.model.{k}": v for k, v in tower.state_dict().items()}
    hf, layout, dropped = lay.to_hf(ckpt)
    assert layout.name == "ldm_sd2_open_clip" and layout.family == "open_clip"
    assert "cond_stage_model.model.text_projection" in dropped
    model = CLIPTextModel(make_config(hidden_act="gelu", intermediate_size=128)).eval()
    model.load_state_dict(hf, strict=True)
    with torch.no_grad():
        _, tokens = tower(prompt_ids)  # (3, 77, 32) after ln_final
        hidden = model(input_ids=prompt_ids).last_hidden_state
    torch.testing.assert_close(hidden, tokens, atol=1e-5, rtol=1e-5)
