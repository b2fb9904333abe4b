import torch

from unlearnkit.tinyworld.models import (
    JudgeNet,
    build_clip,
    build_unet,
    build_vae,
    encode_prompts,
    text_encoder_from_clip,
    token_embedding_init,
)


def test_classes_are_the_ones_sd_uses():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel

    clip = build_clip()
    assert isinstance(clip, CLIPModel)
    assert isinstance(text_encoder_from_clip(clip), CLIPTextModel)
    assert isinstance(build_vae(), AutoencoderKL)
    assert isinstance(build_unet(), UNet2DConditionModel)


def test_text_encoder_is_the_clip_text_tower():
    torch.manual_seed(0)
    clip = build_clip()
    enc = text_encoder_from_clip(clip)
    ids = torch.tensor([[49406, 320, 1125, 49407, 49407]])
    with torch.no_grad():
        assert torch.allclose(
            enc(input_ids=ids).last_hidden_state, clip.text_model(input_ids=ids).last_hidden_state
        )
    assert encode_prompts(enc, ["digit 7", ""]).shape == (2, 77, 64)


def test_token_embedding_init_is_seeded():
    assert torch.equal(build_clip().text_model.embeddings.token_embedding.weight, token_embedding_init(49408))


def test_unet_shapes():
    unet = build_unet()
    out = unet(
        torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), encoder_hidden_states=torch.randn(2, 77, 64)
    ).sample
    assert out.shape == (2, 4, 8, 8)
    assert JudgeNet(10)(torch.zeros(3, 3, 16, 16)).shape == (3, 10)


def test_compact_clip_storage_roundtrip(tmp_path):
    from unlearnkit.tinyworld import store

    clip = build_clip()
    with torch.no_grad():
        clip.text_model.embeddings.token_embedding.weight[[5, 320]] += 1.0
    path = store.save_clip(clip, tmp_path / "clip.safetensors")
    assert path.stat().st_size < 1_000_000  # the 49,408-row embedding is not stored
    back = store.load_clip(tmp_path)
    a, b = clip.state_dict(), back.state_dict()
    assert all(torch.equal(a[k].half().float(), b[k]) for k in a if a[k].is_floating_point())
    store.save_clip(
        back, tmp_path / "again" / "clip.safetensors"
    )  # fp16-rounded init rows count as untouched
    assert (tmp_path / "again" / "clip.safetensors").stat().st_size == path.stat().st_size
